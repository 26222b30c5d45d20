"""The forward-only loop shared by validation, ``resnet eval`` and ``resnet predict``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from resnet_cli.engine.callbacks import Callback, StopRequest
from resnet_cli.engine.device import Placement, autocast, resolve_channels_last, resolve_precision
from resnet_cli.io.weights import LoadedWeights


class AutocastForward(nn.Module):
    """Runs the wrapped network's forward under autocast.

    Autocast is thread-local, so a context around ``DataParallel(model)(x)`` would not reach the replicas'
    threads; putting it inside the module's forward does. The wrapper holds no parameters of its own.
    """

    wraps_model = True

    def __init__(self, model: nn.Module, placement: Placement) -> None:
        super().__init__()
        self.model = model
        self.placement = placement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.placement):
            logits: torch.Tensor = self.model(x)
            return logits


def to_device(x: torch.Tensor, placement: Placement) -> torch.Tensor:
    x = x.to(placement.device, non_blocking=True)
    if placement.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def predict_batches(
    model: nn.Module,
    loader: DataLoader[Any],
    placement: Placement,
    callback: Callback | None = None,
    stop: StopRequest | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(float32 logits on the CPU, targets)`` per batch, in eval mode and inference mode.

    Stops early (returns) when ``stop`` is requested.
    """
    model.eval()
    steps = len(loader)
    with torch.inference_mode():
        for step, (x, y) in enumerate(loader, start=1):
            logits = model(to_device(x, placement)).float().cpu()
            yield logits, y
            if callback is not None:
                callback.on_validation_step(step, steps)
            if stop is not None and stop.requested:
                return


def inference_precision(precision: str, weights: LoadedWeights, device: torch.device) -> str:
    """``auto`` means the precision the weights were trained (and validated) in, where this device can run it."""
    if precision != "auto":
        return resolve_precision(precision, device)
    trained = weights.precision
    if trained == "fp16" and device.type != "cuda":
        return "fp32"
    return trained if trained in ("fp32", "bf16", "fp16") else "fp32"


def inference_network(weights: LoadedWeights, device: torch.device, precision: str) -> tuple[nn.Module, Placement]:
    """The weights' network on ``device`` in eval mode, wrapped to run under the resolved precision."""
    placement = Placement(
        device, (), inference_precision(precision, weights, device), resolve_channels_last(None, device)
    )
    model = weights.build().to(device)
    if placement.channels_last:
        model.to(memory_format=torch.channels_last)
    return AutocastForward(model, placement).eval(), placement
