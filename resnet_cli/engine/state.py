"""The training state and the checkpoint schema, spelled in this one place.

:class:`TrainState` owns everything a run's future depends on: model, optimiser, scheduler, AMP scaler, early
stopping, the position (epochs completed, steps into the next), the current epoch's running sums, the best
record and the history. Its ``state_dict`` / ``load_state_dict`` are symmetric. :func:`checkpoint` adds the
run's metadata (:class:`RunMeta`), the RNG states and the loader position, and writes ``last.pt`` (all of it)
and ``best.pt`` (weights and metadata only); :func:`read_run_meta` reads the metadata back.

Schema versions (``state_version``): 1 is 0.1.0's layout (the same keys, without ``state_version``); 2 adds
the key and the eval-mode train figures in the history; 3 adds ``ema`` (the moving average's weights, or None)
and ``ema_updates``. All resume.
"""

from __future__ import annotations

import math
import platform
import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from resnet_cli import __version__
from resnet_cli.config import ModelConfig, PreprocessConfig, TrainConfig
from resnet_cli.engine.early_stopping import EarlyStopping
from resnet_cli.io.history import EpochRecord

STATE_VERSION = 3


@dataclass
class RunningSums:
    """The current epoch's running training figures. Loss and correct counts stay on the device (float64 and
    int64), so a step adds to them without a host sync; ``seen`` is known on the host from batch sizes."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    train_time: float = 0.0  # seconds spent in training steps
    epoch_time: float = 0.0  # seconds of the epoch before the last checkpoint, for a resumed epoch's timing
    lr: float | None = None  # the learning rate the epoch started with

    @classmethod
    def fresh(cls, device: torch.device | str = "cpu") -> RunningSums:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": float(self.loss_sum),
            "correct": int(self.correct),
            "seen": self.seen,
            "train_time": self.train_time,
            "epoch_time": self.epoch_time,
            "lr": self.lr,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], device: torch.device | str = "cpu") -> RunningSums:
        return cls(
            torch.tensor(float(data["loss_sum"]), dtype=torch.float64, device=device),
            torch.tensor(int(data["correct"]), dtype=torch.int64, device=device),
            int(data["seen"]),
            float(data["train_time"]),
            float(data["epoch_time"]),
            None if data.get("lr") is None else float(data["lr"]),
        )


@dataclass
class BestRecord:
    """The epoch with the lowest validation loss so far (0 before the first epoch)."""

    epoch: int = 0
    val_loss: float = math.inf
    val_acc: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_loss": self.val_loss, "val_acc": self.val_acc}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestRecord:
        return cls(int(data["epoch"]), float(data["val_loss"]), float(data["val_acc"]))


@dataclass
class TrainState:
    """Everything of a run that changes while it trains."""

    model: nn.Module  # the bare network (no DataParallel, DDP, compile or autocast wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler scheduler (ReduceLROnPlateau has no common base class)
    scaler: torch.amp.GradScaler
    stopper: EarlyStopping
    epoch: int = 0  # epochs completed
    step: int = 0  # training steps done in epoch ``epoch + 1`` (0 at an epoch end)
    sums: RunningSums = field(default_factory=RunningSums.fresh)
    best: BestRecord = field(default_factory=BestRecord)
    history: list[EpochRecord] = field(default_factory=list)
    ema: torch.optim.swa_utils.AveragedModel | None = None  # the weights' moving average (--ema)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's state dict on the CPU, contiguous, with torchvision's keys."""
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def ema_weights(self) -> dict[str, torch.Tensor] | None:
        """The moving average's state dict (torchvision's keys) on the CPU, or None without --ema."""
        if self.ema is None:
            return None
        return {k: v.detach().cpu().contiguous() for k, v in self.ema.module.state_dict().items()}

    def largest_parameter(self) -> float:
        """The largest parameter magnitude (inf or nan when some parameter is not finite)."""
        values = [p.detach().abs().max() for p in self.model.parameters() if p.is_floating_point() and p.numel()]
        return float(torch.stack(values).max()) if values else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "model": self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "early_stopping": self.stopper.state_dict(),
            "epoch": self.epoch,
            "batches_done": self.step,
            "partial": self.sums.to_dict(),
            "best": self.best.to_dict(),
            "history": [r.to_dict() for r in self.history],
            "ema": self.ema_weights(),
            "ema_updates": int(self.ema.n_averaged) if self.ema is not None else 0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`'s output, or from a 0.1.0 checkpoint (same keys, position under
        ``loader``)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.epoch = int(state["epoch"])
        self.step = int(state["batches_done"] if "batches_done" in state else state["loader"]["batches_done"])
        device = self.sums.loss_sum.device
        self.sums = RunningSums.from_dict(state["partial"], device)
        self.best = BestRecord.from_dict(state["best"])
        self.history = [EpochRecord(**r) for r in state["history"]]
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("the checkpoint holds no moving average of the weights")
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(int(state["ema_updates"]))


@dataclass(frozen=True)
class RunMeta:
    """What a checkpoint says about its run: enough to rebuild and use the model, and to check a resume."""

    model_config: ModelConfig
    classes: list[str]
    preprocess: PreprocessConfig
    config: TrainConfig  # the resolved options
    precision: str
    manifest_sha256: str
    data_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_config": self.model_config.to_dict(),
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_dict(),
            "config": self.config.to_dict(),
            "precision": self.precision,
            "manifest_sha256": self.manifest_sha256,
            "data_fingerprint": self.data_fingerprint,
        }


def read_run_meta(payload: dict[str, Any]) -> RunMeta:
    """The metadata of a checkpoint written by :func:`checkpoint` (or by 0.1.0)."""
    return RunMeta(
        ModelConfig.from_dict(payload["model_config"]),
        [str(c) for c in payload["classes"]],
        PreprocessConfig.from_dict(payload["preprocess"]),
        TrainConfig.from_dict(payload["config"]),
        str(payload.get("precision", "fp32")),
        str(payload.get("manifest_sha256", "")),
        str(payload.get("data_fingerprint", "")),
    )


@dataclass(frozen=True)
class LoaderPosition:
    """Where the training data stream stands, and what a mid-epoch resume must keep equal."""

    seed: int
    world_size: int
    batch_size: int

    def to_dict(self, state: TrainState) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": state.epoch + 1,
            "batches_done": state.step,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }


def checkpoint(
    state: TrainState, meta: RunMeta, loader: LoaderPosition, generator: torch.Generator, *, full: bool
) -> dict[str, Any]:
    """The payload of ``last.pt`` (``full``: everything a bit-exact resume needs) or ``best.pt`` (weights and
    metadata only: :func:`summary_of` the full payload)."""
    trained = state.state_dict() if full else None  # its weights serve both parts: one copy off the device
    summary = {
        **meta.to_dict(),
        "model": trained["model"] if trained else state.weights(),
        "ema": trained["ema"] if trained else state.ema_weights(),
        "epoch": state.epoch,
        "best": state.best.to_dict(),
        "versions": versions(),
    }
    if trained is None:
        return summary
    return {
        **summary,
        **trained,
        "rng": {**rng_state(), "loader_generator": generator.get_state()},
        "loader": loader.to_dict(state),
    }


#: The keys of ``best.pt``: the run's metadata (:class:`RunMeta`) and the weights of record.
SUMMARY_KEYS = (*(f.name for f in fields(RunMeta)), "model", "ema", "epoch", "best", "versions")


def summary_of(payload: dict[str, Any]) -> dict[str, Any]:
    """``best.pt``'s payload taken from ``last.pt``'s (:func:`checkpoint` with ``full``), sharing its tensors, so
    an epoch that writes both copies the weights off the device once."""
    return {key: payload[key] for key in SUMMARY_KEYS}


def restore_rng(payload: dict[str, Any], generator: torch.Generator) -> None:
    """Put back the global RNGs and the training loader's generator saved by :func:`checkpoint`."""
    state = payload["rng"]
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "loader_generator" in state:
        generator.set_state(state["loader_generator"])


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's, torch's and CUDA's RNG states as plain values and tensors (no pickled objects)."""
    version, keys, gauss = random.getstate()
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
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


def versions() -> dict[str, str]:
    import torchvision

    return {
        "resnet_cli": __version__,
        "torch": str(torch.__version__),  # a TorchVersion object, which weights_only loading refuses
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }
