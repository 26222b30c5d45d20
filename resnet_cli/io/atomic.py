"""Compatibility home of the atomic-write helpers, which live in :mod:`resnet_cli.fs` (the ground floor)."""

from __future__ import annotations

from resnet_cli.fs import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
    refuse_overwrite,
    refuse_overwrite_unless_owned,
)

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "refuse_overwrite",
    "refuse_overwrite_unless_owned",
]
