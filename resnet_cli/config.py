"""Frozen configuration dataclasses (standard library only).

Every checkpoint and export carries :class:`ModelConfig`, the class list and :class:`PreprocessConfig`, so
``eval``, ``summary``, ``export`` and ``predict`` rebuild the model and its preprocessing without flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resnet_cli.errors import ConfigError

T = TypeVar("T", bound="_Dict")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Dict:
    """``to_dict``/``from_dict`` for plain-value dataclasses (tuples become lists in JSON and back)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict, ignoring keys this version does not know (files from newer versions)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for name, value in data.items():
            if name in fields:
                kwargs[name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None) -> Any:
    """A dataclass field that declares a command-line option once: its default and its help.

    Args:
        default: the field's default (immutable values only).
        help: the ``--help`` text, also the field's documentation.
        flag: the option's declaration where it is not ``--field-name`` (``--max-steps``, ``--hflip/--no-hflip``).
        short: a one-letter alias such as ``-e``.
    """
    metadata = {"help": help}
    if flag:
        metadata["flag"] = flag
    if short:
        metadata["short"] = short
    return field(default=default, metadata=metadata)


#: The one ``--workers`` policy (train and eval data loading, split's image verification), stated once.
WORKERS_HELP = "Processes reading and decoding images (0: this process) [default: 0 on <= 2 CPUs, else min(4, CPUs-1)]."


def resolve_workers(requested: int | None, purpose: str = "data loading", *, cpus: int | None = None) -> int:
    """How many worker processes to use: ``requested`` when given, else the automatic choice of :data:`WORKERS_HELP`.

    Automatic is 0 (work in this process) on two CPUs or fewer, where a worker only competes with the main
    process, else ``min(4, CPUs - 1)``: one CPU stays with the main process (the training step, or collecting
    results), and beyond four the gain is small while memory grows with every worker (each holds its own copy of
    the file list and its prefetched batches, or a decoded image of up to ~270 MB at Pillow's pixel limit).

    Args:
        requested: ``--workers``; ``None`` chooses automatically.
        purpose: what the workers do, for the error message.
        cpus: the CPUs available (default: those this process may run on).

    Raises:
        ConfigError: a negative or non-integer count.
    """
    if requested is None:
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 0 if cpus <= 2 else min(4, cpus - 1)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ConfigError(f"--workers ({purpose}) must be 0 or more, got {requested!r}")
    return requested


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, _Dict):
        return value.to_dict()
    return value


@dataclass(frozen=True)
class ModelConfig(_Dict):
    """What it takes to rebuild a network."""

    arch: str = "resnet34"  # canonical name, see resnet_cli.models.list_models()
    num_classes: int = 1000
    in_channels: int = 3  # 1 for greyscale data
    small_input: bool = False  # 3x3 stride-1 stem without max-pool: train turns it on at 64 px or less
    image_size: int | None = None  # ViTs only: the input side their position embeddings are built for


@dataclass(frozen=True)
class PreprocessConfig(_Dict):
    """How an image file becomes the network's input; recorded at training time, applied by eval and predict."""

    image_size: int = 224  # side of the square the network sees
    resize_size: int = 256  # eval: shorter side resized to this, then centre-cropped to image_size
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    normalize: str = "imagenet"  # where mean/std came from: "imagenet" or "dataset"
    augment: str = "rrc"  # train only: "rrc", "crop", "none", or a policy ("randaugment", ...) on crop/rrc
    hflip: bool = False  # train only: random horizontal flip (off by default: wrong for digits and text)
    random_erasing: float = 0.0  # train only: probability of erasing a random rectangle (after normalisation)
    background: int = 255  # grey level alpha channels are composited on (white)


@dataclass(frozen=True)
class TrainConfig(_Dict):
    """Options of ``resnet train``, each declared once: its default, and in ``metadata`` the help the CLI shows
    (plus the flag and short alias where they differ from ``--field-name``). ``None`` means "choose
    automatically"; the run's config.json records the resolved values."""

    data: str = option("data", "ImageFolder root holding the split manifest.", short="-d")
    manifest: str | None = option(None, "Manifest CSV [default: DATA/manifest.csv].")
    arch: str = option(
        "resnet34", "18, 34, 50, 101, 152, or a ViT such as vit-s/16 ('resnet summary --list').", short="-a"
    )
    out: str | None = option(None, "Run folder [default: `runs/rDEPTH`].", short="-o")
    epochs: int = option(30, "Maximum epochs (early stopping may end sooner).", short="-e")
    train_fraction: float = option(
        1.0, "Train on this seeded, stratified fraction of the train part (0.1 lies inside 0.3); val stays whole."
    )
    batch_size: int = option(64, "Images per batch.", short="-b")
    # Per-family defaults (None) are resolved by resnet_cli.engine.recipe and recorded in config.json.
    optimizer: str | None = option(None, "adamw, or sgd (momentum 0.9, Nesterov) [default: adamw].")
    lr: float | None = option(
        None, "Peak learning rate [default: AdamW 1e-3 for ResNets, 5e-4 for ViTs; SGD 0.1 x batch/256]."
    )
    weight_decay: float | None = option(
        None, "Weight decay, not on norms, biases or embeddings [default: 0.05 with AdamW, 1e-4 with SGD]."
    )
    schedule: str | None = option(None, "plateau, cosine or step [default: plateau for ResNets, cosine for ViTs].")
    warmup_epochs: int | None = option(
        None, "Epochs of linear LR warm-up [default: 0 for ResNets; ViTs min(5, epochs/6)]."
    )
    clip_grad: float = option(0.0, "Clip the gradient norm to this (0: off).")
    image_size: int | None = option(None, "Input side in px [default: from the images; 224 for photos].")
    in_channels: int | None = option(None, "1 or 3 [default: 1 if all images are greyscale].")
    small_input: bool | None = option(
        None, "3x3 stride-1 stem [default: on for <= 64 px].", flag="--small-input/--no-small-input"
    )
    augment: str | None = option(
        None,
        "rrc, crop, none, or a policy on top of crop/rrc: randaugment, trivialaugment, autoaugment "
        "[default: ResNets crop for <= 64 px, else rrc; ViTs randaugment].",
    )
    # Off by default: flipping is wrong for digits and text.
    hflip: bool = option(False, "Random horizontal flips.", flag="--hflip/--no-hflip")
    normalize: str = option("imagenet", "imagenet, or dataset (train-part mean/std).")
    patience: int = option(8, "Early stopping: epochs without val-loss gain.")
    min_delta: float = option(0.0, "Early stopping: smallest gain that counts.")
    lr_patience: int = option(3, "Epochs of plateau before lowering the LR.")  # ReduceLROnPlateau on val loss
    lr_factor: float = option(0.1, "LR multiplier on a plateau, and at each step of --schedule step.")
    min_lr: float = option(1e-6, "Lowest learning rate.")
    label_smoothing: float | None = option(
        None, "Cross-entropy label smoothing [default: 0 for ResNets, 0.1 for ViTs]."
    )
    mixup: float | None = option(None, "MixUp alpha (0: off) [default: 0 for ResNets, 0.8 for ViTs].")
    cutmix: float | None = option(None, "CutMix alpha (0: off) [default: 0 for ResNets, 1.0 for ViTs].")
    random_erasing: float | None = option(
        None, "Random-erasing probability (0: off) [default: 0 for ResNets, 0.25 for ViTs]."
    )
    drop_path: float | None = option(None, "Stochastic-depth rate [default: 0 for ResNets, 0.1 for ViTs].")
    ema: float = option(0.0, "Keep an exponential moving average of the weights with this decay, e.g. 0.999 (0: off).")
    zero_init_residual: bool = option(False, "Zero-init each block's last BatchNorm.")
    seed: int = option(42, "Seed of initialisation, order and augmentation.")
    workers: int | None = option(None, WORKERS_HELP, short="-j")
    cache_images: bool = option(
        False,
        "Keep the decoded images in RAM (decoded once, before the first epoch).",
        flag="--cache-images/--no-cache-images",
    )
    decode: str = option(
        "auto",
        "Where JPEGs are decoded: cpu, gpu (CUDA, batched) or auto "
        "(gpu when training on CUDA and the images are JPEG).",
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    gpus: tuple[int, ...] = option((), "DataParallel over these CUDA devices, e.g. 0,1.")
    precision: str = option("auto", "auto, fp32, bf16 or fp16.")
    channels_last: bool | None = option(
        None, "Memory format [default: on for CUDA].", flag="--channels-last/--no-channels-last"
    )
    compile: bool = option(False, "torch.compile the model.")
    init: str | None = option(None, "Start from these weights (torchvision/timm .pth, .pt or .safetensors).")
    save_every: int = option(0, "Also checkpoint every N steps within an epoch.")
    max_steps_per_epoch: int = option(0, "Cap on steps per epoch (smoke tests; 0: none).", flag="--max-steps")


@dataclass(frozen=True)
class SplitConfig(_Dict):
    """Options of ``resnet split``."""

    val: float = 0.2  # fraction of each class for validation (> 0)
    test: float = 0.0  # fraction of each class held out for the final test (0: no test part)
    seed: int = 42
    skip_bad: bool = False  # leave unreadable images out (recorded) instead of failing
    dedupe: bool = False  # keep one file of each group of byte-identical files
    drop_small: bool = False  # leave out classes too small to have an image in every part (recorded)
    out: str | None = None  # manifest path; default <data>/manifest.csv
    force: bool = False  # replace an existing manifest
    workers: int | None = None  # processes verifying images; default: see resolve_workers


#: What a run's config.json holds that a repeat of the run takes afresh: its folder, and the worker count (this
#: machine's choice; the result does not depend on it).
_NOT_REPEATED = ("out", "workers")


def read_train_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training options in a TOML file, or in a run's config.json (to repeat that run).

    A TOML file holds :class:`TrainConfig` field names as keys (``batch_size`` or ``batch-size``; a flag's own
    name such as ``max-steps`` works too). A run's config.json gives the options its run resolved, so automatic
    choices (image size, channels, augmentation, precision) repeat as the run made them; its folder and worker
    count are left out. Relative paths are read from the working directory, as on the command line.

    Returns:
        field name -> value, only the options the file gives, checked against the fields' types.

    Raises:
        ConfigError: a missing or unreadable file, unknown keys (all named), or a value of the wrong type.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: pass a TOML file or a run's config.json") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        doc = _parse_json(path, raw)
        if isinstance(doc.get("train"), dict):  # a run's config.json: its resolved options
            doc = {k: v for k, v in doc["train"].items() if k not in _NOT_REPEATED}
    else:
        doc = _parse_toml(path, raw)
    return _check_options(path, doc)


def _parse_json(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): pass a TOML file or a run's config.json") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold an object of training options, not {type(doc).__name__}")
    return doc


def _parse_toml(path: Path, raw: bytes) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # tomli is the same parser, installed as a dependency on Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(f"reading {path} needs Python 3.11 or the tomli package: pip install tomli") from None
    try:
        doc: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: a config file is TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return doc


def _check_options(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    names = {name: name for name in fields} | {name.replace("_", "-"): name for name in fields}
    for name, f in fields.items():  # flag names, such as max-steps
        if "flag" in f.metadata:
            names.setdefault(f.metadata["flag"].split("/")[0].removeprefix("--"), name)
    unknown = sorted(key for key in doc if key not in names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)}; keys are the options of "
            "'resnet train --help' (batch_size or batch-size)"
        )
    hints = typing.get_type_hints(TrainConfig)
    options: dict[str, Any] = {}
    for key, value in doc.items():
        name = names[key]
        if name in options:
            raise ConfigError(f"{path} gives {name} twice (as {key} and another spelling): keep one")
        options[name] = _typed(path, key, value, hints[name])
    return options


def _typed(path: Path, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type wants it (ints as floats, lists as tuples), or a ConfigError naming ``key``."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None and optional:
        return None
    if base is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif base is int:
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif base is float:
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif base is str:
        ok, expected = isinstance(value, str), "a string"
    else:  # tuple[int, ...]
        ok, expected = (
            isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
            "a list of integers, such as [0, 1]",
        )
        value = tuple(value) if ok else value
    if not ok:
        automatic = " (leave it out to choose automatically)" if optional else ""
        raise ConfigError(f"{key} in {path} must be {expected}{automatic}, got {value!r}")
    return value
