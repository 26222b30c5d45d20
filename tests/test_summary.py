"""Layer summary: torch's counter against torchvision's published MACs, shapes and depths."""

from __future__ import annotations

import json

import pytest

from resnet_cli.config import ModelConfig
from resnet_cli.errors import ConfigError
from resnet_cli.models import list_models
from resnet_cli.models.summary import summarize
from tests.conftest import run_cli

# torchvision.models documentation, "GFLOPS" column (which counts multiply-accumulates) at 224 px.
PUBLISHED_GMACS = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51}


@pytest.mark.parametrize(("arch", "gmacs"), PUBLISHED_GMACS.items())
def test_totals_match_published(arch, gmacs):
    s = summarize(ModelConfig(arch), image_size=224)
    assert abs(s.total_macs / 1e9 - gmacs) / gmacs < 0.01
    assert s.total_params == s.trainable_params
    assert s.size_mb == pytest.approx(s.total_params * 4 / 1e6, rel=0.01)


def test_rows_by_depth_and_shapes():
    stages = summarize(ModelConfig("resnet34"), image_size=224, depth=1)
    assert [r.name for r in stages.rows] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
    ]  # fmt: skip
    by_name = {r.name: r for r in stages.rows}
    assert by_name["layer4"].output_shape == (1, 512, 7, 7)
    assert by_name["fc"].output_shape == (1, 1000)
    # The stage rows add up to the totals.
    assert sum(r.params for r in stages.rows) == stages.total_params
    assert sum(r.macs for r in stages.rows) == stages.total_macs
    blocks = summarize(ModelConfig("resnet34"), image_size=224, depth=2)
    assert "layer3.5" in {r.name for r in blocks.rows}
    layers = summarize(ModelConfig("resnet34"), image_size=224, depth=3)
    assert "layer3.5.conv2" in {r.name for r in layers.rows}


def test_small_input_and_greyscale():
    s = summarize(ModelConfig("resnet18", num_classes=10, in_channels=1, small_input=True), image_size=8, depth=1)
    by_name = {r.name: r for r in s.rows}
    assert s.input_shape == (1, 1, 8, 8)
    assert by_name["conv1"].output_shape == (1, 64, 8, 8)
    assert by_name["layer4"].output_shape == (1, 512, 1, 1)
    assert by_name["conv1"].params == 64 * 9


@pytest.mark.parametrize(
    ("size", "small", "fragment"),
    [(0, False, "positive"), (16, False, r"small-input stem \(small_input"), (4, True, "at least 8")],
)
def test_too_small_images(size, small, fragment):
    with pytest.raises(ConfigError, match=fragment):
        summarize(ModelConfig("resnet34", small_input=small), image_size=size)


def test_vit_b16_matches_torchvisions_published_macs_and_params():
    s = summarize(ModelConfig("vit-b/16"), image_size=224, depth=1)
    assert abs(s.total_macs - 17.56e9) / 17.56e9 < 0.01  # torchvision's "GFLOPS" column, which counts MACs
    assert s.total_params == 86_567_656
    assert s.model.arch == "vit_b_16" and s.model.image_size == 224
    assert [r.name for r in s.rows] == ["conv_proj", "class_token", "encoder", "heads"]
    # The class token gets its own row, so the rows add up; the attention's matrix products are counted too.
    assert sum(r.params for r in s.rows) == s.total_params and sum(r.macs for r in s.rows) == s.total_macs
    blocks = {r.name: r for r in summarize(ModelConfig("vit-b/16"), image_size=224, depth=2).rows}
    block = blocks["encoder.layers.encoder_layer_0"]
    linear_macs = 197 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert block.depth == 2 and block.macs == linear_macs + 2 * 197 * 197 * 768
    assert block.output_shape == (1, 197, 768)
    assert summarize(ModelConfig("resnet34"), image_size=64).model.image_size is None


def test_vit_summary_is_built_for_the_image_size():
    s = summarize(ModelConfig("vit-ti/4", num_classes=10, in_channels=1), image_size=32, depth=1)
    by_name = {r.name: r for r in s.rows}
    assert by_name["conv_proj"].output_shape == (1, 192, 8, 8) and by_name["encoder"].output_shape == (1, 65, 192)
    assert s.model.image_size == 32
    with pytest.raises(ConfigError, match="28 px does not fit ViT-S/16"):
        summarize(ModelConfig("vit-s/16"), image_size=28)


def test_list_shows_every_architecture_with_params_and_macs():
    proc = run_cli("summary", "--list", "--image-size", "28", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["image_size"] == 28
    rows = {row["arch"]: row for row in document["architectures"]}
    assert list(rows) == list_models()
    # ResNet-34 with the small-input stem train picks at 28 px: a 3x3 first kernel, 7,680 fewer than the 7x7.
    assert rows["resnet34"]["params"] == 21_797_672 - 7_680 and rows["resnet34"]["small_input"]
    assert rows["vit_s_4"]["params"] == 21_717_736 and rows["vit_s_4"]["macs"] > 0 and rows["vit_s_4"]["applicable"]
    assert rows["vit_s_16"]["applicable"] is False and rows["vit_s_16"]["params"] is None
    assert "not a multiple of the patch size 16" in rows["vit_s_16"]["note"]
    # One architecture alone gives the same figures as its --list row: the same stem by default.
    for arch in ("resnet34", "vit_s_4"):
        alone = json.loads(run_cli("summary", "--arch", arch, "--image-size", "28", "--json").stdout)
        assert (alone["total_params"], alone["total_macs"]) == (rows[arch]["params"], rows[arch]["macs"])
    table = run_cli("summary", "--list", "--image-size", "224")
    assert table.returncode == 0, table.stderr
    assert "ViT-S/16" in table.stdout and "22.1 M" in table.stdout and "21.8 M" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--arch", "vit-s/16", "--small-input"), "small-input stem is a ResNet option"),
        (("--arch", "vit-s/16", "--image-size", "30"), "use 16 or 32 px"),
        (("--arch", "vit-s/7"), "unknown architecture 'vit-s/7'"),
        (("somewhere", "--list"), "--list describes every architecture"),
    ],
)
def test_bad_vit_summaries_exit_2(args, fragment):
    proc = run_cli("summary", *args)
    assert proc.returncode == 2 and fragment in proc.stderr and proc.stdout == ""


def test_a_run_and_an_arch_together_are_refused(trained_run):
    proc = run_cli("summary", trained_run, "--arch", "50")
    assert proc.returncode == 2 and "has its own architecture" in proc.stderr and proc.stdout == ""


def test_summary_of_a_run_names_its_weights_unless_quiet(trained_run):
    proc = run_cli("summary", trained_run, "--depth", "1")
    assert proc.returncode == 0, proc.stderr
    assert "weights: best.pt (epoch 3)" in proc.stderr and "resnet18" in proc.stdout
    quiet = run_cli("summary", trained_run, "--depth", "1", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == proc.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"\x89PNG\r\n\x1a\n" + bytes(64), "is a PNG image"), (b"epoch,loss\n1,0.5\n", "is a CSV text file")],
)
def test_summary_of_a_bad_file_exits_2(tmp_path, content, fragment):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    proc = run_cli("summary", path)
    assert proc.returncode == 2 and fragment in proc.stderr and proc.stdout == ""


def test_help_shows_one_example_per_line():
    proc = run_cli("summary", "--help")
    assert proc.returncode == 0 and " | " not in proc.stdout and "--quiet" in proc.stdout
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "resnet summary --arch 50" in lines and "resnet summary runs/r34 --json" in lines
    assert "resnet summary --list --image-size 32" in lines
    flat = " ".join(proc.stdout.replace("│", " ").split())  # the help column's wrapping depends on the options
    assert "or a ViT such as vit-s/16 (see --list)" in flat
