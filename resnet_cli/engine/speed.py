"""How fast a network runs here: one timing routine, the ``--precision auto`` probe built on it, and ``resnet bench``.

:func:`measure` times forward passes (eval mode, inference mode) or training steps (forward, loss, backward, an
SGD step) of a model under the same autocast wrapper and memory format training uses. The probe and
:func:`bench` both call it, so what ``resnet bench`` shows is what ``auto`` decides from.

:func:`choose_placement` is ``--precision auto`` (and ``--channels-last`` left unset). It times training steps of
a throw-away copy of the run's network, at the run's batch shape, in each candidate: fp32 and the autocast
precisions the device runs (:func:`resnet_cli.engine.device.precision_candidates`), crossed with both memory
formats where the layout was not given. The fastest wins, except that a reduced precision must beat fp32 by
:data:`MIN_GAIN` (it changes the arithmetic, so a near-tie goes to fp32). Explicit choices are never timed.
Budget: :data:`PROBE_WARMUP` untimed step per candidate, then :data:`PROBE_ROUNDS` rounds of
:data:`PROBE_STEPS` timed step, the candidates taking turns (each keeps its best round), at a batch of at most
:data:`PROBE_MAX_BATCH_CPU` on the CPU: about 3 s for ResNet-18 at 32 px on 2 idle CPU cores (4 candidates,
12 steps), 4 s for ViT-Ti/4.

The answer is cached in ``precision-probe.json`` in the user's cache folder (:func:`default_cache_dir`), keyed by
machine, device, network, input shape, candidate set and torch version (:func:`cache_key`): a study of 30 runs
probes once, a torch upgrade probes again. A damaged or unwritable cache is ignored, never an error; writes are
atomic, so concurrent runs cannot corrupt it (the last writer's entries win).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.engine.device import (
    Placement,
    precision_candidates,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from resnet_cli.engine.inference import AutocastForward, to_device
from resnet_cli.errors import ConfigError, ResnetError
from resnet_cli.fs import atomic_write_text
from resnet_cli.models.registry import build_model, canonical_arch, check_image_size, default_small_input, family_of

PROBE_WARMUP = 1  # untimed steps per candidate: oneDNN primitives, cuDNN autotuning, the allocator
PROBE_ROUNDS = 2  # candidates are timed in turn, round by round; each keeps its best round
PROBE_STEPS = 1  # timed steps per candidate per round
PROBE_MAX_BATCH_CPU = 32  # per-image speed on the CPU has levelled off by then
MIN_GAIN = 1.03  # a reduced precision must be this much faster than fp32 to be chosen
CACHE_NAME = "precision-probe.json"
CACHE_FORMAT = "resnet-cli precision probe"
CACHE_ENTRIES = 256  # newest kept
SGD_LR = 1e-4  # the timed training step's optimizer: cheap, and keeps the throw-away weights finite


@dataclass(frozen=True)
class Measurement:
    """Speed of one (precision, memory format, mode) of a model on a device."""

    images_per_s: float
    seconds_per_step: float
    #: CUDA: ``torch.cuda.max_memory_allocated`` over the measurement (weights included). CPU: how much the
    #: process's peak resident size grew during it (0: it fit in memory the process had already used).
    peak_memory_bytes: int | None
    memory_source: str  # "cuda max allocated", "cpu peak rss growth" or "unavailable"
    precision: str
    channels_last: bool
    train: bool
    batch_size: int
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    precision: str,
    channels_last: bool,
    *,
    train: bool,
    steps: int,
    warmup: int,
    timer: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Time ``steps`` forward passes (``train=False``) or training steps (``train=True``) after ``warmup`` untimed ones.

    The model is moved to ``device`` and ``channels_last`` in place and runs under :class:`AutocastForward`, as
    in training; a training step is forward, cross-entropy on random labels, backward (through a GradScaler in
    fp16) and an SGD step, so the model's weights change. The batch is seeded noise; the global RNG is not
    used for it. CUDA is synchronised before each reading of ``timer``, which is read exactly twice: before
    and after the timed steps.

    Args:
        input_shape: the batch's shape, ``(batch, channels, height, width)``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved; see :func:`resolve_precision`).

    Raises:
        ConfigError: ``steps`` below 1 or ``warmup`` below 0.
    """
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be at least 1 (got {steps}) and --warmup at least 0 (got {warmup})")
    placement = Placement(device, (), precision, channels_last)
    model.to(device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    generator = torch.Generator().manual_seed(0)
    x = to_device(torch.randn(input_shape, generator=generator), placement)
    y = torch.randint(num_classes, (input_shape[0],), generator=generator).to(device)
    net = AutocastForward(model, placement).train(train)
    step: Callable[[], object] = _training_step(net, model, x, y, placement) if train else lambda: net(x)

    cuda = device.type == "cuda"
    with torch.inference_mode(not train), _peak_memory(device) as memory:
        for _ in range(warmup):
            step()
        _sync(device)
        start = timer()
        for _ in range(steps):
            step()
        _sync(device)
        elapsed = max(timer() - start, 1e-9)
    if cuda:
        torch.cuda.empty_cache()
    return Measurement(
        images_per_s=input_shape[0] * steps / elapsed,
        seconds_per_step=elapsed / steps,
        peak_memory_bytes=memory.get("bytes"),
        memory_source=memory.get("source", "unavailable"),
        precision=precision,
        channels_last=channels_last,
        train=train,
        batch_size=input_shape[0],
        steps=steps,
    )


def _training_step(
    net: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, placement: Placement
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    scaler = torch.amp.GradScaler(placement.device.type, enabled=placement.uses_scaler)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        loss = criterion(net(x).float(), y)  # as the training loop computes it
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS reports bytes, Linux KiB


@contextlib.contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict with ``bytes`` and ``source`` when the block ends."""
    found: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield found
        found.update(bytes=int(torch.cuda.max_memory_allocated(device)), source="cuda max allocated")
        return
    before = _max_rss_bytes()
    yield found
    after = _max_rss_bytes()
    if before is not None and after is not None:
        found.update(bytes=max(0, after - before), source="cpu peak rss growth")


# -- the probe --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSpeed:
    """One candidate's training speed in the probe; ``images_per_s`` is None when it failed (``note`` says why)."""

    precision: str
    channels_last: bool
    images_per_s: float | None
    note: str = ""


@dataclass(frozen=True)
class ProbeResult:
    """What ``auto`` chose, and from what.

    ``source`` is ``"probe"`` (measured now), ``"cache"`` (measured by an earlier run on this machine),
    ``"explicit"`` (both given) or ``"only candidate"`` (this device offers one); in the last two nothing was
    timed and ``candidates`` is empty.
    """

    precision: str
    channels_last: bool
    source: str
    candidates: tuple[CandidateSpeed, ...] = ()
    batch_size: int = 0  # the batch the probe timed (0: none)
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        return self.source == "cache"

    @property
    def gain(self) -> float | None:
        """The choice's training speed over the fastest fp32 candidate's (None without both)."""
        chosen = self._speed(self.precision, self.channels_last)
        fp32 = [c.images_per_s for c in self.candidates if c.precision == "fp32" and c.images_per_s]
        return chosen / max(fp32) if chosen and fp32 else None

    def _speed(self, precision: str, channels_last: bool) -> float | None:
        return next(
            (c.images_per_s for c in self.candidates if (c.precision, c.channels_last) == (precision, channels_last)),
            None,
        )

    def describe(self) -> str:
        """``bf16, contiguous: measured 1.73x fp32's speed (cached)``, for the run's log."""
        layout = "channels_last" if self.channels_last else "contiguous"
        if not self.candidates:
            why = "as asked" if self.source == "explicit" else "the only candidate here"
            return f"{self.precision}, {layout} ({why})"
        gain = self.gain
        speed = f"{gain:.2f}x fp32's training speed" if gain is not None and self.precision != "fp32" else ""
        speeds = ", ".join(
            f"{c.precision}{'/cl' if c.channels_last else ''} "
            + (f"{c.images_per_s:.0f} img/s" if c.images_per_s else "failed")
            for c in self.candidates
        )
        where = "from an earlier probe on this machine" if self.cached else f"probed at batch {self.batch_size}"
        return f"{self.precision}, {layout}: {speed + '; ' if speed else ''}{where} ({speeds})"

    def to_dict(self) -> dict[str, Any]:
        """For ``config.json``: the choice, every candidate's img/s, the gain over fp32, and where it came from."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "source": self.source,
            "cached": self.cached,
            "gain_over_fp32": self.gain,
            "batch_size": self.batch_size,
            "candidates": [asdict(c) for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str, key: dict[str, Any]) -> ProbeResult:
        """Rebuild a cached result. Raises KeyError, TypeError or ValueError on a malformed entry."""
        candidates = tuple(
            CandidateSpeed(
                str(c["precision"]),
                _as_bool(c["channels_last"]),
                None if c["images_per_s"] is None else float(c["images_per_s"]),
                str(c.get("note", "")),
            )
            for c in data["candidates"]
        )
        result = cls(str(data["precision"]), _as_bool(data["channels_last"]), source, candidates,
                     int(data["batch_size"]), key)  # fmt: skip
        if (result.precision, result.channels_last) not in {(c.precision, c.channels_last) for c in candidates}:
            raise ValueError("the cached choice is not one of its candidates")
        return result


def _as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def choose_placement(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    requested_precision: str,
    requested_channels_last: bool | None,
    *,
    arch: str,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    timer: Callable[[], float] = time.perf_counter,
    rounds: int = PROBE_ROUNDS,
    steps: int = PROBE_STEPS,
    warmup: int = PROBE_WARMUP,
    max_batch: int | None = None,
) -> ProbeResult:
    """Resolve ``auto`` precision and an unset memory format by timing the candidates (or reading the cache).

    Explicit choices are validated and never timed; when both are explicit nothing runs. The probe runs inside
    ``torch.random.fork_rng`` (CPU, and ``device`` on CUDA) and times a model from ``build``, never the run's,
    so the run's initialisation and data order are the same as without it.

    Args:
        build: makes a fresh, freshly initialised copy of the run's network (on the CPU).
        input_shape: the run's batch shape, ``(batch, channels, height, width)``; the probe times at most
            :data:`PROBE_MAX_BATCH_CPU` images per batch on the CPU (``max_batch`` overrides, on any device).
        arch: names the network in the cache key: the architecture and anything else that changes its
            arithmetic (e.g. ``"resnet18/small-input"``).
        cache_dir: folder of the cache file (the command line passes :func:`default_cache_dir`); None: no cache.
        use_cache: False: neither read nor write the cache.
        rounds, steps, warmup: the budget: ``warmup`` untimed steps per candidate, then ``rounds`` rounds of
            ``steps`` timed steps of each candidate in turn; a candidate's speed is its best round.
        timer: read twice per candidate per round (:func:`measure`), candidates in order, so tests can inject
            a fake clock.

    Raises:
        ConfigError: an unknown precision, or fp16 on the CPU.
    """
    default_layout = resolve_channels_last(requested_channels_last, device)
    auto = (requested_precision or "auto").lower() == "auto"
    precisions = precision_candidates(device) if auto else (resolve_precision(requested_precision, device),)
    layouts = (default_layout,) if requested_channels_last is not None else (default_layout, not default_layout)
    candidates = [(p, cl) for p in precisions for cl in layouts]
    if len(candidates) == 1:
        only = auto or requested_channels_last is None
        return ProbeResult(precisions[0], layouts[0], "only candidate" if only else "explicit")

    cap = max_batch if max_batch is not None else (PROBE_MAX_BATCH_CPU if device.type != "cuda" else None)
    shape = (min(input_shape[0], cap) if cap else input_shape[0], *input_shape[1:])
    key = cache_key(arch, shape, num_classes, device, candidates)
    cache_file = _cache_file(cache_dir) if use_cache else None
    if cache_file is not None:
        hit = _read_entry(cache_file, key)
        if hit is not None:
            return hit

    rates: dict[tuple[str, bool], float] = {}
    notes: dict[tuple[str, bool], str] = {}
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        model = build()
        # Round-robin, best round per candidate: a machine that slows down for a moment (other work on a shared
        # box) costs one round of one candidate, not the whole comparison.
        for round_ in range(rounds):
            for candidate in candidates:
                if candidate in notes:
                    continue
                try:
                    found = measure(model, shape, num_classes, device, *candidate, train=True, steps=steps,
                                    warmup=warmup if round_ == 0 else 0, timer=timer)  # fmt: skip
                    rates[candidate] = max(rates.get(candidate, 0.0), found.images_per_s)
                except (RuntimeError, MemoryError) as exc:  # out of memory, an operation it lacks: not a candidate
                    notes[candidate] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    rates.pop(candidate, None)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    speeds = [CandidateSpeed(p, cl, rates.get((p, cl)), notes.get((p, cl), "")) for p, cl in candidates]
    precision, channels_last = pick(speeds, default=(precisions[0], default_layout))
    result = ProbeResult(precision, channels_last, "probe", tuple(speeds), shape[0], key)
    if cache_file is not None and any(s.images_per_s for s in speeds):
        _write_entry(cache_file, key, result)
    return result


def pick(speeds: Sequence[CandidateSpeed], default: tuple[str, bool] = ("fp32", False)) -> tuple[str, bool]:
    """The fastest candidate; a reduced precision only when it beats the fastest fp32 one by :data:`MIN_GAIN`.

    ``default`` when none ran.
    """
    ran = [s for s in speeds if s.images_per_s]
    if not ran:
        return default
    best = max(ran, key=lambda s: float(s.images_per_s or 0))
    fp32 = [s for s in ran if s.precision == "fp32"]
    if best.precision != "fp32" and fp32:
        best_fp32 = max(fp32, key=lambda s: float(s.images_per_s or 0))
        if float(best.images_per_s or 0) < MIN_GAIN * float(best_fp32.images_per_s or 0):
            best = best_fp32
    return best.precision, best.channels_last


# -- the cache --------------------------------------------------------------------------------------------------


def torch_version() -> str:
    return str(torch.__version__)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``, else the machine type)."""
    with contextlib.suppress(OSError, UnicodeDecodeError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3 (sm90)``, or the CPU model and the threads torch uses."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm{major}{minor})"
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def cache_key(
    arch: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    candidates: Sequence[tuple[str, bool]],
) -> dict[str, Any]:
    """What a probe's answer depends on: machine, device, network, batch shape, candidates, torch version."""
    return {
        "machine": f"{socket.gethostname()} / {cpu_model()}",
        "device": device_name(device),
        "arch": arch,
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
        "candidates": [[p, bool(cl)] for p, cl in candidates],
        "torch": torch_version(),
    }


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$RESNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/resnet-cli``, else ``~/.cache/resnet-cli``, from ``environ``
    (the command line passes ``os.environ``: the core itself never reads the environment)."""
    env = environ
    if env.get("RESNET_CACHE_DIR"):
        return Path(env["RESNET_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "resnet-cli"
    return Path.home() / ".cache" / "resnet-cli"


def _cache_file(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    try:
        return None if cache_dir is None else Path(cache_dir) / CACHE_NAME
    except RuntimeError:  # no home folder to find
        return None


def _key_text(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def _read_entries(path: Path) -> dict[str, Any]:
    """The cache's entries; ``{}`` when it is missing, unreadable or not ours."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT:
        return {}
    entries = document.get("entries")
    return entries if isinstance(entries, dict) else {}


def _read_entry(path: Path, key: dict[str, Any]) -> ProbeResult | None:
    entry = _read_entries(path).get(_key_text(key))
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    try:
        return ProbeResult.from_dict(entry, "cache", key)
    except (KeyError, TypeError, ValueError):
        return None


def _write_entry(path: Path, key: dict[str, Any], result: ProbeResult) -> None:
    """Add ``result``, dropping entries of other torch versions (never used again) and the oldest beyond
    :data:`CACHE_ENTRIES`. A failed write is ignored: the cache only saves time."""
    entries = {
        text: entry
        for text, entry in _read_entries(path).items()
        if isinstance(entry, dict) and isinstance(entry.get("key"), dict) and entry["key"].get("torch") == key["torch"]
    }
    entries[_key_text(key)] = {"key": key, "at": time.time(), **result.to_dict()}
    newest = sorted(entries.items(), key=lambda item: float(item[1].get("at") or 0), reverse=True)[:CACHE_ENTRIES]
    document = {"format": CACHE_FORMAT, "entries": dict(newest)}
    with contextlib.suppress(OSError, ResnetError):
        atomic_write_text(path, json.dumps(document, indent=1, sort_keys=True) + "\n")


# -- resnet bench -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One architecture in one precision: forward and training speed."""

    arch: str
    precision: str
    channels_last: bool
    forward: Measurement
    train: Measurement

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "fwd": self.forward.to_dict(),
            "fwd+bwd": self.train.to_dict(),
        }


@dataclass(frozen=True)
class BenchResult:
    """``resnet bench``'s table, and what ``--precision auto`` would choose from its training figures."""

    device: str
    image_size: int
    in_channels: int
    num_classes: int
    batch_size: int
    steps: int
    warmup: int
    rows: list[BenchRow]
    auto: dict[str, str]  # arch -> the precision the probe's rule picks from these fwd+bwd figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "torch": torch_version(),
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "warmup": self.warmup,
            "rows": [row.to_dict() for row in self.rows],
            "auto": self.auto,
        }


def bench(
    archs: Sequence[str],
    *,
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
    batch_size: int = 32,
    precisions: Sequence[str] = ("auto",),
    channels_last: bool | None = None,
    small_input: bool | None = None,
    device: str = "auto",
    steps: int = 10,
    warmup: int = 2,
    timer: Callable[[], float] = time.perf_counter,
    on_start: Callable[[], None] | None = None,
) -> BenchResult:
    """Forward and training speed and peak memory of each architecture in each precision, timed by :func:`measure`.

    Every option is checked before anything is timed; ``on_start`` is called once they all passed. ``"auto"``
    among ``precisions`` means every precision the probe would consider on this device. ``small_input`` None:
    the ResNet stem ``resnet train`` picks (small at 64 px or less). ``channels_last`` None: the device's usual
    format.

    Raises:
        ConfigError, DeviceError: an unknown architecture or precision, a size the network cannot take, a
            count below 1, or a device this machine lacks.
    """
    if not archs:
        raise ConfigError("give at least one --arch, e.g. --arch 18")
    for name, value, least in (("--batch-size", batch_size, 1), ("--steps", steps, 1), ("--warmup", warmup, 0)):
        if int(value) < least:
            raise ConfigError(f"{name} must be at least {least}, got {value}")
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {num_classes}")
    if in_channels not in (1, 3):
        raise ConfigError(f"--in-channels must be 1 (greyscale) or 3 (RGB), got {in_channels}")
    where, _ = resolve_device(device)
    resolved: list[str] = []
    for text in precisions or ("auto",):
        for p in precision_candidates(where) if text.lower() == "auto" else (resolve_precision(text, where),):
            if p not in resolved:
                resolved.append(p)
    names = list(dict.fromkeys(canonical_arch(a) for a in archs))
    small = {
        a: default_small_input(a, image_size) if small_input is None else small_input and family_of(a) == "resnet"
        for a in names
    }
    for a in names:
        check_image_size(image_size, small[a], a)
    layout = resolve_channels_last(channels_last, where)
    if where.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fit sets it

    shape = (batch_size, in_channels, image_size, image_size)
    if on_start is not None:
        on_start()
    rows: list[BenchRow] = []
    for a in names:
        model = build_model(a, num_classes, in_channels, small[a], image_size=image_size)
        for p in resolved:
            common: dict[str, Any] = {"steps": steps, "warmup": warmup, "timer": timer}
            forward = measure(model, shape, num_classes, where, p, layout, train=False, **common)
            train = measure(model, shape, num_classes, where, p, layout, train=True, **common)
            rows.append(BenchRow(a, p, layout, forward, train))
        del model
    auto = {}
    if len(resolved) > 1:
        for a in names:
            speeds = [CandidateSpeed(r.precision, r.channels_last, r.train.images_per_s) for r in rows if r.arch == a]
            auto[a] = pick(speeds, default=("fp32", layout))[0]
    return BenchResult(device_name(where), image_size, in_channels, num_classes, batch_size, steps, warmup, rows, auto)
