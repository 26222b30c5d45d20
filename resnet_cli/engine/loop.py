"""One epoch of training and one pass of validation, as plain functions.

A training step costs one host sync: the step's loss (for the NaN check) and the epoch's running sums (for
progress) come back to the host together; the sums themselves stay on the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from resnet_cli.engine import distributed
from resnet_cli.engine.callbacks import BatchStats, Callback, StopRequest
from resnet_cli.engine.device import Placement
from resnet_cli.engine.distributed import DistInfo
from resnet_cli.engine.inference import predict_batches, to_device
from resnet_cli.engine.state import TrainState


class Diverged(Exception):
    """The loss became non-finite at ``epoch``, ``step`` (the caller says what was kept)."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value = epoch, step, value


class OutOfMemory(Exception):
    """A training step ran out of memory at ``epoch``, ``step``; step 0 is the epoch's validation."""

    def __init__(self, epoch: int, step: int, detail: str) -> None:
        super().__init__(detail)
        self.epoch, self.step = epoch, step


@dataclass
class Step:
    """What trains one step: the (possibly wrapped) network, its loss and how it runs."""

    net: nn.Module
    criterion: nn.Module
    placement: Placement
    dist: DistInfo
    label_smoothing: float = 0.0
    mix: nn.Module | None = None  # MixUp/CutMix over the batch: targets become class probabilities
    clip_grad: float = 0.0  # gradient-norm clipping (0: off)


def train_one_epoch(
    state: TrainState,
    step: Step,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epoch: int,
    steps: int,
    cb: Callback,
    stop: StopRequest,
    every: int = 0,
    on_every: Callable[[], None] | None = None,
) -> bool:
    """Train from step ``state.step`` to ``steps`` of ``epoch``, updating ``state``.

    Args:
        every, on_every: call ``on_every`` after every ``every``-th step (mid-epoch checkpoints); 0: never.

    Returns:
        True when a stop was requested (agreed by every rank); the step it was seen at is complete.

    Raises:
        Diverged: a non-finite loss (before the step that would have applied it).
        OutOfMemory: the step did not fit in memory.
    """
    sums = state.sums
    step.net.train()
    tick = time.perf_counter()
    batches = iter(loader)
    while True:
        try:  # decoding and stacking a batch can run out of memory as well as the step
            x, y = next(batches)
        except StopIteration:
            break
        except (RuntimeError, MemoryError) as exc:
            raise as_out_of_memory(exc, epoch, state.step + 1) from None
        state.step += 1
        try:
            x = to_device(x, step.placement)
            y = y.to(step.placement.device, non_blocking=True)
            target = y
            if step.mix is not None:  # soft targets; accuracy counts the label with the larger share of each image
                x, target = step.mix(x, y)
                y = target.argmax(1)
            logits = step.net(x)
            loss = step.criterion(logits.float(), target)
        except (RuntimeError, MemoryError) as exc:  # torch turns a failed C++ allocation into MemoryError
            raise as_out_of_memory(exc, epoch, state.step) from None
        with torch.no_grad():
            # History reports plain cross-entropy (against the mixed targets under MixUp/CutMix); the optimiser
            # still minimises the smoothed loss.
            plain = nn.functional.cross_entropy(logits.float(), target) if step.label_smoothing else loss
            sums.loss_sum += plain.detach().double() * len(y)
            sums.correct += (logits.detach().argmax(1) == y).sum()
            loss_value, loss_sum, correct = torch.stack(
                [loss.detach().double(), sums.loss_sum, sums.correct.double()]
            ).tolist()  # the step's one host sync
        bad, stopping = distributed.any_rank(
            [not math.isfinite(loss_value), stop.requested], step.dist, step.placement.device
        )
        if bad:
            raise Diverged(epoch, state.step, loss_value)
        state.optimizer.zero_grad(set_to_none=True)
        try:  # the first optimiser step allocates its moments, the first EMA update its copy
            state.scaler.scale(loss).backward()
            if step.clip_grad:
                state.scaler.unscale_(state.optimizer)
                nn.utils.clip_grad_norm_(state.model.parameters(), step.clip_grad)
            state.scaler.step(state.optimizer)
            state.scaler.update()
            if state.ema is not None:
                state.ema.update_parameters(state.model)
        except (RuntimeError, MemoryError) as exc:  # torch turns a failed C++ allocation into MemoryError
            raise as_out_of_memory(exc, epoch, state.step) from None
        sums.seen += len(y)
        now = time.perf_counter()
        sums.train_time += now - tick
        tick = now
        cb.on_batch_end(
            epoch,
            BatchStats(
                step=state.step,
                steps=steps,
                loss=loss_sum / sums.seen,
                accuracy=correct / sums.seen,
                images_per_s=sums.seen / max(sums.train_time, 1e-9),
            ),
        )
        if stopping:  # agreed by every rank; a signal arriving later is seen at the next step
            return True
        if every and on_every is not None and state.step % every == 0 and state.step < steps:
            on_every()
        if state.step >= steps:
            break
    return False


def validate(
    net: nn.Module,
    loader: DataLoader[Any],
    placement: Placement,
    cb: Callback | None = None,
    stop: StopRequest | None = None,
) -> tuple[float, int, int]:
    """Summed cross-entropy, correct predictions and images of ``loader``, in eval mode without gradients."""
    loss_sum, correct, seen = 0.0, 0, 0
    for logits, targets in predict_batches(net, loader, placement, cb, stop):
        loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
    return loss_sum, correct, seen


def as_out_of_memory(exc: BaseException, epoch: int, step: int) -> BaseException:
    """:class:`OutOfMemory` when ``exc`` is an allocation failure, else ``exc`` itself."""
    text = str(exc)
    if (
        isinstance(exc, (torch.OutOfMemoryError, MemoryError))
        or "can't allocate memory" in text
        or ("out of memory" in text.lower())
    ):
        return OutOfMemory(epoch, step, text.splitlines()[0] if text else type(exc).__name__)
    return exc
