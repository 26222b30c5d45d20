"""The training recipe both families share: per-family defaults, optimiser, LR schedule, MixUp/CutMix and EMA.

Every piece comes from the libraries: ``torch.optim`` (AdamW, SGD), ``torch.optim.lr_scheduler`` (LinearLR
warm-up, ReduceLROnPlateau, CosineAnnealingLR, MultiStepLR, SequentialLR), torchvision transforms v2 (MixUp,
CutMix) and ``torch.optim.swa_utils`` (AveragedModel with an EMA update).

Per-family defaults (an option left out takes its family's value; config.json records the resolved values):

* ResNets keep what 0.1.0 does: AdamW (lr 1e-3, weight decay 0.05), plateau schedule, no warm-up, no label
  smoothing, MixUp, CutMix, random erasing or stochastic depth; crop/rrc augmentation.
* ViTs follow DeiT (Touvron et al. 2021, "Training data-efficient image transformers") and Lee et al. 2021
  ("Vision Transformer for Small-Size Datasets"): AdamW with weight decay 0.05, cosine schedule with linear
  warm-up, label smoothing 0.1, stochastic depth 0.1, RandAugment (2 ops, magnitude 9), MixUp 0.8, CutMix 1.0,
  random erasing 0.25. The learning rate is Lee et al.'s 1e-3 at batch 128, scaled linearly to 5e-4 at the
  default batch of 64 (a fixed default; pass --lr for other batch sizes).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from resnet_cli.config import TrainConfig
from resnet_cli.errors import ConfigError
from resnet_cli.models import canonical_arch, family_of

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("plateau", "cosine", "step")
SGD_MOMENTUM = 0.9

#: Defaults of the options left as None, by family; "warmup_epochs" of ViTs depends on --epochs (see below).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet": {
        "optimizer": "adamw", "schedule": "plateau", "warmup_epochs": 0, "label_smoothing": 0.0,
        "mixup": 0.0, "cutmix": 0.0, "random_erasing": 0.0, "drop_path": 0.0,
    },
    "vit": {
        "optimizer": "adamw", "schedule": "cosine", "label_smoothing": 0.1, "mixup": 0.8, "cutmix": 1.0,
        "random_erasing": 0.25, "drop_path": 0.1, "augment": "randaugment",
    },
}  # fmt: skip


def resolve_recipe(config: TrainConfig) -> TrainConfig:
    """``config`` with every recipe option left as None set to its family's default (see the module doc).

    ResNets keep ``augment`` None: the data pipeline picks crop or rrc from the image size.
    """
    family = family_of(canonical_arch(config.arch))
    defaults = dict(FAMILY_DEFAULTS[family])
    if family == "vit":
        defaults["warmup_epochs"] = min(5, config.epochs // 6)
    values = {name: value for name, value in defaults.items() if getattr(config, name) is None}
    optimizer = config.optimizer or defaults["optimizer"]
    if config.lr is None:
        if optimizer == "sgd":
            values["lr"] = 0.1 * config.batch_size / 256  # Goyal et al. 2017's linear scaling of 0.1 at 256
        else:
            values["lr"] = 5e-4 if family == "vit" else 1e-3
    if config.weight_decay is None:
        values["weight_decay"] = 1e-4 if optimizer == "sgd" else 0.05
    return replace(config, **values)


def describe_recipe(config: TrainConfig) -> str:
    """The resolved recipe in one line, for the start of a run: ``adamw lr 0.0005 wd 0.05, cosine (warm-up 5), ...``."""
    parts = [f"{config.optimizer} lr {config.lr:.3g} wd {config.weight_decay:.3g}"]
    parts.append(f"{config.schedule}" + (f" (warm-up {config.warmup_epochs})" if config.warmup_epochs else ""))
    for name, value in (
        ("label smoothing", config.label_smoothing), ("mixup", config.mixup), ("cutmix", config.cutmix),
        ("random erasing", config.random_erasing), ("drop path", config.drop_path), ("ema", config.ema),
        ("clip grad", config.clip_grad),
    ):  # fmt: skip
        if value:
            parts.append(f"{name} {value:g}")
    return ", ".join(parts)


def check_recipe(config: TrainConfig) -> None:
    """Refuse impossible recipe values (those given; None means the family default).

    Raises:
        ConfigError: naming the option, the value and what would work.
    """

    def given(value: Any) -> bool:
        return value is not None

    checks = [
        (config.optimizer is None or config.optimizer in OPTIMIZERS,
         f"unknown --optimizer {config.optimizer!r}: choose adamw or sgd"),
        (config.schedule is None or config.schedule in SCHEDULES,
         f"unknown --schedule {config.schedule!r}: choose plateau, cosine or step"),
        (not given(config.lr) or (math.isfinite(config.lr or 0) and (config.lr or 0) > 0),
         f"--lr must be a positive number, got {config.lr}"),
        (not given(config.weight_decay) or (config.weight_decay or 0) >= 0,
         f"--weight-decay must be 0 or more, got {config.weight_decay}"),
        (not given(config.warmup_epochs) or 0 <= (config.warmup_epochs or 0) < config.epochs,
         f"--warmup-epochs must be 0 or more and less than --epochs ({config.epochs}), got {config.warmup_epochs}"),
        (math.isfinite(config.clip_grad) and config.clip_grad >= 0,
         f"--clip-grad must be a norm of 0 (off) or more, got {config.clip_grad}"),
        (not given(config.label_smoothing) or 0 <= (config.label_smoothing or 0) < 1,
         f"--label-smoothing must be in [0, 1), got {config.label_smoothing}"),
        (not given(config.mixup) or (math.isfinite(config.mixup or 0) and (config.mixup or 0) >= 0),
         f"--mixup must be an alpha of 0 (off) or more, got {config.mixup}"),
        (not given(config.cutmix) or (math.isfinite(config.cutmix or 0) and (config.cutmix or 0) >= 0),
         f"--cutmix must be an alpha of 0 (off) or more, got {config.cutmix}"),
        (not given(config.random_erasing) or 0 <= (config.random_erasing or 0) <= 1,
         f"--random-erasing must be a probability in [0, 1], got {config.random_erasing}"),
        (not given(config.drop_path) or 0 <= (config.drop_path or 0) < 1,
         f"--drop-path must be in [0, 1), got {config.drop_path}"),
        (config.ema == 0 or 0 < config.ema < 1,
         f"--ema must be a decay in (0, 1) such as 0.999, or 0 (off), got {config.ema}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# --- optimiser and schedule ------------------------------------------------------------------------------------

#: Parameters kept out of weight decay by name (besides every 1-D tensor): the ViT's embeddings, as in timm.
NO_DECAY_NAMES = ("class_token", "pos_embedding")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9, Nesterov) over ``model``, without weight decay on norms, biases and embeddings."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
            (no_decay if skip else decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    lr = float(config.lr or 0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


class WarmupThenPlateau:
    """Linear warm-up for ``warmup`` epochs, then ReduceLROnPlateau on the validation loss (stepped per epoch).

    torch's SequentialLR cannot hold ReduceLROnPlateau (its ``step`` takes the metric), hence this pair.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, plateau: lr_scheduler.ReduceLROnPlateau):
        self.warmup = lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
        self.plateau, self.epochs_done, self.warmup_epochs = plateau, 0, warmup

    def step(self, metric: float) -> None:
        self.epochs_done += 1
        if self.epochs_done <= self.warmup_epochs:
            self.warmup.step()
        else:
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup.state_dict(), "plateau": self.plateau.state_dict(), "epochs": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup.load_state_dict(state["warmup"])
        self.plateau.load_state_dict(state["plateau"])
        self.epochs_done = int(state["epochs"])


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The run's LR schedule, stepped once per epoch by :func:`step_scheduler`.

    * plateau: ReduceLROnPlateau on the validation loss (--lr-factor, --lr-patience, --min-lr);
    * cosine: CosineAnnealingLR from --lr down to --min-lr at the last epoch;
    * step: MultiStepLR, times --lr-factor at 1/3 and 2/3 of the epochs (He et al.'s schedule scaled to the run);

    each after ``warmup_epochs`` of LinearLR from lr/(warmup+1) up to lr.
    """
    warmup = int(config.warmup_epochs or 0)
    if config.schedule == "plateau":
        plateau = lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
        )
        return WarmupThenPlateau(optimizer, warmup, plateau) if warmup else plateau
    after = max(1, config.epochs - warmup)
    main: lr_scheduler.LRScheduler
    if config.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=after, eta_min=config.min_lr)
    else:
        milestones = sorted({max(1, round(after / 3)), max(1, round(2 * after / 3))})
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.lr_factor)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def step_scheduler(scheduler: Any, val_loss: float) -> None:
    """Advance the schedule by one epoch; the plateau schedules read the validation loss."""
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau | WarmupThenPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


# --- MixUp / CutMix and EMA ------------------------------------------------------------------------------------


def make_mixer(config: TrainConfig, num_classes: int) -> nn.Module | None:
    """torchvision's MixUp and/or CutMix over a batch (one of them at random per batch when both are on), or None.

    They draw from torch's global generator, which every checkpoint saves, so a resumed run mixes alike.
    """
    from torchvision.transforms import v2

    ops: list[nn.Module] = []
    if config.mixup:
        ops.append(v2.MixUp(alpha=float(config.mixup), num_classes=num_classes))
    if config.cutmix:
        ops.append(v2.CutMix(alpha=float(config.cutmix), num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (``torch.optim.swa_utils``), or None."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
