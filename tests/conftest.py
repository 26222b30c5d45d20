"""Shared fixtures. Image fixtures are real files on disk, written by the tests or by ``resnet sample-data``."""

from __future__ import annotations

import os

import pytest
import torch

# Two CPU cores here: keep torch from oversubscribing when pytest and subprocesses run side by side.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
