"""The timing routine, the ``--precision auto`` probe and its cache, and ``resnet bench``.

The probe's decisions are tested with an injected clock that makes one candidate clearly faster (the training
steps themselves really run); nothing asserts on real timings except that they are positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch import nn

from resnet_cli.engine import speed
from resnet_cli.engine.device import precision_candidates
from resnet_cli.errors import ConfigError
from resnet_cli.models import build_model

CPU = torch.device("cpu")
SHAPE = (4, 3, 16, 16)
needs_bf16 = pytest.mark.skipif("bf16" not in precision_candidates(CPU), reason="bf16 autocast does not run here")


class TinyNet(nn.Module):
    """Conv, BatchNorm, pooling, linear: what autocast and channels_last act on, in milliseconds per step."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class Builds:
    """A ``build`` callable that counts its calls."""

    def __init__(self, in_channels: int = 3) -> None:
        self.calls, self.in_channels = 0, in_channels

    def __call__(self) -> nn.Module:
        self.calls += 1
        return TinyNet(self.in_channels)


class Clock:
    """A fake ``timer``: each timed window of candidate ``(precision, channels_last)`` lasts ``seconds[...]``.

    ``measure`` reads the timer twice per window and the probe times the candidates in turn, round by round, in
    the order it reports them (fp32 before bf16, the device's usual layout first).
    """

    def __init__(self, seconds: dict[tuple[str, bool], float], order: list[tuple[str, bool]]) -> None:
        self.seconds, self.order, self.calls, self.now = seconds, order, 0, 100.0

    def __call__(self) -> float:
        window, end = divmod(self.calls, 2)
        self.calls += 1
        if end:
            self.now += self.seconds[self.order[window % len(self.order)]]
        return self.now


AUTO_ORDER = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def probe(tmp_path: Path, clock: Clock, build: Builds | None = None, **kwargs) -> speed.ProbeResult:
    options = {"arch": "tiny", "cache_dir": tmp_path / "cache", "timer": clock, **kwargs}
    precision = options.pop("precision", "auto")
    layout = options.pop("channels_last", None)
    shape = options.pop("shape", SHAPE)
    return speed.choose_placement(build or Builds(), shape, 10, CPU, precision, layout, **options)


@needs_bf16
def test_probe_picks_bf16_when_it_is_clearly_faster_and_reports_every_candidate(tmp_path):
    clock = Clock({("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}, AUTO_ORDER)
    result = probe(tmp_path, clock)
    assert (result.precision, result.channels_last, result.source, result.cached) == ("bf16", False, "probe", False)
    assert [(c.precision, c.channels_last) for c in result.candidates] == AUTO_ORDER
    assert [c.images_per_s for c in result.candidates] == pytest.approx([2.0, 2.0, 4.0, 4.0])  # 4 images per 1 s
    assert result.gain == pytest.approx(2.0)
    assert clock.calls == 2 * len(AUTO_ORDER) * speed.PROBE_ROUNDS
    document = json.loads(json.dumps(result.to_dict()))  # config.json can hold it
    assert document["gain_over_fp32"] == pytest.approx(2.0) and len(document["candidates"]) == 4
    assert "bf16" in result.describe() and "2.00x" in result.describe()


@needs_bf16
def test_probe_picks_fp32_when_bf16_is_slower_or_only_marginally_faster(tmp_path):
    slower = Clock({("fp32", False): 1.0, ("fp32", True): 1.0, ("bf16", False): 1.5, ("bf16", True): 1.5}, AUTO_ORDER)
    assert probe(tmp_path / "a", slower).precision == "fp32"
    # 2% faster is within the margin a change of arithmetic must clear
    marginal = Clock(
        {("fp32", False): 1.0, ("fp32", True): 1.0, ("bf16", False): 0.98, ("bf16", True): 5.0}, AUTO_ORDER
    )
    result = probe(tmp_path / "b", marginal)
    assert (result.precision, result.channels_last) == ("fp32", False)


@needs_bf16
def test_probe_picks_channels_last_when_it_is_faster_and_a_candidate_s_best_round_counts(tmp_path):
    clock = Clock({("fp32", False): 2.0, ("fp32", True): 1.0, ("bf16", False): 3.0, ("bf16", True): 3.0}, AUTO_ORDER)
    result = probe(tmp_path, clock)
    assert (result.precision, result.channels_last) == ("fp32", True)


def test_explicit_precision_and_layout_are_never_timed(tmp_path):
    clock, build = Clock({}, []), Builds()
    result = probe(tmp_path, clock, build, precision="fp32", channels_last=False)
    assert (result.precision, result.channels_last, result.source) == ("fp32", False, "explicit")
    assert clock.calls == 0 and build.calls == 0 and result.candidates == ()
    assert not (tmp_path / "cache").exists()
    assert result.to_dict()["gain_over_fp32"] is None


@needs_bf16
def test_an_explicit_precision_is_kept_and_only_the_unset_layout_is_timed(tmp_path):
    order = [("bf16", False), ("bf16", True)]
    clock = Clock({("bf16", False): 2.0, ("bf16", True): 1.0}, order)
    result = probe(tmp_path, clock, precision="bf16")
    assert [(c.precision, c.channels_last) for c in result.candidates] == order
    assert (result.precision, result.channels_last) == ("bf16", True)


def test_explicit_fp16_on_the_cpu_and_unknown_precisions_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        probe(tmp_path, Clock({}, []), precision="fp16")
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        probe(tmp_path, Clock({}, []), precision="fp8", channels_last=False)


@needs_bf16
def test_the_second_probe_reads_the_cache_without_timing_or_building(tmp_path):
    seconds = {("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}
    first = probe(tmp_path, Clock(seconds, AUTO_ORDER))
    clock, build = Clock(seconds, AUTO_ORDER), Builds()
    second = probe(tmp_path, clock, build)
    assert clock.calls == 0 and build.calls == 0
    assert second.cached and second.source == "cache"
    assert (second.precision, second.channels_last) == (first.precision, first.channels_last)
    assert second.candidates == first.candidates and second.gain == pytest.approx(2.0)
    document = json.loads((tmp_path / "cache" / speed.CACHE_NAME).read_text())
    assert document["format"] == speed.CACHE_FORMAT and len(document["entries"]) == 1


@needs_bf16
def test_the_cache_is_keyed_by_network_batch_shape_and_device(tmp_path):
    seconds = {("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}
    probe(tmp_path, Clock(seconds, AUTO_ORDER))
    threads = torch.get_num_threads()
    others = [{"arch": "other"}, {"shape": (2, 3, 16, 16)}, {"shape": (4, 1, 16, 16)}, {"shape": (4, 3, 24, 24)}]
    for change in others:
        clock = Clock(seconds, AUTO_ORDER)
        build = Builds(in_channels=change["shape"][1] if "shape" in change else 3)
        result = probe(tmp_path, clock, build, **change)
        assert result.source == "probe" and result.precision == "bf16", change
        assert clock.calls > 0
    # Another thread count is another CPU device as far as speed goes.
    torch.set_num_threads(1 if threads != 1 else 2)
    try:
        clock = Clock(seconds, AUTO_ORDER)
        assert probe(tmp_path, clock).source == "probe"
    finally:
        torch.set_num_threads(threads)
    entries = json.loads((tmp_path / "cache" / speed.CACHE_NAME).read_text())["entries"]
    assert len(entries) == 1 + len(others) + 1


@needs_bf16
def test_a_cached_answer_from_another_torch_version_is_ignored_and_dropped(tmp_path, monkeypatch):
    seconds = {("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}
    probe(tmp_path, Clock(seconds, AUTO_ORDER))
    monkeypatch.setattr(speed, "torch_version", lambda: "99.0.0")
    clock = Clock({k: 1 / v for k, v in seconds.items()}, AUTO_ORDER)  # the upgrade made fp32 the faster
    result = probe(tmp_path, clock)
    assert result.source == "probe" and clock.calls > 0 and result.precision == "fp32"
    entries = json.loads((tmp_path / "cache" / speed.CACHE_NAME).read_text())["entries"]
    assert [entry["key"]["torch"] for entry in entries.values()] == ["99.0.0"]


@needs_bf16
@pytest.mark.parametrize(
    "damage",
    [
        b"\x00\xff not json",
        b'{"format": "resnet-cli precision probe", "entries": [1, 2]}',
        b"[]",
        "wrong choice",  # valid JSON whose entry's choice is not one of its candidates
        "truncated",
    ],
)
def test_a_damaged_cache_is_ignored_and_replaced(tmp_path, damage):
    seconds = {("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}
    probe(tmp_path, Clock(seconds, AUTO_ORDER))
    cache = tmp_path / "cache" / speed.CACHE_NAME
    if damage == "wrong choice":
        document = json.loads(cache.read_text())
        for entry in document["entries"].values():
            entry["precision"] = "fp64"
        cache.write_text(json.dumps(document))
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:40])
    else:
        cache.write_bytes(damage)
    clock = Clock(seconds, AUTO_ORDER)
    result = probe(tmp_path, clock)
    assert result.source == "probe" and clock.calls > 0 and result.precision == "bf16"
    assert probe(tmp_path, Clock(seconds, AUTO_ORDER)).cached  # rewritten whole


@needs_bf16
def test_a_cache_that_cannot_be_written_is_no_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    seconds = {("fp32", False): 2.0, ("fp32", True): 2.0, ("bf16", False): 1.0, ("bf16", True): 1.0}
    result = probe(tmp_path, Clock(seconds, AUTO_ORDER), cache_dir=blocker / "cache")
    assert result.precision == "bf16"
    assert blocker.read_text() == "not a folder"


def test_the_probe_leaves_the_run_s_random_state_as_it_found_it(tmp_path):
    def build() -> nn.Module:
        return build_model("resnet18", 10, 3, small_input=True)

    torch.manual_seed(7)
    expected = build()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    result = speed.choose_placement(build, (2, 3, 32, 32), 10, CPU, "auto", None, arch="resnet18/small",
                                    use_cache=False, rounds=1)  # fmt: skip
    assert result.source == "probe"
    assert torch.equal(torch.get_rng_state(), before)
    after = build()  # the run's model, built after the probe: as if there had been none
    for (name, a), b in zip(expected.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_default_cache_folder_follows_the_environment(tmp_path):
    assert speed.default_cache_dir({"RESNET_CACHE_DIR": str(tmp_path / "r"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "r"
    assert speed.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "resnet-cli"
    assert speed.default_cache_dir({}) == Path.home() / ".cache" / "resnet-cli"


def test_measure_times_forward_and_training_steps_with_the_timer_read_twice():
    model = TinyNet()
    weights = model.conv.weight.detach().clone()
    reads = []

    def timer() -> float:
        reads.append(None)
        return float(len(reads))  # each window lasts 1 s

    forward = speed.measure(model, SHAPE, 10, CPU, "fp32", False, train=False, steps=2, warmup=1, timer=timer)
    assert len(reads) == 2 and forward.images_per_s == pytest.approx(4 * 2 / 1.0)
    assert forward.seconds_per_step == pytest.approx(0.5) and not forward.train
    assert torch.equal(model.conv.weight, weights)  # forward only
    trained = speed.measure(model, SHAPE, 10, CPU, "fp32", True, train=True, steps=1, warmup=0)
    assert trained.train and trained.channels_last and trained.images_per_s > 0
    assert not torch.equal(model.conv.weight, weights)  # an optimizer step ran
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert trained.memory_source in ("cpu peak rss growth", "unavailable")
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        speed.measure(model, SHAPE, 10, CPU, "fp32", False, train=False, steps=0, warmup=0)


def test_bench_json_has_forward_and_training_speed_per_precision():
    result = run_cli("bench", "--arch", "18", "--image-size", "32", "--batch-size", "4", "--steps", "2", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    rows = document["rows"]
    assert {row["precision"] for row in rows} == set(precision_candidates(CPU))
    for row in rows:
        assert row["arch"] == "resnet18"
        for mode in ("fwd", "fwd+bwd"):
            assert row[mode]["images_per_s"] > 0 and row[mode]["batch_size"] == 4 and row[mode]["steps"] == 2
        assert row["fwd"]["train"] is False and row["fwd+bwd"]["train"] is True
    assert document["image_size"] == 32 and document["batch_size"] == 4


def test_bench_table_names_each_arch_and_precision():
    result = run_cli("bench", "-a", "18", "-a", "vit-ti/4", "--image-size", "16", "--batch-size", "2",
                     "--steps", "1", "--warmup", "0", "--precision", "fp32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "resnet18" in result.stdout and "vit_ti_4" in result.stdout and "fwd+bwd img/s" in result.stdout
    assert "bf16" not in result.stdout.split("\n", 1)[1]  # only the precision asked for


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--arch", "35"], "35"),
        (["--precision", "fp16"], "fp16 needs a CUDA GPU"),
        (["--precision", "fp8"], "unknown precision"),
        (["--image-size", "4"], "image size 4 px"),
        (["--arch", "vit-ti/16", "--image-size", "40"], "multiple of its patch size 16"),
        (["--in-channels", "2"], "--in-channels must be 1"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_bench_bad_options_exit_2_in_one_line(args, fragment):
    result = run_cli("bench", "--image-size", "32", "--steps", "1", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:"), result.stderr  # one line only
    assert fragment in result.stderr


def test_a_run_folder_that_will_be_refused_is_refused_before_any_probe(small_split, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    base = ["train", "--data", small_split, "--arch", "18", "--batch-size", "16", "--workers", "0", "--epochs", "1",
            "--max-steps", "1", "--out", out]  # fmt: skip
    assert run_cli(*base, "--precision", "fp32", "--no-channels-last").returncode == 0
    again = run_cli(*base, env={"RESNET_CACHE_DIR": str(cache)})  # auto precision and layout: a probe would run
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert not cache.exists()  # nothing was timed, nothing cached
