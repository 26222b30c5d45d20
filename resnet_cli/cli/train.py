"""``resnet train``: train a from-scratch ResNet or ViT on a split manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from resnet_cli.cli import console

if TYPE_CHECKING:  # torch stays unimported until a command runs
    from resnet_cli.engine.callbacks import StopRequest
    from resnet_cli.engine.distributed import DistInfo
    from resnet_cli.engine.train import TrainResult
from resnet_cli.cli.options import (
    ARCH_CHOICES,
    AUGMENT_CHOICES,
    PRECISION_CHOICES,
    Force,
    Json,
    Quiet,
    Workers,
    complete_from,
    field_option,
)
from resnet_cli.cli.progress import training_callback
from resnet_cli.config import TrainConfig

# Every TrainConfig option takes its flag and help from its field (field_option) and its default from DEFAULTS;
# the parameters are named as the fields, so ctx.params maps onto TrainConfig without glue.
DEFAULTS = TrainConfig()
FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_PARTS = ("train", "val", "test")


def _opt(name: str, **cli: Any) -> Any:
    return field_option(TrainConfig, name, **cli)


def train(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of training options (keys as the options here, e.g. batch_size), or a run's "
            "config.json to repeat that run; flags given here override it.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[Path, _opt("data")] = Path(DEFAULTS.data),
    manifest: Annotated[Path | None, _opt("manifest")] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", hidden=True, help="Old name of --manifest (until 0.3).", show_default=False),
    ] = None,
    arch: Annotated[str, _opt("arch", autocompletion=complete_from(*ARCH_CHOICES))] = DEFAULTS.arch,
    out: Annotated[Path | None, _opt("out")] = None,
    epochs: Annotated[int, _opt("epochs")] = DEFAULTS.epochs,
    train_fraction: Annotated[float, _opt("train_fraction")] = DEFAULTS.train_fraction,
    batch_size: Annotated[int, _opt("batch_size")] = DEFAULTS.batch_size,
    optimizer: Annotated[str | None, _opt("optimizer", autocompletion=complete_from("adamw", "sgd"))] = None,
    lr: Annotated[float | None, _opt("lr")] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay")] = None,
    schedule: Annotated[str | None, _opt("schedule", autocompletion=complete_from("plateau", "cosine", "step"))] = None,
    warmup_epochs: Annotated[int | None, _opt("warmup_epochs")] = None,
    clip_grad: Annotated[float, _opt("clip_grad")] = DEFAULTS.clip_grad,
    image_size: Annotated[int | None, _opt("image_size")] = None,
    small_input: Annotated[bool | None, _opt("small_input")] = None,
    in_channels: Annotated[int | None, _opt("in_channels")] = None,
    augment: Annotated[str | None, _opt("augment", autocompletion=complete_from(*AUGMENT_CHOICES))] = None,
    hflip: Annotated[bool, _opt("hflip")] = DEFAULTS.hflip,
    normalize: Annotated[str, _opt("normalize")] = DEFAULTS.normalize,
    patience: Annotated[int, _opt("patience")] = DEFAULTS.patience,
    min_delta: Annotated[float, _opt("min_delta")] = DEFAULTS.min_delta,
    lr_patience: Annotated[int, _opt("lr_patience")] = DEFAULTS.lr_patience,
    lr_factor: Annotated[float, _opt("lr_factor")] = DEFAULTS.lr_factor,
    min_lr: Annotated[float, _opt("min_lr")] = DEFAULTS.min_lr,
    label_smoothing: Annotated[float | None, _opt("label_smoothing")] = None,
    mixup: Annotated[float | None, _opt("mixup")] = None,
    cutmix: Annotated[float | None, _opt("cutmix")] = None,
    random_erasing: Annotated[float | None, _opt("random_erasing")] = None,
    drop_path: Annotated[float | None, _opt("drop_path")] = None,
    ema: Annotated[float, _opt("ema")] = DEFAULTS.ema,
    zero_init_residual: Annotated[bool, _opt("zero_init_residual")] = DEFAULTS.zero_init_residual,
    seed: Annotated[int, _opt("seed")] = DEFAULTS.seed,
    workers: Workers = None,
    cache_images: Annotated[bool, _opt("cache_images")] = DEFAULTS.cache_images,
    decode: Annotated[str, _opt("decode", autocompletion=complete_from("auto", "cpu", "gpu"))] = DEFAULTS.decode,
    device: Annotated[str, _opt("device")] = DEFAULTS.device,
    gpus: Annotated[str | None, _opt("gpus")] = None,  # "0,1"; the field holds (0, 1)
    precision: Annotated[str, _opt("precision", autocompletion=complete_from(*PRECISION_CHOICES))] = DEFAULTS.precision,
    channels_last: Annotated[bool | None, _opt("channels_last")] = None,
    compile: Annotated[bool, _opt("compile")] = DEFAULTS.compile,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    init: Annotated[Path | None, _opt("init")] = None,
    save_every: Annotated[int, _opt("save_every")] = DEFAULTS.save_every,
    max_steps_per_epoch: Annotated[int, _opt("max_steps_per_epoch")] = DEFAULTS.max_steps_per_epoch,
    force: Force = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a from-scratch ResNet or ViT on the train part of a split, validating every epoch.

    Writes config.json, history.csv, classes.json, last.pt and best.pt into the run folder and prints its
    path last. Ctrl-C (SIGINT) or SIGTERM saves a resumable checkpoint and exits 130 / 143.
    """
    from dataclasses import replace

    from resnet_cli.config import read_train_options
    from resnet_cli.engine.callbacks import StopRequest
    from resnet_cli.engine.run_dir import latest_run_dir
    from resnet_cli.engine.speed import default_cache_dir
    from resnet_cli.engine.train import default_run_dir, fit, resume_config
    from resnet_cli.errors import ConfigError
    from resnet_cli.models import canonical_arch

    given = {name: to_field(name, value) for name, value in ctx.params.items() if name in FIELDS and _given(ctx, name)}
    if split is not None:
        if split in _PARTS:
            raise ConfigError(
                f"--split names a part on eval; train trains on the train part and validates on val: pass "
                f"--manifest FILE to train from another manifest (got --split {split})"
            )
        if manifest is not None:
            raise ConfigError("--split is the old name of --manifest: pass only --manifest")
        console.warning_line("--split FILE is now --manifest FILE; --split will be removed in 0.3")
        given["manifest"] = split
    from_file = read_train_options(config_file) if config_file else {}
    # Flags given on the command line win over the file, which wins over the defaults.
    explicit = {**from_file, **given}
    defaults = {name: to_field(name, value) for name, value in ctx.params.items() if name in FIELDS}
    config = TrainConfig(**{**defaults, **explicit})
    if resume:
        run_dir = Path(config.out) if config.out else latest_run_dir(default_run_dir(canonical_arch(config.arch)))
        config = replace(resume_config(run_dir, explicit), out=str(run_dir))
    dist = _dist_from_env()
    # --json changes stdout only: progress and warnings stay on stderr unless --quiet.
    progress = training_callback(quiet or not dist.is_main)
    stop = StopRequest()
    try:
        with _signals_to(stop):
            result = fit(config, resume=resume, force=force, callbacks=[progress], stop=stop, dist=dist,
                         cache_dir=default_cache_dir(os.environ))  # fmt: skip
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


def to_field(name: str, value: Any) -> Any:
    """A ``train`` parameter's value as the TrainConfig field holds it: paths as text, ``--gpus 0,1`` as (0, 1)."""
    if name == "gpus":
        from resnet_cli.engine.device import parse_gpus

        return parse_gpus(value)
    return str(value) if isinstance(value, Path) else value


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _dist_from_env() -> DistInfo:
    from resnet_cli.engine.distributed import DistInfo

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def _signals_to(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``stop`` (finish the step, save, exit 130/143); later signals are ignored
    so a second Ctrl-C cannot interrupt the checkpoint write."""

    def handler(signum: int, _frame: object) -> None:
        if stop.requested:
            console.warning_line("already stopping: writing the checkpoint, please wait")
        else:
            console.warning_line(f"{signal.Signals(signum).name}: stopping after this step, then saving last.pt")
        stop.request(signum)

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _render(result: TrainResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {escape(str(result.run_dir))}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    final = result.history[-1] if result.history else None
    reason = {"completed": "all epochs", "early_stop": "early stop"}.get(result.stop_reason, result.stop_reason)
    table.add_row("epochs", f"{result.epochs_run} ({reason})")
    average = " (moving average)" if (result.config.get("train") or {}).get("ema") else ""
    table.add_row(
        "best epoch",
        f"{result.best_epoch}: val loss {result.best_val_loss:.4f}, val acc {result.best_val_acc:.2%}{average}",
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
        "    resnet train --arch vit-ti/2 --epochs 100\n\n"
        "    resnet train --arch 18 --optimizer sgd --schedule cosine --warmup-epochs 2\n\n"
        "    resnet train --resume --out runs/r34 --epochs 60\n\n"
        "    resnet train --config runs/r34/config.json --out runs/r34-again\n\n"
        "    torchrun --nproc-per-node 2 -m resnet_cli train --arch 50",
    )(train)
