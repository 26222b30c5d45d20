"""Checkpoints: plain values and tensors only, written atomically, read with ``weights_only=True``.

A checkpoint is a dict holding the model's state dict (clean keys), the model's build arguments, the class
list and preprocessing, and, for resumable checkpoints, the optimiser, scheduler, early-stopping and AMP
scaler states, every RNG state and the position in the epoch. Nothing in it is a pickled class, so
``torch.load(path, weights_only=True)`` reads it without an allow-list, and nothing in a hostile file runs.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from resnet_cli.errors import CheckpointError, RunFailedError
from resnet_cli.fs import atomic_write_with, special_file_kind

FORMAT = "resnet-cli checkpoint"
VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network under DataParallel, DistributedDataParallel, torch.compile and autocast wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif getattr(model, "wraps_model", False) and isinstance(getattr(model, "model", None), nn.Module):
            model = model.model  # type: ignore[assignment]  # an nn.Module, checked just above
        else:
            return model


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """Strip exactly the wrapper prefixes ``module.`` and ``_orig_mod.`` (repeatedly, in any order)."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        cleaned[key] = value
    return cleaned


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity.

    A NaN or infinity anywhere makes a tensor's sum NaN or infinite, so one sum per tensor (a single pass, no
    mask) clears the usual all-finite state; only a tensor whose sum is not finite (NaN, infinity, or finite
    values that overflow the sum) is checked element by element. One host read per device.
    """
    floats = [(k, v.detach()) for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, value in floats:
        by_device.setdefault(value.device, []).append((key, value))
    suspects: set[str] = set()
    for items in by_device.values():
        sums = torch.stack(
            [v.sum(dtype=torch.float64 if v.dtype == torch.float64 else torch.float32) for _, v in items]
        )
        suspects.update(key for (key, _), finite in zip(items, sums.isfinite().tolist(), strict=True) if not finite)
    return [k for k, v in floats if k in suspects and not bool(torch.isfinite(v).all())]


def save_checkpoint(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], payload: dict[str, Any]) -> None:
    """Write the checkpoint to each path atomically, in order: a failed write leaves the previous file intact.

    One path (the usual case) is serialised straight into its temporary file; several are serialised once in
    memory and the same bytes written to each.

    Raises:
        RunFailedError: non-finite weights (the previous checkpoints are kept) or a failed write.
    """
    targets = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    bad = non_finite_tensors(payload.get("model", {}))
    if bad:
        raise RunFailedError(
            f"refusing to write {targets[-1]}: the weights hold NaN or infinity ({bad[0]}); the previous checkpoint "
            "is intact: lower --lr or use --precision fp32"
        )
    document = {"format": FORMAT, "version": VERSION, **payload}
    if len(targets) == 1:
        # No in-memory copy: a ResNet-50's last.pt with AdamW's moments is ~300 MB, written on every epoch.
        atomic_write_with(targets[0], lambda handle: _save_into(document, handle))
        return
    buffer = io.BytesIO()
    torch.save(document, buffer)

    def write(handle: IO[bytes]) -> None:
        handle.write(buffer.getbuffer())

    for path in targets:
        atomic_write_with(path, write)


def _save_into(document: dict[str, Any], handle: IO[bytes]) -> None:
    try:
        torch.save(document, handle)
    except RuntimeError as exc:
        # After a failed write (full disk), torch's zip writer fails again while closing and raises that instead:
        # give the caller the OSError, which names the cause.
        if isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise


#: The most bytes a checkpoint may declare for its contents, whatever the file: ResNet-152 with 100,000
#: classes and AdamW's two moments in float32 is about 3 GB, so twice that is generous.
MAX_CHECKPOINT_BYTES = 8 * 2**30
#: torch.save stores a checkpoint's members uncompressed, so their declared sizes add up to about the file's
#: size; a zip that declares more than a few times its own size is a decompression bomb, not a checkpoint.
MAX_EXPANSION = 4
_SLACK_BYTES = 1 << 20  # the zip's own headers and a tiny checkpoint's rounding
#: Bytes a checkpoint may hold per parameter of the architecture it is loaded for: float64 weights plus two
#: optimiser moments and a copy (EMA), with room to spare.
BYTES_PER_PARAMETER = 32
_PARAMETER_SLACK_BYTES = 16 * 2**20  # RNG states, history and the like

_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's legacy magic number
PASS_INSTEAD = "pass a run folder, its best.pt, or an exported model.safetensors"


@dataclass(frozen=True)
class FileKind:
    """What a file given as weights actually is, sniffed from its bytes (never from its name)."""

    kind: str  # "torch", "torchscript", "safetensors", "onnx", "legacy-torch", "damaged", "other" or "unknown"
    words: str  # e.g. "a PNG image", for messages


def identify_file(path: str | os.PathLike[str]) -> FileKind:
    """Sniff what ``path`` holds from its first bytes and, for zip files, its list of members.

    Only regular files are opened (a FIFO would block, ``/dev/zero`` never ends).

    Raises:
        CheckpointError: missing, empty, unreadable, a folder, or not a regular file.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist: {PASS_INSTEAD}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path} is a folder without best.pt or last.pt: {PASS_INSTEAD}")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is {special_file_kind(mode)}, not a regular file: {PASS_INSTEAD}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between stat and open
                raise CheckpointError(f"{path} is not a regular file: {PASS_INSTEAD}")
            head = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): {PASS_INSTEAD}")
    return _kind_of(path, head)


def _kind_of(path: Path, head: bytes) -> FileKind:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if len(head) >= 10 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return FileKind("safetensors", "a safetensors file")
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A):
        return FileKind("onnx", "an ONNX model")
    if head.startswith(_LEGACY_MAGIC):
        return FileKind("legacy-torch", "a checkpoint in torch's legacy (pre-1.6, non-zip) format")
    for signature, words in (
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"\x93NUMPY", "a NumPy array file"),
        (b"\x89HDF\r\n", "an HDF5 (Keras) file"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"%PDF", "a PDF document"),
    ):
        if head.startswith(signature):
            return FileKind("other", words)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return FileKind("other", "a WebP image")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind("other", "a raw Python pickle (not torch's zip checkpoint format)")
    if len(head) > 262 and head[257:262] == b"ustar":
        return FileKind("other", "a tar archive")
    if b"\x00" not in head:
        text: str | None
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
        if text is not None:
            stripped = text.lstrip()
            if stripped[:1] in ("{", "["):
                return FileKind("other", "a JSON text file")
            if "," in stripped.split("\n", 1)[0]:
                return FileKind("other", "a CSV text file")
            return FileKind("other", "a text file")
    return FileKind("unknown", "not a file format resnet knows (no torch, safetensors or ONNX header)")


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return FileKind("damaged", "a truncated or damaged zip archive (the format of torch checkpoints)")
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    if any(name.split("/", 1)[-1] in ("constants.pkl",) or "/code/" in name for name in names):
        return FileKind("torchscript", "a TorchScript program")
    if any(name == f"{top}/data.pkl" for top in tops for name in names):
        return FileKind("torch", "a torch checkpoint")
    return FileKind("other", "a zip archive that is not a torch checkpoint (no data.pkl)")


def not_weights_message(path: str | os.PathLike[str], kind: FileKind) -> str:
    """The one-line refusal for a file that is not weights this tool reads."""
    if kind.kind == "torchscript":
        return (
            f"{path} is {kind.words} (as 'resnet export --format torchscript' writes), not a checkpoint: load it "
            f"with torch.jit.load in your application; here {PASS_INSTEAD}"
        )
    if kind.kind == "onnx":
        return f"{path} is {kind.words}, not a checkpoint: 'resnet predict' takes it; for this command {PASS_INSTEAD}"
    if kind.kind == "damaged":
        return f"{path} is {kind.words}: an interrupted copy or download? copy or write it again"
    if kind.kind == "legacy-torch":
        return (
            f"{path} is {kind.words}, which cannot be checked before loading and is not read: load it in Python "
            "and save it again with torch.save (the zip format, the default since torch 1.6)"
        )
    return f"{path} is {kind.words}, not a checkpoint: {PASS_INSTEAD}"


def check_archive(path: str | os.PathLike[str], expected_parameters: int | None = None) -> None:
    """Refuse a torch zip whose members declare more bytes than the file or the architecture can justify,
    reading only the zip's central directory (nothing is decompressed).

    Args:
        expected_parameters: parameter count of the architecture the file is loaded for, when known.

    Raises:
        CheckpointError: a decompression bomb, a damaged zip, or contents far larger than the model needs.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged zip archive ({_first_line(exc)}): write it again") from None
    declared = sum(info.file_size for info in infos)
    if declared > MAX_EXPANSION * size + _SLACK_BYTES:
        raise CheckpointError(
            f"{path} declares {declared:,} bytes of contents in a {size:,}-byte file: a decompression bomb or a "
            "damaged file, refused without loading it; use a checkpoint written by torch.save"
        )
    if declared > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} holds {declared:,} bytes, more than any ResNet checkpoint needs "
            f"(limit {MAX_CHECKPOINT_BYTES:,}): refused without loading it"
        )
    if expected_parameters is not None:
        limit = BYTES_PER_PARAMETER * expected_parameters + _PARAMETER_SLACK_BYTES
        if declared > limit:
            raise CheckpointError(
                f"{path} holds {declared:,} bytes, far more than weights for {expected_parameters:,} parameters "
                f"need (limit {limit:,}): choose the matching --arch or another file"
            )


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    expected_parameters: int | None = None,
) -> dict[str, Any]:
    """Read a torch checkpoint with ``torch.load(weights_only=True)``, turning every failure into one clear line.

    Before torch sees the file, its bytes are sniffed (an image, a CSV, an ONNX or TorchScript export is named
    as what it is) and its zip directory is checked (:func:`check_archive`), so a decompression bomb is
    refused without allocating its contents.

    Args:
        expected_parameters: parameter count of the architecture the file is loaded for, when known.

    Raises:
        CheckpointError: missing, truncated, not a torch checkpoint, a bomb, or holding pickled objects (never run).
    """
    path = Path(path)
    kind = identify_file(path)
    if kind.kind != "torch":
        raise CheckpointError(not_weights_message(path, kind))
    check_archive(path, expected_parameters)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's UserWarnings would reach the user's stderr
            data: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path} is not a safe checkpoint: it holds pickled Python objects, which were refused without "
                "being run; load only files you trust, or export plain weights"
            ) from None
        raise CheckpointError(f"{path} is corrupt ({first[:120]})") from None
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except MemoryError:
        raise CheckpointError(
            f"{path} needs more memory than this machine has: it is not a ResNet checkpoint"
        ) from None
    except Exception as exc:  # torch.load raises many kinds (RuntimeError, KeyError, EOFError, OSError...)
        raise CheckpointError(
            f"{path} is a truncated or damaged torch checkpoint ({_first_line(exc)[:100]}): write it again"
        ) from None
    return data


def read_project_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Like :func:`load_checkpoint`, also requiring this project's format.

    Raises:
        CheckpointError: the file is a plain state dict or another program's checkpoint.
    """
    data = load_checkpoint(path, map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a resnet-cli checkpoint (no model configuration inside): "
            "use a run folder, its best.pt or last.pt, or an exported .safetensors"
        )
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer resnet-cli (format {data['version']}): upgrade")
    for key in ("model", "model_config", "classes", "preprocess"):
        if key not in data:
            raise CheckpointError(f"{path} lacks {key!r}: it is damaged or incomplete")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
