"""``fit``: the training loop, with validation every epoch, early stopping and exact resume.

Exact resume: the checkpoint holds every piece of state the rest of the run depends on (weights,
optimiser, scheduler, early stopping, AMP scaler, RNG states, the position inside the epoch and the epoch's
running sums). Data order comes from ``(seed, epoch)`` and each sample's augmentation from
``(seed, epoch, index)`` (see :mod:`resnet_cli.data.dataset`), so a run stopped at any point, even by
SIGKILL, and resumed from its ``last.pt`` ends with the same weights, bit for bit, on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnet_cli import __version__
from resnet_cli.config import ModelConfig, PreprocessConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, compute_mean_std, make_loader
from resnet_cli.data.split import Manifest, ManifestRow, default_manifest_path, read_manifest
from resnet_cli.data.transforms import eval_transform, train_transform
from resnet_cli.engine import distributed
from resnet_cli.engine.callbacks import BatchStats, Callback, CallbackList, PrintProgress, StopRequest
from resnet_cli.engine.device import (
    Placement,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from resnet_cli.engine.distributed import DistInfo
from resnet_cli.engine.inference import AutocastForward, predict_batches, to_device
from resnet_cli.engine.run_dir import (
    RUN_FILES,
    check_new_run_folder,
    cleanup_failed_start,
    clear_run,
    data_fingerprint,
    data_stat,
    ensure_folder,
    latest_run_dir,
    numbered_run_dir,
    verify_data_unchanged,
    write_data_stat,
)
from resnet_cli.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    Interrupted,
    OutputExistsError,
    ResnetError,
    RunBusyError,
    RunFailedError,
)
from resnet_cli.fs import atomic_write_bytes, atomic_write_text, record_owned, remove_stale_temporaries, run_lock
from resnet_cli.io.checkpoint import read_project_checkpoint, save_checkpoint
from resnet_cli.io.history import HISTORY_NAME, EpochRecord, write_history
from resnet_cli.io.weights import adapt_state_dict, read_state_dict
from resnet_cli.models import build_model, canonical_arch, depth_of

#: Options a resumed run may change; everything else must match the checkpoint.
RESUMABLE_OVERRIDES = frozenset(
    {"epochs", "patience", "min_delta", "workers", "device", "gpus", "save_every", "max_steps_per_epoch", "compile"}
)

SIGNAL_NAMES = {2: "SIGINT", 15: "SIGTERM"}

#: A parameter larger than this in magnitude means the run has blown up (trained ResNets stay below ~10).
MAX_SANE_WEIGHT = 1e6


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run reports."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    stop_reason: str  # "completed" or "early_stop"
    history: list[EpochRecord]
    placement: str
    precision: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {
            "run_dir": str(self.run_dir),
            "epochs_run": self.epochs_run,
            "stop_reason": self.stop_reason,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "best_val_acc": self.best_val_acc,
            "final": last.to_dict() if last else None,
            "placement": self.placement,
            "precision": self.precision,
            "checkpoints": {"best": str(self.run_dir / "best.pt"), "last": str(self.run_dir / "last.pt")},
        }


def default_run_dir(arch: str) -> Path:
    return Path("runs") / f"r{depth_of(arch)}"


def check_options(config: TrainConfig) -> None:
    """Cheap checks that need neither data nor devices.

    Raises:
        ConfigError: an impossible value, named with what would work.
    """
    canonical_arch(config.arch)
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (math.isfinite(config.lr) and config.lr > 0, f"--lr must be a positive number, got {config.lr}"),
        (config.weight_decay >= 0, f"--weight-decay must be 0 or more, got {config.weight_decay}"),
        (config.patience >= 1, f"--patience must be at least 1 epoch, got {config.patience}"),
        (config.min_delta >= 0, f"--min-delta must be 0 or more, got {config.min_delta}"),
        (config.lr_patience >= 0, f"--lr-patience must be 0 or more, got {config.lr_patience}"),
        (0 < config.lr_factor < 1, f"--lr-factor must be between 0 and 1 (exclusive), got {config.lr_factor}"),
        (config.min_lr >= 0, f"--min-lr must be 0 or more, got {config.min_lr}"),
        (0 <= config.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {config.label_smoothing}"),
        (config.workers is None or config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
        (config.save_every >= 0, f"--save-every must be 0 or more steps, got {config.save_every}"),
        (config.max_steps_per_epoch >= 0, f"--max-steps must be 0 or more, got {config.max_steps_per_epoch}"),
        (config.image_size is None or config.image_size > 0, f"--image-size must be positive, got {config.image_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def default_workers() -> int:
    # Decoding runs beside the training threads; on a two-core machine a worker only competes with them.
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


def resume_config(run_dir: str | os.PathLike[str], overrides: dict[str, Any]) -> TrainConfig:
    """The configuration of the run in ``run_dir`` with the allowed ``overrides`` applied.

    Raises:
        CheckpointError: nothing to resume.
        ConfigError: an override that would change what the run is (names the difference).
    """
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"nothing to resume in {run_dir}: no last.pt there (leave out --resume to start a run)")
    saved = TrainConfig.from_dict(read_project_checkpoint(last)["config"])
    changes = {}
    for key, value in overrides.items():
        if key == "out" or value is None or (key == "precision" and value == "auto"):
            continue  # "choose automatically" repeats what the run already chose
        old = getattr(saved, key)
        if key == "arch":
            value, old = canonical_arch(value), canonical_arch(old)
        if key in ("data", "manifest") and value is not None and old is not None:
            same = Path(value).resolve() == Path(old).resolve()
            if not same:
                raise ConfigError(
                    f"cannot resume with --{key} {value}: the run in {run_dir} trained on {old}; "
                    "start a new run with --out"
                )
            continue
        if value != old and key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"cannot change --{key.replace('_', '-')} when resuming (the run used {old!r}, got {value!r}): "
                "start a new run with --out"
            )
        changes[key] = value
    return replace(saved, **changes)


def fit(
    config: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    stop: StopRequest | None = None,
    dist: DistInfo | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a ResNet on a manifest's train part, validating on its val part every epoch.

    Every check (options, device, data, manifest, ``init`` weights, the run folder) runs before the run
    folder is touched; a start that fails before the first checkpoint leaves nothing behind. The run folder
    is locked for the whole run (one writer at a time).

    Args:
        config: the run's options; ``config.out`` is the run folder (default ``runs/rDEPTH``, numbered
            ``runs/rDEPTH-2``, ... when that one is taken).
        resume: continue the run in ``config.out`` from its ``last.pt`` (CLI ``--resume``).
        force: start over in a folder that holds a run, removing only the files that run recorded as its own
            (CLI ``--force``).
        callbacks: progress hooks (see :class:`resnet_cli.engine.callbacks.Callback`).
        stop: set it (e.g. from a signal handler) to stop after the current step with a resumable checkpoint.
        dist: this process's place under torchrun.
        progress: also print plain progress lines on stderr (for notebooks and scripts).

    Raises:
        ConfigError, DeviceError, DatasetError, CheckpointError, OutputExistsError, RunBusyError: bad options
            or input.
        RunFailedError: non-finite loss or weights, out of memory, or a failed write.
        Interrupted: ``stop`` was requested; a resumable ``last.pt`` was written first.
    """
    dist = dist or DistInfo()
    stop = stop or StopRequest()
    callbacks = list(callbacks)
    if progress:
        callbacks.append(PrintProgress())
    check_options(config)
    # Devices first: a missing GPU is reported before any data is scanned.
    device, gpus = resolve_device(config.device, tuple(config.gpus))
    if dist.enabled:
        if gpus:
            raise ConfigError("--gpus (DataParallel) cannot be combined with torchrun: leave out --gpus")
        if device.type == "cuda":
            device = torch.device(f"cuda:{dist.local_rank}")
            torch.cuda.set_device(device)
    placement = Placement(
        device, gpus, resolve_precision(config.precision, device), resolve_channels_last(config.channels_last, device)
    )
    arch = canonical_arch(config.arch)
    if config.out:
        run_dir = Path(config.out)
    elif resume:
        run_dir = latest_run_dir(default_run_dir(arch))
    elif dist.enabled:
        run_dir = default_run_dir(arch)  # every rank must name the same folder without talking first
    else:
        run_dir = numbered_run_dir(default_run_dir(arch))
    distributed.init(dist, device)
    try:
        with contextlib.ExitStack() as hold:
            return _fit(config, resume, force, callbacks, stop, dist, device, gpus, placement, arch, run_dir, hold)
    finally:
        distributed.shutdown(dist)


def _fit(
    config: TrainConfig,
    resume: bool,
    force: bool,
    callbacks: list[Callback],
    stop: StopRequest,
    dist: DistInfo,
    device: torch.device,
    gpus: tuple[int, ...],
    placement: Placement,
    arch: str,
    run_dir: Path,
    hold: contextlib.ExitStack,
) -> TrainResult:
    state = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise CheckpointError(
                f"nothing to resume in {run_dir}: no last.pt there (leave out --resume to start a run"
                + (", with --force to replace what is there)" if run_dir.is_dir() and any(run_dir.iterdir()) else ")")
            )
        if dist.is_main:
            hold.enter_context(run_lock(run_dir, "train --resume"))
        state = read_project_checkpoint(run_dir / "last.pt")
        if state.get("loader") is None:
            raise CheckpointError(f"{run_dir / 'last.pt'} is not resumable (no training state): start a new run")

    # Every check that needs no folder runs here, before the run folder is touched.
    manifest = _load_manifest(config)
    train_rows, val_rows = manifest.part("train"), manifest.part("val")
    if not train_rows or not val_rows:
        raise DatasetError(f"{manifest.path} has {len(train_rows)} train and {len(val_rows)} val images: split again")

    from resnet_cli.data.preprocess import resolve as resolve_preprocess

    if state is not None:
        pre = PreprocessConfig.from_dict(state["preprocess"])
        model_config = ModelConfig.from_dict(state["model_config"])
        _check_resume_matches(state, manifest, arch, run_dir)
        stat_table = verify_data_unchanged(run_dir, manifest) if dist.is_main else []
        fingerprint = data_fingerprint(manifest)
    else:
        pre, small = resolve_preprocess(config, train_rows)
        model_config = ModelConfig(arch, len(manifest.classes), pre.in_channels, small)
        stat_table = data_stat(manifest)
        fingerprint = data_fingerprint(manifest)

    cb = CallbackList(callbacks if dist.is_main else ())
    seed = config.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_model(
        arch, model_config.num_classes, model_config.in_channels, model_config.small_input, config.zero_init_residual
    )
    init_notes = _load_init(model, config.init) if state is None and config.init else []

    created = False
    if state is None:
        # Rank 0 owns the folder; the others learn its verdict, so no rank is left waiting in a collective.
        refusal: ResnetError | None = None
        if dist.is_main:
            try:
                folder = check_new_run_folder(run_dir, force)
                created = ensure_folder(run_dir)
                hold.enter_context(run_lock(run_dir, "train"))
                if folder.is_run:
                    clear_run(run_dir)
            except (OutputExistsError, ConfigError, RunBusyError) as exc:
                refusal = exc
        if distributed.any_rank([refusal is not None], dist, device)[0]:
            raise refusal or OutputExistsError(f"rank 0 refused the run folder {run_dir}: see its message")
    if dist.is_main:
        remove_stale_temporaries(run_dir)
    try:
        return _train(
            config, state, cb, stop, dist, device, gpus, placement, arch, run_dir, manifest, pre, model_config,
            model, init_notes, stat_table, fingerprint,
        )  # fmt: skip
    except BaseException as exc:
        if state is None and dist.is_main and not isinstance(exc, Interrupted):
            cleanup_failed_start(run_dir, created)
        raise


def _train(
    config: TrainConfig,
    state: dict[str, Any] | None,
    cb: CallbackList,
    stop: StopRequest,
    dist: DistInfo,
    device: torch.device,
    gpus: tuple[int, ...],
    placement: Placement,
    arch: str,
    run_dir: Path,
    manifest: Manifest,
    pre: PreprocessConfig,
    model_config: ModelConfig,
    model: nn.Module,
    init_notes: list[str],
    stat_table: list[list[Any]],
    fingerprint: str,
) -> TrainResult:
    train_rows, val_rows = manifest.part("train"), manifest.part("val")
    seed = config.seed
    workers = config.workers if config.workers is not None else default_workers()
    if dist.is_main:
        record_owned(run_dir, RUN_FILES)
        if stat_table:
            write_data_stat(run_dir, stat_table)
        if state is None or not (run_dir / "manifest.csv").exists():
            atomic_write_bytes(run_dir / "manifest.csv", manifest.path.read_bytes())

    if state is None and pre.normalize == "dataset":
        stats_set = ManifestDataset(
            manifest.root,
            train_rows,
            manifest.classes,
            eval_transform(pre, normalize=False),
            pre.in_channels,
            pre.background,
        )
        mean, std = compute_mean_std(stats_set, config.batch_size, workers)
        pre = replace(pre, mean=mean, std=std)
    resolved = replace(
        config,
        arch=arch,
        out=str(run_dir),
        image_size=pre.image_size,
        in_channels=pre.in_channels,
        small_input=model_config.small_input,
        augment=pre.augment,
        workers=workers,
        precision=placement.precision,
        channels_last=placement.channels_last,
        manifest=str(manifest.path.resolve()),
        data=str(manifest.root.resolve()),
        gpus=tuple(gpus),
    )

    train_set = ManifestDataset(
        manifest.root, train_rows, manifest.classes, train_transform(pre), pre.in_channels, pre.background
    )
    val_set = ManifestDataset(
        manifest.root, val_rows, manifest.classes, eval_transform(pre), pre.in_channels, pre.background
    )
    # The honest side of the generalisation gap: a fixed, stratified train subset as large as val, measured
    # like val (eval mode, no augmentation), not the running averages over augmented batches.
    probe_rows = train_subset(train_rows, len(val_rows), seed)
    probe_set = ManifestDataset(
        manifest.root, probe_rows, manifest.classes, eval_transform(pre), pre.in_channels, pre.background
    )
    train_sampler = EpochBatchSampler(
        len(train_set), config.batch_size, seed, True, dist.rank, dist.world_size, train=True
    )
    val_sampler = EpochBatchSampler(
        len(val_set), config.batch_size, seed, False, dist.rank, dist.world_size, train=False
    )
    probe_sampler = EpochBatchSampler(
        len(probe_set), config.batch_size, seed, False, dist.rank, dist.world_size, train=False
    )
    pin = device.type == "cuda"
    train_loader = make_loader(train_set, train_sampler, workers, seed, pin)
    val_loader = make_loader(val_set, val_sampler, workers, seed + 1, pin)
    probe_loader = make_loader(probe_set, probe_sampler, workers, seed + 2, pin)

    for note in init_notes:
        cb.on_message(f"--init {config.init}: {note}")
    model.to(device)
    if placement.channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    scaler = torch.amp.GradScaler(device.type, enabled=placement.uses_scaler)
    stopper = EarlyStopping(config.patience, config.min_delta)
    history: list[EpochRecord] = []
    start_epoch, start_step = 0, 0
    partial = _Loop.fresh_partial()
    best = {"epoch": 0, "val_loss": math.inf, "val_acc": 0.0}

    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        history = [EpochRecord(**r) for r in state["history"]]
        best = dict(state["best"])
        loader_state = state["loader"]
        start_epoch = int(state["epoch"])
        start_step = int(loader_state["batches_done"])
        partial = dict(state["partial"])
        if start_step and (
            loader_state["world_size"] != dist.world_size or loader_state["batch_size"] != config.batch_size
        ):
            raise ConfigError(
                f"{run_dir / 'last.pt'} was saved mid-epoch by {loader_state['world_size']} process(es) with batch "
                f"size {loader_state['batch_size']}: resume with the same, or from an epoch-end checkpoint"
            )
        _set_rng_state(state["rng"])
        if "loader_generator" in state["rng"]:
            train_loader.generator.set_state(state["rng"]["loader_generator"])
        limit = max(int(state["config"]["epochs"]), start_epoch)  # where the saved run ends
        finished = (stopper.stopped or start_epoch >= limit) and not start_step
        if finished and config.epochs <= limit:
            if (run_dir / "run.json").is_file():
                raise ConfigError(
                    f"the run in {run_dir} already finished after {start_epoch} epochs: pass --epochs with more "
                    f"than {limit} to extend it"
                )
            cb.on_message(f"{run_dir} had finished its last epoch when it stopped: writing its summary")
        else:
            if finished and stopper.stopped:
                stopper.reset()
                cb.on_message(f"extending an early-stopped run from epoch {start_epoch} to {config.epochs}")
            cb.on_message(f"resumed {run_dir} at epoch {start_epoch + 1}, step {start_step}")

    # `local` runs this process's forward (over its GPUs with DataParallel) and validates; DDP wraps it for
    # training only, so validation never enters DDP's collectives (a rank may hold no validation images).
    local: nn.Module = AutocastForward(model, placement)
    if placement.gpus:
        local = nn.DataParallel(local, device_ids=list(placement.gpus))
    net = local
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(local, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
        local = net if not dist.enabled else local
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    run_config = _run_config(resolved, model_config, pre, manifest, fingerprint, placement, dist)
    run_config["train_subset"] = {"images": len(probe_rows), "seed": seed}
    if dist.is_main:
        atomic_write_text(run_dir / "config.json", json.dumps(run_config, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(run_dir / "classes.json", json.dumps(manifest.classes, indent=2, ensure_ascii=False) + "\n")
    cb.on_train_start(
        {
            "run_dir": str(run_dir),
            "placement": placement.describe(),
            "model": model_config.to_dict(),
            "preprocess": pre.to_dict(),
            "train_images": len(train_rows),
            "val_images": len(val_rows),
            "train_subset_images": len(probe_rows),
            "epochs": config.epochs,
            "workers": workers,
            "world_size": dist.world_size,
            "network": model,  # the bare nn.Module being trained, for callbacks that inspect it
        }
    )

    loop = _Loop(
        config=config, resolved=resolved, net=net, local=local, model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=scaler, stopper=stopper, criterion=criterion, placement=placement, dist=dist, cb=cb, stop=stop,
        run_dir=run_dir, model_config=model_config, pre=pre, manifest=manifest, fingerprint=fingerprint,
        history=history, best=best, train_loader=train_loader, val_loader=val_loader, probe_loader=probe_loader,
        train_sampler=train_sampler, saved=(start_epoch, start_step),
    )  # fmt: skip
    stop_reason = loop.run(start_epoch, start_step, partial)
    result = TrainResult(
        run_dir=run_dir,
        epochs_run=len(loop.history),
        best_epoch=int(loop.best["epoch"]),
        best_val_loss=float(loop.best["val_loss"]),
        best_val_acc=float(loop.best["val_acc"]),
        stop_reason=stop_reason,
        history=loop.history,
        placement=placement.describe(),
        precision=placement.precision,
        config=run_config,
    )
    if dist.is_main:
        atomic_write_text(run_dir / "run.json", json.dumps({**result.to_dict(), "finished": True}, indent=2) + "\n")
    cb.on_train_end(result)
    return result


def train_subset(rows: Sequence[ManifestRow], size: int, seed: int) -> list[ManifestRow]:
    """A fixed, seeded subset of ``rows`` of ``size`` images, stratified by class where the classes allow it."""
    rows = list(rows)
    if size >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    indices = list(range(len(rows)))
    labels = [r.label for r in rows]
    try:
        chosen, _ = train_test_split(indices, train_size=size, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify (or more classes than images)
        chosen, _ = train_test_split(indices, train_size=size, random_state=seed)
    return [rows[i] for i in sorted(chosen)]


class EarlyStopping:
    """Stop when validation loss has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_epochs = 0
        self.stopped = False

    def step(self, value: float) -> bool:
        """Record an epoch's validation loss; returns True when it improved."""
        if value < self.best - self.min_delta:
            self.best = value
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped = True
        return False

    def reset(self) -> None:
        self.bad_epochs = 0
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped = bool(state["stopped"])


@dataclass
class _Loop:
    """The epoch loop's state and steps (kept apart from ``fit``'s set-up)."""

    config: TrainConfig
    resolved: TrainConfig
    net: nn.Module  # what trains (possibly DDP- and compile-wrapped)
    local: nn.Module  # what validates: this process's forward, without DDP
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    stopper: EarlyStopping
    criterion: nn.Module
    placement: Placement
    dist: DistInfo
    cb: Callback
    stop: StopRequest
    run_dir: Path
    model_config: ModelConfig
    pre: PreprocessConfig
    manifest: Manifest
    fingerprint: str
    history: list[EpochRecord]
    best: dict[str, Any]
    train_loader: Any
    val_loader: Any
    probe_loader: Any  # the fixed train subset, measured like val
    train_sampler: EpochBatchSampler
    saved: tuple[int, int]  # (epoch, step) that last.pt holds: epoch-end after `epoch` + `step` steps of the next

    def run(self, start_epoch: int, start_step: int, partial: dict[str, Any]) -> str:
        for epoch in range(start_epoch + 1, self.config.epochs + 1):
            if self.stopper.stopped:
                break
            record, improved = self._epoch(epoch, start_step, partial)
            start_step, partial = 0, self.fresh_partial()
            self.history.append(record)
            if improved:
                self.best = {"epoch": epoch, "val_loss": record.val_loss, "val_acc": record.val_acc}
            lr_before = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step(record.val_loss)
            lr_after = self.optimizer.param_groups[0]["lr"]
            if self.dist.is_main:
                # best.pt first: a crash in between leaves last.pt one epoch behind, which resumes exactly.
                self._save(epoch, 0, self.fresh_partial(), best=improved)
                write_history(self.run_dir / HISTORY_NAME, self.history)
            distributed.barrier(self.dist)
            self.cb.on_epoch_end(record, improved)
            if lr_after < lr_before:
                self.cb.on_message(f"validation loss plateaued: learning rate {lr_before:.3g} -> {lr_after:.3g}")
            if self.stopper.stopped:
                self.cb.on_message(
                    f"early stop after epoch {epoch}: no validation-loss improvement for {self.stopper.patience} epochs"
                )
        return "early_stop" if self.stopper.stopped else "completed"

    @staticmethod
    def fresh_partial() -> dict[str, Any]:
        return {"loss_sum": 0.0, "correct": 0, "seen": 0, "train_time": 0.0, "epoch_time": 0.0, "lr": None}

    def _epoch(self, epoch: int, start_step: int, partial: dict[str, Any]) -> tuple[EpochRecord, bool]:
        sampler = self.train_sampler
        sampler.set_epoch(epoch, 0)
        steps = sampler.total_batches()
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        sampler.set_epoch(epoch, start_step)
        lr = self.optimizer.param_groups[0]["lr"]
        partial["lr"] = partial.get("lr") or lr
        self.cb.on_epoch_start(epoch, self.config.epochs, steps)
        epoch_start = time.perf_counter() - partial["epoch_time"]
        step = start_step
        if step < steps:
            step = self._train_steps(epoch, step, steps, partial, epoch_start)
        partial["epoch_time"] = time.perf_counter() - epoch_start

        self.cb.on_validation_start(epoch, len(self.val_loader))
        loss_sum, correct, seen = self._measure(self.val_loader, self.cb)
        probe = self._measure(self.probe_loader, None)
        self._check_stop(epoch, steps, partial, epoch_start)
        loss_sum, correct, seen, *probe = distributed.all_sum(
            [loss_sum, correct, seen, *probe], self.dist, self.placement.device
        )
        totals = distributed.all_sum(
            [partial["loss_sum"], partial["correct"], partial["seen"]], self.dist, self.placement.device
        )
        val_loss = loss_sum / max(seen, 1)
        if not math.isfinite(val_loss):
            raise RunFailedError(
                f"validation loss is {val_loss} after epoch {epoch}: the run diverged; last.pt still holds epoch "
                f"{epoch - 1}: lower --lr or use --precision fp32"
            )
        improved = self.stopper.step(val_loss)
        record = EpochRecord(
            epoch=epoch,
            train_loss=totals[0] / max(totals[2], 1),
            train_acc=totals[1] / max(totals[2], 1),
            val_loss=val_loss,
            val_acc=correct / max(seen, 1),
            lr=float(partial["lr"]),
            epoch_time=time.perf_counter() - epoch_start,
            images_per_s=totals[2] / max(partial["train_time"], 1e-9),
            train_eval_loss=probe[0] / max(probe[2], 1),
            train_eval_acc=probe[1] / max(probe[2], 1),
        )
        return record, improved

    def _measure(self, loader: Any, cb: Callback | None) -> tuple[float, int, int]:
        """Summed cross-entropy, correct predictions and images of ``loader``, in eval mode."""
        loss_sum, correct, seen = 0.0, 0, 0
        for logits, targets in predict_batches(self.local, loader, self.placement, cb, self.stop):
            loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
        return loss_sum, correct, seen

    def _train_steps(self, epoch: int, step: int, steps: int, partial: dict[str, Any], epoch_start: float) -> int:
        self.net.train()
        tick = time.perf_counter()
        for x, y in self.train_loader:
            step += 1
            x = to_device(x, self.placement)
            y = y.to(self.placement.device, non_blocking=True)
            try:
                logits = self.net(x)
                loss = self.criterion(logits.float(), y)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                raise self._out_of_memory(exc, epoch, step) from None
            loss_value = float(loss.detach())
            bad = not math.isfinite(loss_value)
            if self.config.label_smoothing:
                # History reports plain cross-entropy, comparable with validation loss (the overfitting picture);
                # the optimiser still minimises the smoothed loss.
                with torch.no_grad():
                    reported = float(nn.functional.cross_entropy(logits.detach().float(), y))
            else:
                reported = loss_value
            flags = distributed.any_rank([bad, self.stop.requested], self.dist, self.placement.device)
            if flags[0]:
                raise RunFailedError(
                    f"loss became {loss_value} at epoch {epoch}, step {step}: the run diverged; {self._kept()}: "
                    f"lower --lr (it is {self.optimizer.param_groups[0]['lr']:.3g}) or use --precision fp32"
                )
            self.optimizer.zero_grad(set_to_none=True)
            try:
                self.scaler.scale(loss).backward()
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                raise self._out_of_memory(exc, epoch, step) from None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            batch = len(y)
            partial["loss_sum"] += reported * batch
            partial["correct"] += int((logits.detach().argmax(1) == y).sum())
            partial["seen"] += batch
            now = time.perf_counter()
            partial["train_time"] += now - tick
            tick = now
            self.cb.on_batch_end(
                epoch,
                BatchStats(
                    step=step,
                    steps=steps,
                    loss=partial["loss_sum"] / partial["seen"],
                    accuracy=partial["correct"] / partial["seen"],
                    images_per_s=partial["seen"] / max(partial["train_time"], 1e-9),
                ),
            )
            if flags[1]:  # agreed by every rank; a signal arriving later is seen at the next step
                partial["epoch_time"] = now - epoch_start
                self._interrupt(epoch, step, partial)
            if self.config.save_every and step % self.config.save_every == 0 and step < steps and self.dist.is_main:
                partial["epoch_time"] = now - epoch_start
                self._save(epoch - 1, step, partial)
            if step >= steps:
                break
        return step

    def _check_stop(self, epoch: int, steps: int, partial: dict[str, Any], epoch_start: float) -> None:
        # Stopped during validation: the epoch's training is complete; resuming re-runs its validation.
        if distributed.any_rank([self.stop.requested], self.dist, self.placement.device)[0]:
            partial["epoch_time"] = time.perf_counter() - epoch_start
            self._interrupt(epoch, steps, partial)

    def _interrupt(self, epoch: int, step: int, partial: dict[str, Any]) -> None:
        if self.dist.is_main:
            self._save(epoch - 1, step, partial)
            write_history(self.run_dir / HISTORY_NAME, self.history)
        distributed.barrier(self.dist)
        signum = self.stop.signal or 2
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        raise Interrupted(
            f"stopped by {name} at epoch {epoch}, step {step}; saved {self.run_dir / 'last.pt'}: "
            f"continue with 'resnet train --resume --out {self.run_dir}'",
            128 + signum,
        )

    def _kept(self) -> str:
        epoch, step = self.saved
        if not (self.run_dir / "last.pt").exists():
            return "no checkpoint was written yet"
        where = f"the end of epoch {epoch}" if not step else f"epoch {epoch + 1}, step {step}"
        return f"last.pt keeps the last sane state, from {where}"

    def _out_of_memory(self, exc: BaseException, epoch: int, step: int) -> BaseException:
        text = str(exc)
        if (
            not isinstance(exc, torch.OutOfMemoryError)
            and "can't allocate memory" not in text
            and ("out of memory" not in text.lower())
        ):
            return exc
        batch = self.config.batch_size
        if (self.run_dir / "last.pt").exists():
            # The batch size cannot change on resume (the data order depends on it): start over instead.
            then = (
                f"{self._kept()}; start over with 'resnet train --force --out {self.run_dir} "
                f"--batch-size {max(1, batch // 2)}' (a resumed run keeps its batch size)"
            )
        else:
            then = f"nothing was kept; run again with --batch-size {max(1, batch // 2)}"
        return RunFailedError(
            f"out of memory at epoch {epoch}, step {step} with --batch-size {batch} and --image-size "
            f"{self.pre.image_size} on {self.placement.device}: {then}, or use a smaller --image-size or --arch"
        )

    def _save(self, epoch: int, batches_done: int, partial: dict[str, Any], best: bool = False) -> None:
        """Write last.pt (the full training state) and, with ``best``, best.pt (weights and metadata only) first.

        Weights that are non-finite or have blown up are never written: the previous checkpoints stay.
        """
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        largest = max(
            (float(p.detach().abs().max()) for p in self.model.parameters() if p.is_floating_point() and p.numel()),
            default=0.0,
        )
        if not math.isfinite(largest) or largest > MAX_SANE_WEIGHT:
            raise RunFailedError(
                f"the weights blew up at epoch {epoch + (1 if batches_done else 0)} (largest magnitude "
                f"{largest:.3g}): the run diverged; {self._kept()}: lower --lr (it is "
                f"{self.optimizer.param_groups[0]['lr']:.3g}) or use --precision fp32"
            )
        summary = {
            "model": weights,
            "model_config": self.model_config.to_dict(),
            "classes": list(self.manifest.classes),
            "preprocess": self.pre.to_dict(),
            "config": self.resolved.to_dict(),
            "precision": self.placement.precision,
            "epoch": epoch,
            "best": dict(self.best),
            "manifest_sha256": self.manifest.csv_sha256,
            "versions": _versions(),
        }
        if best:
            save_checkpoint(self.run_dir / "best.pt", summary)
        payload = {
            **summary,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.placement.uses_scaler else None,
            "early_stopping": self.stopper.state_dict(),
            "rng": {**_rng_state(), "loader_generator": self.train_loader.generator.get_state()},
            "loader": {
                "seed": self.config.seed,
                "epoch": epoch + 1,
                "batches_done": batches_done,
                "world_size": self.dist.world_size,
                "batch_size": self.config.batch_size,
            },
            "partial": dict(partial),
            "history": [r.to_dict() for r in self.history],
            "data_fingerprint": self.fingerprint,
        }
        save_checkpoint(self.run_dir / "last.pt", payload)
        self.saved = (epoch, batches_done)


def _load_manifest(config: TrainConfig) -> Manifest:
    if config.manifest:
        return read_manifest(config.manifest, root=config.data if config.data and config.data != "data" else None)
    data = Path(config.data or "data")
    if not data.exists():
        raise DatasetError(
            f"data folder {data} does not exist: run 'resnet split {data} --val 0.2' on your ImageFolder, "
            "or pass --data DIR"
        )
    return read_manifest(default_manifest_path(data), root=data)


def _check_resume_matches(state: dict[str, Any], manifest: Manifest, arch: str, run_dir: Path) -> None:
    saved_arch = state["model_config"]["arch"]
    if saved_arch != arch:
        raise ConfigError(f"cannot resume {run_dir}: it trains {saved_arch}, not {arch}")
    if list(state["classes"]) != list(manifest.classes):
        added = sorted(set(manifest.classes) - set(state["classes"]))
        removed = sorted(set(state["classes"]) - set(manifest.classes))
        raise DatasetError(
            f"cannot resume {run_dir}: the class list changed (added {added}, removed {removed}): start a new run"
        )
    if state["manifest_sha256"] != manifest.csv_sha256:
        raise DatasetError(
            f"cannot resume {run_dir}: {manifest.path} differs from the manifest the run started with "
            "(re-split?): start a new run with --out"
        )


def _load_init(model: nn.Module, source: str) -> list[str]:
    state = read_state_dict(source, expected_parameters=sum(t.numel() for t in model.state_dict().values()))
    adapted, notes = adapt_state_dict(state, model, source)
    model.load_state_dict(adapted, strict=False)
    return [f"loaded {len(adapted)} tensors", *notes]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No weight decay on BatchNorm scales/shifts and biases (one-dimensional tensors), as timm does.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _versions() -> dict[str, str]:
    import torchvision

    return {
        "resnet_cli": __version__,
        "torch": str(torch.__version__),  # a TorchVersion object, which weights_only loading refuses
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }


def _run_config(
    resolved: TrainConfig,
    model_config: ModelConfig,
    pre: PreprocessConfig,
    manifest: Manifest,
    fingerprint: str,
    placement: Placement,
    dist: DistInfo,
) -> dict[str, Any]:
    return {
        "train": resolved.to_dict(),
        "model": model_config.to_dict(),
        "preprocess": pre.to_dict(),
        "classes": list(manifest.classes),
        "manifest": {
            "path": str(manifest.path.resolve()),
            "sha256": manifest.csv_sha256,
            "root": str(manifest.root.resolve()),
        },
        "data_fingerprint": fingerprint,
        "placement": {
            "device": str(placement.device),
            "gpus": list(placement.gpus),
            "precision": placement.precision,
            "channels_last": placement.channels_last,
            "world_size": dist.world_size,
        },
        "versions": _versions(),
    }
