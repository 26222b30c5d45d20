"""``fit``: train a ResNet on a manifest's train part, validating every epoch, with early stopping and exact
resume.

Exact resume: ``last.pt`` holds every piece of state the rest of the run depends on (see
:mod:`resnet_cli.engine.state`). Data order comes from ``(seed, epoch)`` and each sample's augmentation from
``(seed, epoch, index)`` (see :mod:`resnet_cli.data.dataset`), so a run stopped at any point, even by SIGKILL,
and resumed from its ``last.pt`` ends with the same weights, bit for bit, on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from resnet_cli.config import ModelConfig, PreprocessConfig, TrainConfig, resolve_workers
from resnet_cli.data.dataset import (
    EpochBatchSampler,
    ImageCache,
    ManifestDataset,
    check_cache_fits,
    compute_mean_std,
    keep_list,
    make_loader,
)
from resnet_cli.data.decode import BatchDecodeLoader, check_decode, resolve_decode
from resnet_cli.data.split import Manifest, ManifestRow
from resnet_cli.data.transforms import eval_transform, train_transform
from resnet_cli.engine import distributed
from resnet_cli.engine.callbacks import Callback, CallbackList, PrintProgress, StopRequest
from resnet_cli.engine.device import Placement, resolve_channels_last, resolve_device, resolve_precision
from resnet_cli.engine.distributed import DistInfo
from resnet_cli.engine.early_stopping import EarlyStopping
from resnet_cli.engine.inference import AutocastForward
from resnet_cli.engine.loop import Diverged, OutOfMemory, Step, as_out_of_memory, train_one_epoch, validate
from resnet_cli.engine.recipe import (
    check_recipe,
    describe_recipe,
    make_ema,
    make_mixer,
    make_optimizer,
    make_scheduler,
    resolve_recipe,
    step_scheduler,
)
from resnet_cli.engine.run_dir import (
    RUN_FILES,
    check_new_run_folder,
    check_resume_matches,
    cleanup_failed_start,
    clear_run,
    data_fingerprint,
    data_stat,
    ensure_folder,
    latest_run_dir,
    load_manifest,
    numbered_run_dir,
    resume_config,
    run_config,
    verify_data_unchanged,
    write_data_stat,
)
from resnet_cli.engine.speed import ProbeResult, choose_placement
from resnet_cli.engine.state import (
    BestRecord,
    LoaderPosition,
    RunMeta,
    RunningSums,
    TrainState,
    checkpoint,
    read_run_meta,
    restore_rng,
    summary_of,
)
from resnet_cli.errors import CheckpointError, ConfigError, DatasetError, Interrupted, ResnetError, RunFailedError
from resnet_cli.fs import atomic_write_bytes, atomic_write_text, record_owned, remove_stale_temporaries, run_lock
from resnet_cli.io.checkpoint import read_project_checkpoint, save_checkpoint
from resnet_cli.io.history import HISTORY_NAME, EpochRecord, record_figures, write_history
from resnet_cli.io.weights import adapt_state_dict, read_run_config, read_state_dict
from resnet_cli.models import build_model, canonical_arch, family_of, run_name

__all__ = ["TrainResult", "default_run_dir", "fit", "resume_config", "train_subset"]

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
    """``runs/r34`` for ResNet-34, ``runs/vit-s16`` for ViT-S/16."""
    return Path("runs") / run_name(arch)


def fit(
    config: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    stop: StopRequest | None = None,
    dist: DistInfo | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train a ResNet on a manifest's train part, validating on its val part every epoch.

    Every check (options, device, data, manifest, ``init`` weights, the run folder) runs before the run folder
    is touched; a start that fails before the first checkpoint leaves nothing behind. The run folder is locked
    for the whole run (one writer at a time).

    Args:
        config: the run's options; ``config.out`` is the run folder (default ``runs/r34``, ``runs/vit-s16``,
            ..., numbered ``runs/r34-2``, ... when that one is taken). Recipe options left as None take their
            family's defaults (:func:`resnet_cli.engine.recipe.resolve_recipe`).
        resume: continue the run in ``config.out`` from its ``last.pt`` (CLI ``--resume``).
        force: start over in a folder that holds a run, removing only the files that run recorded as its own.
        callbacks: progress hooks (see :class:`resnet_cli.engine.callbacks.Callback`).
        stop: set it (e.g. from a signal handler) to stop after the current step with a resumable checkpoint.
        dist: this process's place under torchrun.
        progress: also print plain progress lines on stderr (for notebooks and scripts).
        cache_dir: where ``--precision auto`` keeps its measurements per machine (the command line passes the
            user's cache folder, :func:`resnet_cli.engine.speed.default_cache_dir`); None: measure every time.

    Raises:
        ConfigError, DeviceError, DatasetError, CheckpointError, OutputExistsError, RunBusyError: bad input.
        RunFailedError: non-finite loss or weights, out of memory, or a failed write.
        Interrupted: ``stop`` was requested; a resumable ``last.pt`` was written first.
    """
    dist, stop = dist or DistInfo(), stop or StopRequest()
    cb = CallbackList([*callbacks, *([PrintProgress()] if progress else [])] if dist.is_main else [])
    check_options(config)
    device, gpus = resolve_device(config.device, tuple(config.gpus))  # a missing GPU before any data is read
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
    else:  # every rank must name the same folder without talking first
        run_dir = default_run_dir(arch) if dist.enabled else numbered_run_dir(default_run_dir(arch))
    distributed.init(dist, device)
    try:
        with contextlib.ExitStack() as hold:
            resolved = resolve_recipe(replace(config, arch=arch, out=str(run_dir)))
            return _fit(resolved, resume, force, cb, stop, dist, placement, hold, cache_dir)
    finally:
        distributed.shutdown(dist)


def _fit(
    config: TrainConfig,
    resume: bool,
    force: bool,
    cb: CallbackList,
    stop: StopRequest,
    dist: DistInfo,
    placement: Placement,
    hold: contextlib.ExitStack,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TrainResult:
    run_dir = Path(str(config.out))
    saved: dict[str, Any] | None = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            other = run_dir.is_dir() and any(run_dir.iterdir())
            raise CheckpointError(
                f"nothing to resume in {run_dir}: no last.pt there (leave out --resume to start a run"
                + (", with --force to replace what is there)" if other else ")")
            )
        if dist.is_main:
            hold.enter_context(run_lock(run_dir, "train --resume"))
        saved = read_project_checkpoint(run_dir / "last.pt")
        if saved.get("loader") is None:
            raise CheckpointError(f"{run_dir / 'last.pt'} is not resumable (no training state): start a new run")

    # Every check that needs no folder runs here, before the run folder is touched.
    manifest = load_manifest(config)
    train_rows, val_rows = train_part(manifest, config), manifest.part("val")
    if not train_rows or not val_rows:
        raise DatasetError(f"{manifest.path} has {len(train_rows)} train and {len(val_rows)} val images: split again")
    if saved is not None:
        meta = read_run_meta(saved)
        check_resume_matches(meta, manifest, config.arch, run_dir)
        pre, model_config = meta.preprocess, meta.model_config
        # Rank 0 checks the content; the others only need the table for the fingerprint.
        stat_table = verify_data_unchanged(run_dir, manifest) if dist.is_main else data_stat(manifest)
    else:
        from resnet_cli.data.preprocess import resolve as resolve_preprocess

        pre, small = resolve_preprocess(config, train_rows)
        vit_size = pre.image_size if family_of(config.arch) == "vit" else None  # position embeddings' grid
        model_config = ModelConfig(config.arch, len(manifest.classes), pre.in_channels, small, vit_size)
        stat_table = data_stat(manifest)
    if config.cache_images:  # refused before the folder is touched, not after
        check_cache_fits([*train_rows, *val_rows], pre.in_channels)
    if saved is None and dist.is_main:  # a folder that will be refused is refused before seconds of probing
        check_new_run_folder(run_dir, force)
    for seed_rng in (random.seed, np.random.seed, torch.manual_seed):
        seed_rng(config.seed)
    if placement.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    probe = None
    if saved is not None:  # a resumed run keeps the precision and layout it trained in: never a new probe
        layout = meta.config.channels_last
        placement = replace(placement, precision=meta.precision,
                            channels_last=placement.channels_last if layout is None else bool(layout))  # fmt: skip
    elif config.precision == "auto" or config.channels_last is None:
        probe = _probe(config, model_config, pre, placement, dist, cache_dir)
        placement = replace(placement, precision=probe.precision, channels_last=probe.channels_last)
    model = build_model(
        config.arch, model_config.num_classes, model_config.in_channels, model_config.small_input,
        config.zero_init_residual, image_size=model_config.image_size, drop_path=float(config.drop_path or 0),
    )  # fmt: skip
    init_notes = _load_init(model, config.init) if saved is None and config.init else []

    created = False
    if saved is None:  # rank 0 claims the folder; the others learn its verdict, so none waits in a collective
        refusal: ResnetError | None = None
        if dist.is_main:
            try:
                folder = check_new_run_folder(run_dir, force)
                created = ensure_folder(run_dir)
                hold.enter_context(run_lock(run_dir, "train"))
                if folder.is_run:
                    clear_run(run_dir)
            except ResnetError as exc:
                refusal = exc
        if distributed.any_rank([refusal is not None], dist, placement.device)[0]:
            raise refusal or ConfigError(f"rank 0 refused the run folder {run_dir}: see its message")
    try:
        if dist.is_main:
            remove_stale_temporaries(run_dir)
            record_owned(run_dir, RUN_FILES)
            write_data_stat(run_dir, stat_table)
            if saved is None or not (run_dir / "manifest.csv").exists():
                atomic_write_bytes(run_dir / "manifest.csv", manifest.path.read_bytes())
        fingerprint = data_fingerprint(stat_table)
        run = _Run(config, saved, cb, stop, dist, placement, run_dir, manifest, pre, model_config, model, fingerprint)
        if probe is not None:
            run.run_config["precision_probe"] = probe.to_dict()
            cb.on_message(f"precision: {probe.describe()}")
        elif saved is not None:  # config.json is written again on resume: keep what the run's probe measured
            earlier = (read_run_config(run_dir) or {}).get("precision_probe")
            if earlier is not None:
                run.run_config["precision_probe"] = earlier
        for note in init_notes:
            cb.on_message(f"--init {config.init}: {note}")
        return run.train()
    except BaseException as exc:
        if saved is None and dist.is_main and not isinstance(exc, Interrupted):
            cleanup_failed_start(run_dir, created)
        raise


def _probe(
    config: TrainConfig,
    model_config: ModelConfig,
    pre: PreprocessConfig,
    placement: Placement,
    dist: DistInfo,
    cache_dir: str | os.PathLike[str] | None,
) -> ProbeResult:
    """``--precision auto`` and an unset ``--channels-last``, decided by timing the run's own network and batch
    shape (:func:`resnet_cli.engine.speed.choose_placement`, cached per machine). Under torchrun rank 0 decides
    and the others follow, so every rank trains alike."""

    def build() -> nn.Module:
        return build_model(
            config.arch, model_config.num_classes, model_config.in_channels, model_config.small_input,
            config.zero_init_residual, image_size=model_config.image_size, drop_path=float(config.drop_path or 0),
        )  # fmt: skip

    shape = (config.batch_size, model_config.in_channels, pre.image_size, pre.image_size)
    name = model_config.arch + ("/small-input" if model_config.small_input else "")
    probe = choose_placement(build, shape, model_config.num_classes, placement.device, config.precision,
                             config.channels_last, arch=name, cache_dir=cache_dir)  # fmt: skip
    if dist.enabled:
        codes = {"fp32": 0.0, "bf16": 1.0, "fp16": 2.0}
        mine = [codes[probe.precision], float(probe.channels_last)] if dist.is_main else [0.0, 0.0]
        precision, layout = distributed.all_sum(mine, dist, placement.device)
        chosen = next(name for name, code in codes.items() if code == precision)
        probe = replace(probe, precision=chosen, channels_last=bool(layout))
    return probe


class _Run:
    """One run's loaders, state and checkpoints, set up from the checked inputs; :meth:`train` runs the epochs."""

    def __init__(
        self,
        config: TrainConfig,
        saved: dict[str, Any] | None,
        cb: CallbackList,
        stop: StopRequest,
        dist: DistInfo,
        placement: Placement,
        run_dir: Path,
        manifest: Manifest,
        pre: PreprocessConfig,
        model_config: ModelConfig,
        model: nn.Module,
        fingerprint: str,
    ) -> None:
        self.cb, self.stop, self.dist, self.placement, self.run_dir = cb, stop, dist, placement, run_dir
        self.config, self.saved = config, saved
        seed, workers = config.seed, resolve_workers(config.workers)
        train_rows, val_rows = train_part(manifest, config), manifest.part("val")
        if saved is None and pre.normalize == "dataset":
            stats = ManifestDataset(manifest.root, train_rows, manifest.classes, eval_transform(pre, normalize=False),
                                    pre.in_channels, pre.background)  # fmt: skip
            mean, std = compute_mean_std(stats, config.batch_size, workers)
            pre = replace(pre, mean=mean, std=std)
        # The honest side of the generalisation gap: a fixed, stratified train subset as large as val, measured
        # like val (eval mode, no augmentation), not the running averages over augmented batches.
        method = "nested"
        if saved is not None:  # a run keeps the subset it started with
            method = ((read_run_config(run_dir) or {}).get("train_subset") or {}).get("method", "sklearn")
        self.probe_rows = train_subset(train_rows, len(val_rows), seed, method)

        # --cache-images: every image this process reads (train, val; the train subset is inside train) decoded
        # once, here, before any worker is forked: the workers share the one tensor copy-on-write.
        cache = None
        if config.cache_images:
            cache = ImageCache(manifest.root, [*train_rows, *val_rows], pre.in_channels, pre.background)
        on_gpu = resolve_decode(config.decode, placement.device, train_rows, config.cache_images) == "gpu"

        def loader(rows: list[ManifestRow], train: bool, loader_seed: int) -> Any:
            transform = train_transform(pre) if train else eval_transform(pre)
            dataset = ManifestDataset(manifest.root, rows, manifest.classes, transform, pre.in_channels, pre.background,
                                      cache=cache, raw=on_gpu)  # fmt: skip
            sampler = EpochBatchSampler(len(dataset), config.batch_size, seed, train, dist.rank, dist.world_size,
                                        train=train)  # fmt: skip
            if on_gpu:  # workers read the files; this process decodes and transforms each batch on the GPU
                raw = make_loader(dataset, sampler, workers, loader_seed, collate_fn=keep_list)
                return BatchDecodeLoader(raw, transform, pre.in_channels, placement.device)
            return make_loader(dataset, sampler, workers, loader_seed, placement.device.type == "cuda")

        self.train_loader = loader(train_rows, True, seed)
        self.val_loader, self.probe_loader = loader(val_rows, False, seed + 1), loader(self.probe_rows, False, seed + 2)
        model.to(placement.device)
        if placement.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config)
        self.state = TrainState(
            model, optimizer, make_scheduler(optimizer, config),
            torch.amp.GradScaler(placement.device.type, enabled=placement.uses_scaler),
            EarlyStopping(config.patience, config.min_delta), sums=RunningSums.fresh(placement.device),
            ema=make_ema(model, config.ema),
        )  # fmt: skip
        if saved is not None:
            try:
                self.state.load_state_dict(saved)
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"cannot resume from {run_dir / 'last.pt'}: {exc}") from None
            position = saved["loader"]
            if self.state.step and (position["world_size"], position["batch_size"]) != (
                dist.world_size, config.batch_size,
            ):  # fmt: skip
                raise ConfigError(
                    f"{run_dir / 'last.pt'} was saved mid-epoch by {position['world_size']} process(es) with batch "
                    f"size {position['batch_size']}: resume with the same, or from an epoch-end checkpoint"
                )
            restore_rng(saved, self.train_loader.generator)
        self.kept = (self.state.epoch, self.state.step) if saved is not None else None
        resolved = replace(
            config, init=str(Path(config.init).resolve()) if config.init else None, image_size=pre.image_size,
            in_channels=pre.in_channels, small_input=model_config.small_input,
            augment=pre.augment, workers=workers, precision=placement.precision, manifest=str(manifest.path.resolve()),
            channels_last=placement.channels_last, data=str(manifest.root.resolve()), gpus=tuple(placement.gpus),
            decode="gpu" if on_gpu else "cpu",
        )  # fmt: skip
        self.meta = RunMeta(model_config, list(manifest.classes), pre, resolved, placement.precision,
                            manifest.csv_sha256, fingerprint)  # fmt: skip
        self.position = LoaderPosition(seed, dist.world_size, config.batch_size)
        self.run_config = run_config(resolved, model_config, pre, manifest, fingerprint, placement, dist)
        self.run_config["train_subset"] = {"images": len(self.probe_rows), "seed": seed, "method": method}
        self.run_config["train_images"] = len(train_rows)  # the whole train part, or its --train-fraction
        # `local` runs this process's forward (over its GPUs with DataParallel) and validates; DDP wraps it for
        # training only, so validation never enters DDP's collectives (a rank may hold no validation images).
        local: nn.Module = AutocastForward(model, placement)
        if placement.gpus:
            local = nn.DataParallel(local, device_ids=list(placement.gpus))
        net = local
        if dist.enabled:
            ids = [placement.device.index] if placement.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(local, device_ids=ids)
        if config.compile:
            net = cast(nn.Module, torch.compile(net))
            local = net if not dist.enabled else local
        self.local = local
        smoothing = float(config.label_smoothing or 0)
        criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)
        self.step = Step(net, criterion, placement, dist, smoothing, make_mixer(config, model_config.num_classes),
                         config.clip_grad)  # fmt: skip
        self.ema_forward = AutocastForward(self.state.ema.module, placement) if self.state.ema is not None else None

    def train(self) -> TrainResult:
        config, state, cb, run_dir = self.config, self.state, self.cb, self.run_dir
        if self.saved is not None and not self._resuming_message():
            return self._finish("completed")
        if self.dist.is_main:
            for name, doc in (("config.json", self.run_config), ("classes.json", self.meta.classes)):
                atomic_write_text(run_dir / name, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        cb.on_train_start(
            {
                "run_dir": str(run_dir), "placement": self.placement.describe(),
                "model": self.meta.model_config.to_dict(),
                "preprocess": self.meta.preprocess.to_dict(), "train_images": len(self.train_loader.dataset),
                "val_images": len(self.val_loader.dataset), "train_subset_images": len(self.probe_rows),
                "epochs": config.epochs, "workers": self.meta.config.workers, "world_size": self.dist.world_size,
                "recipe": describe_recipe(config),
                "network": state.model,  # the bare nn.Module being trained, for callbacks that inspect it
            }
        )  # fmt: skip
        while state.epoch < config.epochs and not state.stopper.stopped:
            record, improved = self._epoch(state.epoch + 1)
            state.history.append(record)
            state.epoch, state.step, state.sums = record.epoch, 0, RunningSums.fresh(self.placement.device)
            if improved:  # the weights of record: the moving average when there is one
                loss, acc = record_figures(record)
                state.best = BestRecord(record.epoch, loss, acc)
            lr_before = state.lr
            step_scheduler(state.scheduler, record.val_loss)
            if self.dist.is_main:
                self._save(best=improved)  # best.pt first: a crash between leaves last.pt an epoch behind, exactly
                write_history(run_dir / HISTORY_NAME, state.history)
            distributed.barrier(self.dist)
            cb.on_epoch_end(record, improved)
            if state.lr < lr_before and self.config.schedule == "plateau":
                cb.on_message(f"validation loss plateaued: learning rate {lr_before:.3g} -> {state.lr:.3g}")
            if state.stopper.stopped:
                cb.on_message(
                    f"early stop after epoch {record.epoch}: no validation-loss improvement for "
                    f"{state.stopper.patience} epochs"
                )
        return self._finish("early_stop" if state.stopper.stopped else "completed")

    def _resuming_message(self) -> bool:
        """Say where the resumed run continues; False when it had already finished and only needs its summary."""
        state, config, run_dir = self.state, self.config, self.run_dir
        assert self.saved is not None
        limit = max(int(self.saved["config"]["epochs"]), state.epoch)  # where the saved run ends
        finished = (state.stopper.stopped or state.epoch >= limit) and not state.step
        if finished and config.epochs <= limit:
            if (run_dir / "run.json").is_file():
                raise ConfigError(
                    f"the run in {run_dir} already finished after {state.epoch} epochs: pass --epochs with more "
                    f"than {limit} to extend it"
                )
            self.cb.on_message(f"{run_dir} had finished its last epoch when it stopped: writing its summary")
            return False
        if finished and state.stopper.stopped:
            state.stopper.reset()
            self.cb.on_message(f"extending an early-stopped run from epoch {state.epoch} to {config.epochs}")
        self.cb.on_message(f"resumed {run_dir} at epoch {state.epoch + 1}, step {state.step}")
        return True

    def _epoch(self, epoch: int) -> tuple[EpochRecord, bool]:
        state, sampler, sums = self.state, self.train_loader.batch_sampler, self.state.sums
        sampler.set_epoch(epoch, 0)
        steps = sampler.total_batches()
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        sampler.set_epoch(epoch, state.step)
        sums.lr = sums.lr or state.lr
        self.cb.on_epoch_start(epoch, self.config.epochs, steps)
        epoch_start = time.perf_counter() - sums.epoch_time
        if state.step < steps:
            try:
                stopped = train_one_epoch(
                    state, self.step, self.train_loader, epoch, steps, self.cb, self.stop, self.config.save_every,
                    lambda: self._mid_epoch_save(epoch_start) if self.dist.is_main else None,
                )  # fmt: skip
            except Diverged as exc:
                raise RunFailedError(
                    f"{exc}: the run diverged; {self._kept()}: lower --lr (it is {state.lr:.3g}) or use "
                    "--precision fp32"
                ) from None
            except OutOfMemory as exc:
                raise self._out_of_memory(exc) from None
            if stopped:
                self._interrupt(epoch, epoch_start)
        sums.epoch_time = time.perf_counter() - epoch_start
        self.cb.on_validation_start(epoch, len(self.val_loader))
        try:
            val = validate(self.local, self.val_loader, self.placement, self.cb, self.stop)
            probe = validate(self.local, self.probe_loader, self.placement, None, self.stop)
            ema = (
                validate(self.ema_forward, self.val_loader, self.placement, None, self.stop)
                if self.ema_forward
                else None
            )
        except (RuntimeError, MemoryError) as exc:
            failure = as_out_of_memory(exc, epoch, 0)
            if isinstance(failure, OutOfMemory):
                raise self._out_of_memory(failure) from None
            raise
        if distributed.any_rank([self.stop.requested], self.dist, self.placement.device)[0]:
            self._interrupt(epoch, epoch_start)  # the epoch's training is complete; resuming re-runs validation
        loss_sum, correct, seen, probe_loss, probe_correct, probe_seen, ema_loss, ema_correct, *train = (
            distributed.all_sum(
                [*val, *probe, *(ema[:2] if ema else (0.0, 0)), float(sums.loss_sum), float(sums.correct), sums.seen],
                self.dist, self.placement.device,
            )
        )  # fmt: skip
        val_loss = loss_sum / max(seen, 1)
        if not math.isfinite(val_loss):
            raise RunFailedError(
                f"validation loss is {val_loss} after epoch {epoch}: the run diverged; {self._kept()}: lower --lr "
                "or use --precision fp32"
            )
        record = EpochRecord(
            epoch=epoch, train_loss=train[0] / max(train[2], 1), train_acc=train[1] / max(train[2], 1),
            val_loss=val_loss, val_acc=correct / max(seen, 1), lr=float(sums.lr),
            epoch_time=time.perf_counter() - epoch_start, images_per_s=train[2] / max(sums.train_time, 1e-9),
            train_eval_loss=probe_loss / max(probe_seen, 1), train_eval_acc=probe_correct / max(probe_seen, 1),
            ema_val_loss=ema_loss / max(seen, 1) if ema else None,
            ema_val_acc=ema_correct / max(seen, 1) if ema else None,
        )  # fmt: skip
        return record, state.stopper.step(record_figures(record)[0])

    def _mid_epoch_save(self, epoch_start: float) -> None:
        self.state.sums.epoch_time = time.perf_counter() - epoch_start
        self._save()

    def _interrupt(self, epoch: int, epoch_start: float) -> None:
        self.state.sums.epoch_time = time.perf_counter() - epoch_start
        if self.dist.is_main:
            self._save()
            write_history(self.run_dir / HISTORY_NAME, self.state.history)
        distributed.barrier(self.dist)
        signum = self.stop.signal or 2
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        raise Interrupted(
            f"stopped by {name} at epoch {epoch}, step {self.state.step}; saved {self.run_dir / 'last.pt'}: "
            f"continue with 'resnet train --resume --out {self.run_dir}'",
            128 + signum,
        )

    def _save(self, best: bool = False) -> None:
        """Write best.pt (weights and metadata) when ``best``, then last.pt (the full state). Weights that are
        non-finite or have blown up are never written: the previous checkpoints stay."""
        state = self.state
        largest = state.largest_parameter()
        if not math.isfinite(largest) or largest > MAX_SANE_WEIGHT:
            where = f"epoch {state.epoch + 1}, step {state.step}" if state.step else f"the end of epoch {state.epoch}"
            raise RunFailedError(
                f"the weights blew up at {where} (largest magnitude {largest:.3g}): the run diverged; {self._kept()}: "
                f"lower --lr (it is {state.lr:.3g}) or use --precision fp32"
            )
        last = checkpoint(state, self.meta, self.position, self.train_loader.generator, full=True)
        if best:  # best.pt shares last.pt's tensors: the weights come off the device once per epoch
            save_checkpoint(self.run_dir / "best.pt", summary_of(last))
        save_checkpoint(self.run_dir / "last.pt", last)
        self.kept = (state.epoch, state.step)

    def _kept(self) -> str:
        if self.kept is None or not (self.run_dir / "last.pt").exists():
            return "no checkpoint was written yet"
        epoch, step = self.kept
        where = f"the end of epoch {epoch}" if not step else f"epoch {epoch + 1}, step {step}"
        return f"last.pt keeps the last sane state, from {where}"

    def _out_of_memory(self, exc: OutOfMemory) -> RunFailedError:
        batch = self.config.batch_size
        where = f"at epoch {exc.epoch}, step {exc.step}" if exc.step else f"validating epoch {exc.epoch}"
        if self.kept is not None and (self.run_dir / "last.pt").exists():
            # The batch size cannot change on resume (the data order depends on it): start over instead.
            then = (f"{self._kept()}; start over with 'resnet train --force --out {self.run_dir} --batch-size "
                    f"{max(1, batch // 2)}' (a resumed run keeps its batch size)")  # fmt: skip
        else:
            then = f"nothing was kept; run again with --batch-size {max(1, batch // 2)}"
        return RunFailedError(
            f"out of memory {where} with --batch-size {batch} and --image-size "
            f"{self.meta.preprocess.image_size} on {self.placement.device}: {then}, or use a smaller --image-size "
            "or --arch"
        )

    def _finish(self, stop_reason: str) -> TrainResult:
        state = self.state
        result = TrainResult(
            run_dir=self.run_dir, epochs_run=len(state.history), best_epoch=state.best.epoch,
            best_val_loss=state.best.val_loss, best_val_acc=state.best.val_acc, stop_reason=stop_reason,
            history=state.history, placement=self.placement.describe(), precision=self.placement.precision,
            config=self.run_config,
        )  # fmt: skip
        if self.dist.is_main:
            summary = json.dumps({**result.to_dict(), "finished": True}, indent=2) + "\n"
            atomic_write_text(self.run_dir / "run.json", summary)
        self.cb.on_train_end(result)
        return result


def check_options(config: TrainConfig) -> None:
    """Cheap checks that need neither data nor devices.

    Raises:
        ConfigError: an impossible value, named with what would work.
    """
    canonical_arch(config.arch)
    check_recipe(config)
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (config.patience >= 1, f"--patience must be at least 1 epoch, got {config.patience}"),
        (config.min_delta >= 0, f"--min-delta must be 0 or more, got {config.min_delta}"),
        (config.lr_patience >= 0, f"--lr-patience must be 0 or more, got {config.lr_patience}"),
        (0 < config.lr_factor < 1, f"--lr-factor must be between 0 and 1 (exclusive), got {config.lr_factor}"),
        (config.min_lr >= 0, f"--min-lr must be 0 or more, got {config.min_lr}"),
        (config.workers is None or config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
        (config.save_every >= 0, f"--save-every must be 0 or more steps, got {config.save_every}"),
        (config.max_steps_per_epoch >= 0, f"--max-steps must be 0 or more, got {config.max_steps_per_epoch}"),
        (config.image_size is None or config.image_size > 0, f"--image-size must be positive, got {config.image_size}"),
        (0 < config.train_fraction <= 1, f"--train-fraction must be in (0, 1], got {config.train_fraction}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    check_decode(config.decode, config.device, config.cache_images)


def train_part(manifest: Manifest, config: TrainConfig) -> list[ManifestRow]:
    """The train rows a run trains on: the whole train part, or its ``train_fraction`` (:func:`nested_fraction`)."""
    rows = manifest.part("train")
    return rows if config.train_fraction >= 1 else nested_fraction(rows, config.train_fraction, config.seed)


def nested_fraction(rows: Sequence[ManifestRow], fraction: float, seed: int) -> list[ManifestRow]:
    """A seeded, stratified ``fraction`` of ``rows``, nested across fractions for one seed.

    Each class's rows are put in one order drawn from ``(seed, class)`` alone, and the first
    ``max(1, round(fraction * n))`` are kept, so the 10% subset lies inside the 30% one and every class keeps
    its share. Rows come back in manifest order.
    """
    by_class: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_class.setdefault(row.label, []).append(index)
    chosen: list[int] = []
    for label, indices in sorted(by_class.items()):
        class_key = int.from_bytes(hashlib.blake2b(label.encode("utf-8"), digest_size=8).digest(), "little")
        order = np.random.default_rng([seed, class_key]).permutation(len(indices))
        keep = max(1, round(fraction * len(indices)))
        chosen += [indices[i] for i in order[:keep]]
    return [rows[i] for i in sorted(chosen)]


def train_subset(rows: Sequence[ManifestRow], size: int, seed: int, method: str = "nested") -> list[ManifestRow]:
    """A fixed, seeded subset of about ``size`` of ``rows``, stratified by class.

    ``method`` "nested" is :func:`nested_fraction` at ``size / len(rows)`` (per-class rounding may move the size by
    a few images); "sklearn" is scikit-learn's ``train_test_split``, what runs started before 0.2's study support
    used, kept so that such a run resumes with the subset it began with.
    """
    rows = list(rows)
    if size >= len(rows):
        return rows
    if method == "nested":
        return nested_fraction(rows, size / len(rows), seed)
    from sklearn.model_selection import train_test_split

    indices, labels = list(range(len(rows))), [r.label for r in rows]
    try:
        chosen, _ = train_test_split(indices, train_size=size, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify (or more classes than images)
        chosen, _ = train_test_split(indices, train_size=size, random_state=seed)
    return [rows[i] for i in sorted(chosen)]


def _load_init(model: nn.Module, source: str) -> list[str]:
    expected = sum(t.numel() for t in model.state_dict().values())
    adapted, notes = adapt_state_dict(read_state_dict(source, expected_parameters=expected), model, source)
    model.load_state_dict(adapted, strict=False)
    return [f"loaded {len(adapted)} tensors", *notes]
