"""Early stopping on validation loss, with its own ``state_dict`` so exact resume keeps its count."""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    """Stop when validation loss has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        patience: epochs without an improvement before ``stopped`` becomes true (at least 1).
        min_delta: the smallest decrease of the loss that counts as an improvement (0 or more).
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be 0 or more, got {min_delta}")
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
        """Forget the count of bad epochs (extending an early-stopped run), keeping the best value."""
        self.bad_epochs = 0
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped = bool(state["stopped"])
