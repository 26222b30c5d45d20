"""``resnet train``: train a from-scratch ResNet on a split manifest."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from resnet_cli.cli import console
from resnet_cli.cli.options import Arch, BatchSize, Device, Force, Json, Quiet
from resnet_cli.cli.progress import training_callback

# CLI parameter name -> TrainConfig field, for options whose names differ.
_FIELD = {"max_steps": "max_steps_per_epoch", "compile_model": "compile"}
# CLI parameters that steer the command rather than describe the run.
_NOT_CONFIG = ("resume", "force", "json_out", "quiet", "split")
_PARTS = ("train", "val", "test")


def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="ImageFolder root holding the split manifest.")] = Path(
        "data"
    ),
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest CSV [default: DATA/manifest.csv].", show_default=False),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", hidden=True, help="Old name of --manifest (until 0.3).", show_default=False),
    ] = None,
    arch: Arch = "34",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder [default: `runs/rDEPTH`].", show_default=False)
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", "-e", help="Maximum epochs (early stopping may end sooner).")] = 30,
    batch_size: BatchSize = 64,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay (not on norms/biases).")
    ] = 0.05,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size", help="Input side in px [default: from the images; 224 for photos].", show_default=False
        ),
    ] = None,
    small_input: Annotated[
        bool | None,
        typer.Option(
            "--small-input/--no-small-input", help="3x3 stride-1 stem [default: on for <= 64 px].", show_default=False
        ),
    ] = None,
    in_channels: Annotated[
        int | None,
        typer.Option("--in-channels", help="1 or 3 [default: 1 if all images are greyscale].", show_default=False),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option("--augment", help="rrc, crop or none [default: crop for <= 64 px, else rrc].", show_default=False),
    ] = None,
    hflip: Annotated[bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips.")] = False,
    normalize: Annotated[
        str, typer.Option("--normalize", help="imagenet, or dataset (train-part mean/std).")
    ] = "imagenet",
    patience: Annotated[int, typer.Option("--patience", help="Early stopping: epochs without val-loss gain.")] = 8,
    min_delta: Annotated[float, typer.Option("--min-delta", help="Early stopping: smallest gain that counts.")] = 0.0,
    lr_patience: Annotated[int, typer.Option("--lr-patience", help="Epochs of plateau before lowering the LR.")] = 3,
    lr_factor: Annotated[float, typer.Option("--lr-factor", help="LR multiplier on a plateau.")] = 0.1,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Lowest learning rate.")] = 1e-6,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Cross-entropy label smoothing.")] = 0.0,
    zero_init_residual: Annotated[
        bool, typer.Option("--zero-init-residual", help="Zero-init each block's last BatchNorm.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation, order and augmentation.")] = 42,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            help="Data-loading processes [default: 0 on <= 2 CPUs, else min(4, CPUs-1)].",
            show_default=False,
        ),
    ] = None,
    device: Device = "auto",
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="DataParallel over these CUDA devices, e.g. 0,1.", show_default=False)
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")] = "auto",
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last", help="Memory format [default: on for CUDA].", show_default=False
        ),
    ] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init", help="Start from these weights (torchvision/timm .pth, .pt or .safetensors).", show_default=False
        ),
    ] = None,
    save_every: Annotated[int, typer.Option("--save-every", help="Also checkpoint every N steps within an epoch.")] = 0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Cap on steps per epoch (smoke tests; 0: none).")] = 0,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a from-scratch ResNet on the train part of a split, validating every epoch.

    Writes config.json, history.csv, classes.json, last.pt and best.pt into the run folder and prints its
    path last. Ctrl-C (SIGINT) or SIGTERM saves a resumable checkpoint and exits 130 / 143.
    """
    from dataclasses import replace

    from resnet_cli.config import TrainConfig
    from resnet_cli.engine.callbacks import StopRequest
    from resnet_cli.engine.device import parse_gpus
    from resnet_cli.engine.run_dir import latest_run_dir
    from resnet_cli.engine.train import default_run_dir, fit, resume_config
    from resnet_cli.errors import ConfigError
    from resnet_cli.models import canonical_arch

    if split is not None:
        if split in _PARTS:
            raise ConfigError(
                f"--split names a part on eval; train trains on the train part and validates on val: pass "
                f"--manifest FILE to train from another manifest (got --split {split})"
            )
        if manifest is not None:
            raise ConfigError("--split is the old name of --manifest: pass only --manifest")
        console.warning_line("--split FILE is now --manifest FILE; --split will be removed in 0.3")
        manifest = Path(split)
    values = dict(ctx.params)
    values["gpus"] = parse_gpus(gpus)
    values["manifest"] = str(manifest) if manifest else None
    values["data"] = str(data)
    values["init"] = str(init) if init else None
    values["out"] = str(out) if out else None
    fields = {_FIELD.get(k, k): v for k, v in values.items() if k not in _NOT_CONFIG}
    config = TrainConfig(**fields)
    dist = _dist_from_env()
    if resume:
        run_dir = out or latest_run_dir(default_run_dir(canonical_arch(arch)))
        explicit = {_FIELD.get(k, k): v for k, v in values.items() if k not in _NOT_CONFIG and _given(ctx, k)}
        config = replace(resume_config(run_dir, explicit), out=str(run_dir))
    # --json changes stdout only: progress and warnings stay on stderr unless --quiet.
    progress = training_callback(quiet or not dist.is_main)
    stop = StopRequest()
    try:
        with _signals_to(stop):
            result = fit(config, resume=resume, force=force, callbacks=[progress], stop=stop, dist=dist)
    finally:
        closer = getattr(progress, "close", None)
        if closer:
            closer()
    if not dist.is_main:
        return
    if json_out:
        console.print_json(result.to_dict())
        return
    _render(result)  # report_console: the result in a terminal (even with --quiet); stderr chatter otherwise
    console.print_path(result.run_dir)


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _dist_from_env():
    from resnet_cli.engine.distributed import DistInfo

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def _signals_to(stop):
    """Route SIGINT/SIGTERM to ``stop`` (finish the step, save, exit 130/143); later signals are ignored
    so a second Ctrl-C cannot interrupt the checkpoint write."""

    def handler(signum, _frame):
        if stop.requested:
            console.warning_line("already stopping: writing the checkpoint, please wait")
        else:
            console.warning_line(f"{signal.Signals(signum).name}: stopping after this step, then saving last.pt")
        stop.request(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _render(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {escape(str(result.run_dir))}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    final = result.history[-1] if result.history else None
    reason = {"completed": "all epochs", "early_stop": "early stop"}.get(result.stop_reason, result.stop_reason)
    table.add_row("epochs", f"{result.epochs_run} ({reason})")
    table.add_row(
        "best epoch", f"{result.best_epoch}: val loss {result.best_val_loss:.4f}, val acc {result.best_val_acc:.2%}"
    )
    if final:
        table.add_row(
            "last epoch",
            f"train loss {final.train_loss:.4f} acc {final.train_acc:.2%}; "
            f"val loss {final.val_loss:.4f} acc {final.val_acc:.2%}",
        )
        total = sum(r.epoch_time or 0.0 for r in result.history)
        rates = [r.images_per_s for r in result.history if r.images_per_s]
        mean_rate = sum(rates) / len(rates) if rates else 0.0
        table.add_row("time", f"{total:.1f} s; {mean_rate:.1f} training images/s (mean over epochs)")
    table.add_row("device", result.placement)
    table.add_row("checkpoints", escape(f"{result.run_dir / 'best.pt'} (best val loss), {result.run_dir / 'last.pt'}"))
    console.report_console().print(table)


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Examples:\n\n"
        "    resnet split data --val 0.2 && resnet train --arch 34\n\n"
        "    resnet train --arch 50 --gpus 0,1 --epochs 90\n\n"
        "    resnet train --resume --out runs/r34 --epochs 60\n\n"
        "    torchrun --nproc-per-node 2 -m resnet_cli train --arch 50",
    )(train)
