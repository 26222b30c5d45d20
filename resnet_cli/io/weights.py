"""Weights from any source: a run folder, a ``.pt`` checkpoint, a ``.safetensors`` export, or (for
``--init``) a plain torchvision/timm state dict. Everything is read without unpickling objects.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cli.config import ModelConfig, PreprocessConfig
from resnet_cli.data.locate import RecordedManifest, locate_manifest
from resnet_cli.data.split import Manifest
from resnet_cli.errors import CheckpointError, ConfigError
from resnet_cli.io.checkpoint import (
    PASS_INSTEAD,
    clean_state_dict,
    identify_file,
    load_checkpoint,
    non_finite_tensors,
    not_weights_message,
    read_project_checkpoint,
)

SAFETENSORS_FORMAT = "resnet-cli weights"
#: Largest input side accepted from a file's metadata: beyond it the preprocessing alone needs gigabytes.
MAX_IMAGE_SIZE = 4096
RUN_CONFIG_NAME = "config.json"


@dataclass
class LoadedWeights:
    """A trained network's weights and everything needed to use them."""

    source: Path  # the file read
    kind: str  # "checkpoint" or "safetensors"
    model_config: ModelConfig
    classes: list[str]
    preprocess: PreprocessConfig
    state_dict: dict[str, torch.Tensor]
    sha256: str
    run_dir: Path  # where reports about these weights go: the run folder, or the file's folder
    checkpoint: dict[str, Any] | None = None  # the whole checkpoint, when the source is one
    metadata: dict[str, str] | None = None  # safetensors metadata, when the source is one
    note: str | None = None  # one line the commands show as a warning (last.pt used for want of best.pt)
    ema: bool = False  # the weights are the run's moving average (--ema), not its raw weights

    @property
    def raw_of_average(self) -> bool:
        """The raw weights of a run that also kept a moving average (not its weights of record)."""
        return not self.ema and (self.checkpoint or {}).get("ema") is not None

    def describe(self) -> str:
        """Which weights these are, in a few words: ``best.pt (epoch 3)``, ``last.pt (epoch 0, step 3: no best.pt
        yet)``, ``model.safetensors (exported from best.pt)``."""
        name = self.source.name
        if self.checkpoint is None:
            origin = (self.metadata or {}).get("source")
            average = ", moving average" if self.ema else ""
            return f"{name} (exported from {origin}{average})" if origin else name
        where = []
        if isinstance(self.checkpoint.get("epoch"), int):
            where.append(f"epoch {self.checkpoint['epoch']}")
        loader = self.checkpoint.get("loader")
        step = loader.get("batches_done") if isinstance(loader, dict) else None
        if isinstance(step, int) and step > 0:
            where.append(f"step {step}")
        if self.ema:
            where.append("moving average")
        text = ", ".join(where)
        if self.note is not None:
            text = f"{text}: no best.pt yet" if text else "no best.pt yet"
        return f"{name} ({text})" if text else name

    @property
    def precision(self) -> str:
        """The precision the weights were trained (and validated) in."""
        if self.checkpoint is not None:
            return str(self.checkpoint.get("precision", "fp32"))
        return (self.metadata or {}).get("precision", "fp32")

    @property
    def batch_size(self) -> int:
        """The batch size of training (and validation): evaluating in the same batches gives the same numbers."""
        if self.checkpoint is not None:
            return int((self.checkpoint.get("config") or {}).get("batch_size", 64))
        return int((self.metadata or {}).get("batch_size", 64))

    def build(self) -> nn.Module:
        """The network with these weights, in eval mode, on the CPU, in float32."""
        model = build_for(self.model_config)
        cfg = self.model_config
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"weights in {self.source} do not fit {cfg.arch} ({_first_line(exc)}): the file is damaged"
            ) from None
        return model.eval()

    def recorded_manifests(self) -> list[RecordedManifest]:
        """Where the weights' records say they were trained, most trusted first: the checkpoint's configuration,
        then the ``config.json`` of the run folder the file sits in (which exports keep beside them)."""
        found = []
        config = (self.checkpoint or {}).get("config") or {}
        if isinstance(config, dict) and isinstance(config.get("manifest"), str) and config["manifest"]:
            root = config.get("data")
            found.append(RecordedManifest(Path(config["manifest"]), root if isinstance(root, str) else None))
        entry = (read_run_config(self.source.parent) or {}).get("manifest")
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            root = entry.get("root")
            found.append(RecordedManifest(Path(entry["path"]), root if isinstance(root, str) else None))
        return found


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights_path(target: str | os.PathLike[str]) -> Path:
    """A run folder means its ``best.pt`` (``last.pt`` while no best exists yet: see :func:`load_weights`'s note).

    Raises:
        CheckpointError: nothing usable at ``target``.
    """
    path = Path(target)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no checkpoint in {path} (no best.pt or last.pt): train a run there first")
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"{path} does not exist: give a run folder, a .pt checkpoint or a .safetensors file")
    return path


def build_for(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised network as ``cfg`` describes it (a ViT at its recorded image size)."""
    from resnet_cli.models import build_model

    return build_model(cfg.arch, cfg.num_classes, cfg.in_channels, cfg.small_input, image_size=cfg.image_size)


def load_weights(target: str | os.PathLike[str], ema: bool = True) -> LoadedWeights:
    """Read weights with their architecture, classes and preprocessing, checked against each other.

    The file's kind is sniffed from its bytes, not its name. A run folder means its ``best.pt``; when only
    ``last.pt`` exists (no epoch has finished validating), it is used and :attr:`LoadedWeights.note` says so.
    A checkpoint of a run trained with ``--ema`` gives its moving average unless ``ema`` is false (``--no-ema``).

    Raises:
        CheckpointError: missing, corrupt, hostile or foreign files; metadata that contradicts the tensors;
            missing, misshapen or non-finite weights.
    """
    path = resolve_weights_path(target)
    note = None
    if Path(target).is_dir() and path.name == "last.pt":
        note = f"{Path(target)} has no best.pt yet (no epoch has finished validation): using last.pt"
    run_dir = path.parent
    kind = identify_file(path)
    if _is_safetensors(path, kind.kind):
        state, meta = read_safetensors(path)
        if meta.get("format") != SAFETENSORS_FORMAT:
            raise CheckpointError(
                f"{path} has no resnet-cli metadata (architecture, classes, preprocessing): export it with "
                "'resnet export', or pass it to 'resnet train --init' to fine-tune from it"
            )
        model_config, classes, preprocess = config_from_metadata(meta, path)
        if not ema and meta.get("ema") == "true":
            raise CheckpointError(only_the_average(path))
        check_weights(path, model_config, classes, preprocess, state)
        return LoadedWeights(
            path, "safetensors", model_config, classes, preprocess, state, file_sha256(path), run_dir, None, meta, note,
            meta.get("ema") == "true",
        )  # fmt: skip
    if kind.kind != "torch":
        raise CheckpointError(not_weights_message(path, kind))
    data = read_project_checkpoint(path)
    try:
        model_config = ModelConfig.from_dict(data["model_config"])
        preprocess = PreprocessConfig.from_dict(data["preprocess"])
        classes = [str(c) for c in data["classes"]]
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} has a damaged configuration ({exc})") from None
    key = "ema" if ema and data.get("ema") is not None else "model"
    if not isinstance(data[key], dict) or not all(torch.is_tensor(v) for v in data[key].values()):
        raise CheckpointError(f"{path} has no state dict of tensors under {key!r}: it is damaged")
    state = clean_state_dict(data[key])
    check_weights(path, model_config, classes, preprocess, state)
    return LoadedWeights(
        path, "checkpoint", model_config, classes, preprocess, state, file_sha256(path), run_dir, data, None, note,
        key == "ema",
    )  # fmt: skip


def config_from_metadata(meta: dict[str, str], path: Path) -> tuple[ModelConfig, list[str], PreprocessConfig]:
    """Architecture, classes and preprocessing from an export's string metadata (safetensors or ONNX).

    Raises:
        CheckpointError: missing or malformed entries.
    """
    try:
        model_config = ModelConfig.from_dict(json.loads(meta["model"]))
        classes = json.loads(meta["classes"])
        preprocess = PreprocessConfig.from_dict(json.loads(meta["preprocess"]))
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the metadata entry {exc}: export it again") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({_first_line(exc)}): export it again") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path} has damaged metadata: 'classes' is not a list of names: export it again")
    # The flat entries are for people and other tools; they must say the same as the JSON ones.
    for key, value in (
        ("num_classes", model_config.num_classes),
        ("in_channels", model_config.in_channels),
        ("image_size", preprocess.image_size),
    ):
        if key in meta and meta[key] != str(value):
            raise CheckpointError(
                f"{path} has contradictory metadata: {key} is {meta[key]!r} but the configuration says {value!r}"
            )
    return model_config, classes, preprocess


def check_config(
    path: Path, model_config: ModelConfig, classes: list[str], preprocess: PreprocessConfig
) -> ModelConfig:
    """Refuse a configuration no trained network of this tool can have; returns it with the canonical arch.

    Raises:
        CheckpointError: an unknown architecture, a class list of the wrong length, a channel count other than
            1 or 3, an image size out of bounds, or normalisation values that do not fit.
    """
    from resnet_cli.models.registry import MIN_IMAGE_SIZE, canonical_arch, check_image_size, family_of

    try:
        arch = canonical_arch(model_config.arch)
    except ConfigError:
        raise CheckpointError(f"{path} names an unknown architecture {model_config.arch!r}: it is damaged") from None
    problems = []
    vit = family_of(arch) == "vit"
    if vit:  # the position embeddings are laid out for one image size: the preprocessing's
        try:
            if model_config.image_size != preprocess.image_size or model_config.small_input:
                raise ConfigError("mismatch")
            check_image_size(int(preprocess.image_size), False, arch)
        except (ConfigError, TypeError, ValueError):
            problems.append(f"image_size {model_config.image_size!r} / {preprocess.image_size!r} for {arch}")
    if not isinstance(model_config.num_classes, int) or model_config.num_classes < 1:
        problems.append(f"num_classes {model_config.num_classes!r}")
    elif len(classes) != model_config.num_classes:
        problems.append(f"{len(classes)} class names for a {model_config.num_classes}-way classifier")
    if len(set(classes)) != len(classes):
        problems.append("repeated class names")
    if model_config.in_channels not in (1, 3) or preprocess.in_channels != model_config.in_channels:
        problems.append(f"in_channels {model_config.in_channels!r} / {preprocess.in_channels!r} (1 or 3)")
    lowest = 1 if vit else MIN_IMAGE_SIZE[bool(model_config.small_input)]
    for name, value in (("image_size", preprocess.image_size), ("resize_size", preprocess.resize_size)):
        if not isinstance(value, int) or not lowest <= value <= MAX_IMAGE_SIZE:
            problems.append(f"{name} {value!r} (expected {lowest} to {MAX_IMAGE_SIZE} px)")
    for name, values in (("mean", preprocess.mean), ("std", preprocess.std)):
        if (
            not isinstance(values, tuple)
            or len(values) != preprocess.in_channels
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            or (name == "std" and not all(v > 0 for v in values))
        ):
            problems.append(f"{name} {values!r}")
    if not isinstance(preprocess.background, int) or not 0 <= preprocess.background <= 255:
        problems.append(f"background {preprocess.background!r}")
    if problems:
        raise CheckpointError(f"{path} has inconsistent metadata ({'; '.join(problems)}): export or train it again")
    return ModelConfig(
        arch, model_config.num_classes, model_config.in_channels, bool(model_config.small_input),
        preprocess.image_size if vit else None,
    )  # fmt: skip


def check_weights(
    path: Path,
    model_config: ModelConfig,
    classes: list[str],
    preprocess: PreprocessConfig,
    state: dict[str, torch.Tensor],
) -> None:
    """Check the configuration (:func:`check_config`) and the tensors against the network it describes.

    Raises:
        CheckpointError: as :func:`check_config`; a missing, unexpected or misshapen tensor (named); NaN or
            infinite weights (named).
    """
    cfg = check_config(path, model_config, classes, preprocess)
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = build_for(cfg).state_dict()
    for key, want in expected.items():
        if key not in state:
            raise CheckpointError(f"{path} lacks the tensor {key!r} that {cfg.arch} needs: it is damaged or incomplete")
        if tuple(state[key].shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, but {cfg.arch} with "
                f"{cfg.num_classes} classes and {cfg.in_channels} input channel(s) needs {tuple(want.shape)}: "
                "the file is damaged or its metadata was altered"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{path} holds the tensor {extra[0]!r}, which {cfg.arch} does not have: it is damaged")
    bad = non_finite_tensors(state)
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({bad[0]}): the training diverged; use an earlier checkpoint"
        )


def only_the_average(path: Path) -> str:
    """Why ``--no-ema`` cannot apply to an export of a run's moving average."""
    return (
        f"{path} holds only the moving average of the weights (exported from an --ema run): for the raw weights "
        "use the run folder or its best.pt with --no-ema, or export again with --no-ema"
    )


@dataclass
class OnnxWeights:
    """An ONNX export ready to run, with the classes and preprocessing it was exported with."""

    source: Path
    model_config: ModelConfig
    classes: list[str]
    preprocess: PreprocessConfig
    session: Any  # an onnxruntime.InferenceSession
    origin: str  # where classes and preprocessing came from: the file's metadata or the run's config.json
    note: str | None = None
    ema: bool = False  # exported from a run's moving average (its metadata says so)

    def describe(self) -> str:
        return f"{self.source.name} (ONNX, {self.origin})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a float32 batch on the CPU."""
        input_name = self.session.get_inputs()[0].name
        return torch.from_numpy(self.session.run(None, {input_name: x.detach().cpu().float().numpy()})[0])


#: Largest ONNX file read: protobuf's own limit for a single message.
MAX_ONNX_BYTES = 2 * 2**30


def load_onnx(path: str | os.PathLike[str], providers: list[str] | None = None) -> OnnxWeights:
    """An ONNX model written by ``resnet export --format onnx``, with its classes and preprocessing.

    Those come from the model's metadata (``metadata_props``, written since 0.2.0) or, for older exports,
    from the ``config.json`` of the run folder the file sits in.

    Raises:
        ConfigError: onnx or onnxruntime is not installed.
        CheckpointError: not a readable ONNX model, external data, no classes and preprocessing to be found,
            or a model whose input or output does not match them.
    """
    path = Path(path)
    kind = identify_file(path)
    if kind.kind != "onnx":
        raise CheckpointError(not_weights_message(path, kind))
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            f"{path} is an ONNX model; running it needs the optional extra: pip install 'resnet-cli[onnx]' "
            "(or pass the run folder or its model.safetensors)"
        ) from None
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise CheckpointError(f"{path} is larger ({size:,} bytes) than any ONNX model can be: it is damaged")
    payload = path.read_bytes()
    try:
        proto = onnx.load_from_string(payload)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckpointError(f"{path} is not a readable ONNX model ({_first_line(exc)}): export it again") from None
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in proto.graph.initializer):
        raise CheckpointError(
            f"{path} keeps its weights in external files, which resnet does not read: export it again"
        )
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("format") == SAFETENSORS_FORMAT:
        model_config, classes, preprocess = config_from_metadata(meta, path)
        origin = "classes and preprocessing from its metadata"
    else:
        doc = read_run_config(path.parent)
        if doc is None:
            raise CheckpointError(
                f"{path} carries no classes or preprocessing (exported before resnet-cli 0.2.0) and no run's "
                "config.json sits beside it: export it again with 'resnet export RUN --format onnx'"
            )
        try:
            model_config = ModelConfig.from_dict(doc["model"])
            preprocess = PreprocessConfig.from_dict(doc["preprocess"])
            classes = [str(c) for c in doc["classes"]]
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path.parent / RUN_CONFIG_NAME} is damaged ({_first_line(exc)})") from None
        origin = f"classes and preprocessing from {path.parent / RUN_CONFIG_NAME}"
    model_config = check_config(path, model_config, classes, preprocess)
    del proto
    try:
        session = ort.InferenceSession(payload, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise CheckpointError(f"onnxruntime cannot run {path} ({_first_line(exc)}): export it again") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape_in = list(inputs[0].shape) if len(inputs) == 1 else []
    shape_out = list(outputs[0].shape) if outputs else []
    sides = [d for d in shape_in[2:] if isinstance(d, int)]
    if len(shape_in) != 4 or shape_in[1] != model_config.in_channels or any(d != preprocess.image_size for d in sides):
        raise CheckpointError(
            f"{path} takes input of shape {shape_in}, not {preprocess.image_size} px images of "
            f"{model_config.in_channels} channel(s): it was not written by 'resnet export'"
        )
    if len(shape_out) != 2 or shape_out[1] != model_config.num_classes:
        raise CheckpointError(
            f"{path} gives output of shape {shape_out} for {model_config.num_classes} classes: the classes beside "
            "it belong to another model; export it again"
        )
    return OnnxWeights(path, model_config, classes, preprocess, session, origin, ema=meta.get("ema") == "true")


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Raises:
        CheckpointError: truncated or malformed file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a regular file: {PASS_INSTEAD}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types and OSError/ValueError
        raise CheckpointError(f"{path} is not a valid safetensors file ({_first_line(exc)}): export it again") from None
    return state, meta


def read_state_dict(path: str | os.PathLike[str], expected_parameters: int | None = None) -> dict[str, torch.Tensor]:
    """A state dict from any weights file, for ``--init``: our checkpoints and exports, or torchvision's,
    timm's and Lightning's files (``state_dict``/``model`` entries), with wrapper prefixes stripped.

    Args:
        expected_parameters: parameter count of the network the weights are for, when known: a file far
            larger than that needs is refused before it is loaded.

    Raises:
        CheckpointError: unreadable, hostile, holding no tensors, or holding NaN or infinity.
    """
    path = Path(path)
    if path.is_dir():
        path = resolve_weights_path(path)
    kind = identify_file(path)
    if _is_safetensors(path, kind.kind):
        state, _ = read_safetensors(path)
    elif kind.kind == "torch":
        data = load_checkpoint(path, expected_parameters=expected_parameters)
        state = data
        if isinstance(data, dict):
            # Our own checkpoints of an --ema run: the moving average, the weights of record (as eval uses).
            for key in ("ema", "model", "state_dict", "model_state_dict", "model_ema"):
                if isinstance(data.get(key), dict):
                    state = data[key]
                    break
    else:
        raise CheckpointError(not_weights_message(path, kind))
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    bad = non_finite_tensors(state)
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite weights ({bad[0]}): choose other weights to start from")
    return clean_state_dict(state)


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, source: str | Path) -> tuple[dict, list[str]]:
    """Fit a foreign state dict to ``model`` for fine-tuning.

    A classifier of another size is left out (the new one stays freshly initialised); a first convolution
    (or ViT patch embedding) for RGB is summed over its input channels for a greyscale model; a first
    convolution of another kernel size (the small-input stem) is left out; ViT position embeddings for another
    image size are interpolated (bicubic, torchvision's ``interpolate_embeddings``, as timm does). Anything else
    that does not match is an error.

    Returns:
        The state dict to load with ``strict=False`` and notes describing each adaptation.

    Raises:
        CheckpointError: keys or shapes that belong to another architecture.
    """
    target = model.state_dict()
    notes: list[str] = []
    state = _strip_lightning_prefix(state, target)
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and key in target:
            adapted[key] = value
            continue
        if key not in target:
            raise CheckpointError(
                f"{source} does not fit this architecture: it has {key!r}, which the model lacks "
                "(weights of another depth?): choose the matching --arch"
            )
        want = target[key].shape
        if value.shape == want:
            adapted[key] = value
        elif key.startswith(CLASSIFIERS):
            if "classifier" not in " ".join(notes):
                notes.append(f"classifier replaced: {value.shape[0]} -> {want[0]} classes")
        elif key in FIRST_LAYERS and value.shape[2:] == want[2:] and value.shape[1] == 3 and want[1] == 1:
            adapted[key] = value.sum(dim=1, keepdim=True)
            notes.append("first convolution summed over RGB for greyscale input")
        elif key == POSITIONS and value.ndim == 3 and value.shape[2] == want[2]:
            from resnet_cli.models.vit import resize_pos_embedding

            image_size, patch_size = int(getattr(model, "image_size")), int(getattr(model, "patch_size"))  # noqa: B009
            try:
                adapted[key] = resize_pos_embedding({key: value}, image_size, patch_size)[key]
            except ValueError as exc:  # a grid torchvision cannot interpolate (not square, or batched)
                raise CheckpointError(
                    f"{source}: cannot interpolate its position embeddings {tuple(value.shape)} to {tuple(want)} "
                    f"({_first_line(exc)}): choose weights of a square ViT"
                ) from None
            notes.append(f"position embeddings interpolated from {value.shape[1] - 1} to {want[1] - 1} patches")
        elif key == "conv1.weight":
            notes.append(f"first convolution left out: {tuple(value.shape)} does not fit {tuple(want)} (another stem)")
        else:
            raise CheckpointError(
                f"{source} does not fit this architecture: {key} has shape {tuple(value.shape)}, "
                f"the model needs {tuple(want)}: choose the matching --arch"
            )
    missing = [k for k in target if k not in adapted and not k.startswith(CLASSIFIERS) and k != "conv1.weight"]
    if missing:
        raise CheckpointError(
            f"{source} lacks {len(missing)} of the model's tensors, e.g. {missing[0]!r}: choose the matching --arch"
        )
    return adapted, notes


#: Key prefixes of the classifier (ResNet, ViT), the first layers and the ViT position embeddings, for --init.
CLASSIFIERS = ("fc.", "heads.head.")
FIRST_LAYERS = ("conv1.weight", "conv_proj.weight")
POSITIONS = "encoder.pos_embedding"


def _strip_lightning_prefix(state: dict[str, torch.Tensor], target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A LightningModule keeps the network as ``self.model``, so its keys read ``model.conv1.weight``: strip
    exactly one leading ``model.`` when every key has it and the stripped keys fit the network better."""
    prefix = "model."
    if not state or not all(k.startswith(prefix) for k in state):
        return state
    stripped = {k[len(prefix) :]: v for k, v in state.items()}
    if sum(k in target for k in stripped) > sum(k in target for k in state):
        return stripped
    return state


def find_manifest(
    weights: LoadedWeights, data: str | os.PathLike[str] | None, manifest: str | os.PathLike[str] | None
) -> Manifest:
    """The manifest to evaluate ``weights`` on: ``manifest``, else ``DATA/manifest.csv``, else the one the run
    trained on (:meth:`LoadedWeights.recorded_manifests`). The choice is :func:`resnet_cli.data.locate.locate_manifest`;
    this reads the weights' records for it.

    Raises:
        DatasetError: none can be found.
    """
    return locate_manifest(data, manifest, weights.recorded_manifests(), weights.source)


def read_run_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` a training run wrote in ``folder``, or ``None`` when there is none (or another file)."""
    path = folder / RUN_CONFIG_NAME
    try:
        if not path.is_file() or path.stat().st_size > 16 * 2**20:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not {"model", "preprocess", "classes"} <= set(doc):
        return None
    return doc


def _is_safetensors(path: Path, kind: str) -> bool:
    # A damaged file named .safetensors gets the safetensors reader, whose error says what is wrong with it.
    return kind == "safetensors" or (kind == "unknown" and path.suffix.lower() == ".safetensors")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
