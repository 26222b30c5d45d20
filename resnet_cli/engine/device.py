"""Devices and numeric precision: what ``--device``, ``--gpus`` and ``--precision`` resolve to.

``--precision auto`` for a run is decided by measurement, not by a rule:
:func:`resnet_cli.engine.speed.choose_placement` times a few training steps of the run's own network and batch
shape in each precision this device can run (:func:`precision_candidates`), and in both memory formats where
``--channels-last`` was not given, and keeps the fastest. Rules about CPU features do not predict it: a 2-core
AMD EPYC with AVX-512 BF16 and no AMX trains ResNet-18 1.73x faster in bf16 autocast, a Xeon without AMX 0.7x
as fast. :func:`resolve_precision` and :func:`resolve_channels_last` validate explicit values and give callers
that have no model to time a fixed guess (CUDA: bf16 where the GPU has it, else fp16 from Volta on, and
channels_last; CPU: bf16 with AMX tiles, contiguous).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from resnet_cli.errors import ConfigError, DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """Where and how a model runs."""

    device: torch.device
    gpus: tuple[int, ...]  # DataParallel device ids; empty for a single device
    precision: str  # fp32, bf16 or fp16 (resolved)
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.precision)

    @property
    def uses_scaler(self) -> bool:
        return self.precision == "fp16"

    def describe(self) -> str:
        where = (
            f"{self.device.type} x{len(self.gpus)} ({','.join(map(str, self.gpus))})" if self.gpus else str(self.device)
        )
        name = ""
        if self.device.type == "cuda":
            name = f" [{torch.cuda.get_device_name(self.device)}]"
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{where}{name}, {self.precision}, {layout}"


def available_gpus() -> str:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return f"none (torch {torch.__version__}, {build}, no usable GPU)"
    return ", ".join(f"{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count()))


def parse_gpus(text: str | None) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``.

    Raises:
        ConfigError: not a comma-separated list of distinct non-negative integers.
    """
    if text is None or not str(text).strip():
        return ()
    try:
        ids = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--gpus takes comma-separated GPU numbers such as 0,1, got {text!r}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus takes distinct GPU numbers such as 0,1, got {text!r}")
    return ids


def resolve_device(device: str, gpus: tuple[int, ...] = ()) -> tuple[torch.device, tuple[int, ...]]:
    """Check the request against this machine, before any data is touched.

    Raises:
        DeviceError: CUDA asked for but absent, or a GPU number that does not exist (lists what does).
    """
    text = (device or "auto").strip().lower()
    if gpus:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--gpus {','.join(map(str, gpus))} needs CUDA GPUs; available: {available_gpus()}: "
                "leave out --gpus to train on the CPU"
            )
        missing = [i for i in gpus if i >= torch.cuda.device_count()]
        if missing:
            raise DeviceError(f"GPU {missing[0]} does not exist; available: {available_gpus()}")
        if text not in ("auto", "cuda") and text != f"cuda:{gpus[0]}":
            raise ConfigError(f"--device {device} contradicts --gpus {','.join(map(str, gpus))}: give only one")
        return torch.device(f"cuda:{gpus[0]}"), gpus if len(gpus) > 1 else ()
    if text == "auto":
        return (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")), ()
    if text == "cpu":
        return torch.device("cpu"), ()
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} needs a CUDA GPU; available: {available_gpus()}: use --device cpu")
        index = 0 if text == "cuda" else text.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise DeviceError(f"--device {device} does not exist; available GPUs: {available_gpus()}")
        return torch.device(f"cuda:{int(index)}"), ()
    raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def cpu_has_amx() -> bool:
    with contextlib.suppress(Exception):
        return bool(torch.cpu._is_amx_tile_supported())
    return False


@functools.lru_cache(maxsize=1)
def cpu_runs_bf16() -> bool:
    """Whether bf16 autocast actually runs here (a convolution comes out in bf16), not merely whether it is offered."""
    with contextlib.suppress(Exception), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
        return out.dtype == torch.bfloat16 and bool(torch.isfinite(out.float()).all())
    return False


def precision_candidates(device: torch.device) -> tuple[str, ...]:
    """The precisions ``auto`` chooses among on ``device``: fp32, and the autocast precisions it can run.

    bf16 on CUDA GPUs that have it natively and on CPUs where bf16 autocast runs; fp16 (with a GradScaler) on
    CUDA GPUs without bf16.
    """
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return ("fp32", "bf16")
        return ("fp32", "fp16")
    return ("fp32", "bf16") if device.type == "cpu" and cpu_runs_bf16() else ("fp32",)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Validate an explicit precision; resolve ``auto`` by a fixed guess, for callers with no model to time.

    ``resnet train`` resolves ``auto`` by measuring instead (:func:`resnet_cli.engine.speed.choose_placement`).

    Raises:
        ConfigError: unknown precision, or fp16 on the CPU.
    """
    text = (precision or "auto").lower()
    if text not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if text == "auto":
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return "bf16"
            return "fp16" if torch.cuda.get_device_capability(device)[0] >= 7 else "fp32"
        return text
    if text == "fp16":
        raise ConfigError("fp16 needs a CUDA GPU: use --precision bf16 or fp32 on the CPU")
    if text == "auto":
        return "bf16" if cpu_has_amx() else "fp32"
    return text


def resolve_channels_last(requested: bool | None, device: torch.device) -> bool:
    """The memory format asked for; without a request, a guess (``fit`` measures instead): channels_last on CUDA
    (tensor cores want NHWC), contiguous on the CPU."""
    if requested is not None:
        return bool(requested)
    return device.type == "cuda"


def autocast(placement: Placement) -> contextlib.AbstractContextManager[object]:
    """The autocast context for a placement (a no-op context in fp32)."""
    dtype = placement.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=placement.device.type, dtype=dtype)
