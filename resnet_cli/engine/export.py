"""``export``: weights as safetensors with metadata (default), or ONNX / TorchScript checked for parity.

The safetensors bytes are a file format (:mod:`resnet_cli.io.export`); ONNX and TorchScript exports trace the
network, run it on sample images of the run (or random inputs) beside the original, and are written only when
the two agree within :data:`PARITY_ATOL`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.data.dataset import ManifestDataset
from resnet_cli.data.transforms import eval_transform
from resnet_cli.engine.run_dir import is_run_folder
from resnet_cli.errors import CheckpointError, ConfigError, ResnetError, RunFailedError
from resnet_cli.fs import atomic_write_bytes, record_owned, refuse_overwrite_unless_owned, run_lock
from resnet_cli.io.checkpoint import non_finite_tensors
from resnet_cli.io.export import DTYPES, safetensors_bytes, safetensors_metadata
from resnet_cli.io.weights import LoadedWeights, find_manifest, load_weights

EXPORT_FORMATS = ("safetensors", "onnx", "torchscript")
DEFAULT_NAMES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
#: Largest absolute logit difference accepted between the exported and the original model (float32).
PARITY_ATOL = 1e-3
PARITY_IMAGES = 16
TORCHSCRIPT_METADATA = "resnet-cli.json"

#: An exported model made callable: a float32 batch on the CPU in, logits (a tensor or an array) out.
Runner = Callable[[torch.Tensor], Any]


@dataclass
class ExportResult:
    """What ``export`` wrote, for the command to render."""

    path: Path
    format: str
    dtype: str
    sha256: str
    size_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None  # ONNX/TorchScript: max_abs_diff, top1_agreement, images, inputs
    weights: str = ""  # which weights were exported, e.g. "best.pt (epoch 3)"
    note: str | None = None  # a warning about those weights (last.pt used for want of best.pt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "dtype": self.dtype,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "metadata": self.metadata,
            "parity": self.parity,
            "weights": self.weights,
            "note": self.note,
        }


def default_name(fmt: str, raw: bool = False) -> str:
    """``model.safetensors`` and so on; ``model-raw.*`` for the raw weights of a run that kept a moving average,
    so that they never replace the export of the weights of record."""
    name = DEFAULT_NAMES[fmt]
    return name.replace("model.", "model-raw.", 1) if raw else name


def export(
    target: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    fmt: str = "safetensors",
    dtype: str = "fp32",
    force: bool = False,
    data: str | os.PathLike[str] | None = None,
    ema: bool = True,
) -> ExportResult:
    """Export the weights of a run folder, checkpoint or safetensors file.

    Raises:
        ConfigError: unknown format or dtype, or a dtype the format does not take; a missing optional extra.
        CheckpointError: unreadable or non-finite weights.
        OutputExistsError: ``out`` exists and ``force`` is false.
        RunFailedError: the exported model disagrees with the original beyond the tolerance.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if fmt != "safetensors" and dtype != "fp32":
        raise ConfigError(f"--dtype {dtype} applies to safetensors only; {fmt} exports are float32")
    if fmt == "onnx":
        _require_onnx()
    weights = load_weights(target, ema=ema)
    bad = non_finite_tensors(weights.state_dict)
    if bad:
        raise CheckpointError(f"{weights.source} holds NaN or infinite weights ({bad[0]}): refusing to export them")
    path = Path(out) if out else weights.run_dir / default_name(fmt, raw=weights.raw_of_average)
    if path.resolve() == weights.source.resolve():
        raise ConfigError(f"--out {path} is the file being exported: give another --out")
    if path.suffix.lower() == ".pt" and fmt == "safetensors":
        raise ConfigError(f"{path}: a safetensors export should end in .safetensors")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder: give a file name")
    refuse_overwrite_unless_owned(path, force, "export")

    if fmt == "safetensors":
        payload, metadata = safetensors_bytes(weights, dtype)
        parity = None
    else:
        metadata = safetensors_metadata(weights, "fp32")
        model = weights.build()
        inputs, source = sample_inputs(weights, data)
        if fmt == "onnx":
            payload = _onnx_bytes(model, inputs, metadata)
            run = _onnx_runner(payload)
        else:
            payload = _torchscript_bytes(model, inputs, metadata)
            run = _torchscript_runner(payload)
        parity = check_parity(model, run, inputs)
        parity["inputs"] = source
        if parity["max_abs_diff"] > PARITY_ATOL or parity["top1_agreement"] < 1.0:
            raise RunFailedError(
                f"the {fmt} export disagrees with the checkpoint: largest logit difference "
                f"{parity['max_abs_diff']:.2e} (tolerance {PARITY_ATOL:.0e}), top-1 agreement "
                f"{parity['top1_agreement']:.2%}; nothing was written"
            )
    _write(path, payload, force)
    return ExportResult(
        path,
        fmt,
        dtype,
        hashlib.sha256(payload).hexdigest(),
        len(payload),
        metadata,
        parity,
        weights.describe(),
        weights.note,
    )


def _write(path: Path, payload: bytes, force: bool) -> None:
    """Write ``path`` atomically; inside a run folder, under the run's lock, recording it as the tool's own."""
    folder = path.parent
    if not is_run_folder(folder):
        atomic_write_bytes(path, payload)
        return
    with run_lock(folder, "export"):
        refuse_overwrite_unless_owned(path, force, "export")  # again: another process may have written it
        atomic_write_bytes(path, payload)
        record_owned(folder, [path.name])


def sample_inputs(weights: LoadedWeights, data: str | os.PathLike[str] | None) -> tuple[torch.Tensor, str]:
    """Up to 16 preprocessed images from the run's test (or val) part; random tensors when no data is found."""
    pre = weights.preprocess
    with contextlib.suppress(ResnetError):  # no manifest, moved or damaged images: fall back to random inputs
        manifest = find_manifest(weights, data, None)
        rows = (manifest.part("test") or manifest.part("val"))[:PARITY_IMAGES]
        if rows:
            transform = eval_transform(pre)
            dataset = ManifestDataset(manifest.root, rows, manifest.classes, transform, pre.in_channels, pre.background)
            batch = torch.stack([x for x, _ in dataset.__getitems__(list(range(len(rows))))])
            return batch, f"{len(rows)} images from {manifest.path}"
    generator = torch.Generator().manual_seed(0)
    shape = (8, pre.in_channels, pre.image_size, pre.image_size)
    return torch.randn(shape, generator=generator), "8 random inputs (the run's images were not found)"


def check_parity(model: nn.Module, run: Runner, inputs: torch.Tensor) -> dict[str, Any]:
    """How far ``run`` (the exported model) strays from ``model`` on ``inputs``: the largest logit difference and
    the share of equal top-1 predictions."""
    with torch.inference_mode():
        expected = model(inputs).float()
    actual = torch.as_tensor(run(inputs)).float()
    return {
        "images": int(inputs.shape[0]),
        "max_abs_diff": float((expected - actual).abs().max()),
        "top1_agreement": float((expected.argmax(1) == actual.argmax(1)).float().mean()),
    }


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            "ONNX export needs the optional extra: pip install 'resnet-cli[onnx]' (onnx, onnxscript, onnxruntime)"
        ) from None


def _onnx_bytes(model: nn.Module, inputs: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The ONNX model, carrying the same metadata as a safetensors export (``metadata_props``), so that
    ``resnet predict model.onnx`` knows the classes and preprocessing."""
    import tempfile

    import onnx

    batch = torch.export.Dim("batch", min=1, max=65536)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (inputs[:2],),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        if program is None:  # only the legacy exporter returns nothing; dynamo=True always gives a program
            raise RunFailedError("the ONNX exporter returned no program: update torch and onnxscript")
        file = Path(tmp) / "model.onnx"
        program.save(str(file))
        proto = onnx.load(str(file))
    onnx.helper.set_model_props(proto, metadata)
    payload: bytes = proto.SerializeToString()
    return payload


def _onnx_runner(payload: bytes) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> Any:
        return session.run(None, {"input": x.numpy()})[0]

    return run


def _torchscript_bytes(model: nn.Module, inputs: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """The traced program, with the export metadata as the extra file ``resnet-cli.json``."""
    # torch.jit is deprecated upstream but remains the format C++ (libtorch) deployments load.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, inputs[:2])
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})
    return buffer.getvalue()


def _torchscript_runner(payload: bytes) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(io.BytesIO(payload), map_location="cpu")
    module.eval()

    def run(x: torch.Tensor) -> Any:
        with torch.no_grad():
            return module(x)

    return run
