"""What a run folder owns, and the checks around it: claiming a folder for a new run, ``--force``, numbered
default folders, clean-up after a failed start, and the data checks a resume depends on.

A run folder records the files the tool wrote there (:data:`resnet_cli.fs.OWNED_NAME`); ``--force`` removes
exactly those, and only after every other check has passed. A folder that holds anything else, and is not
one of our runs, is never emptied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from resnet_cli.config import ModelConfig, PreprocessConfig, TrainConfig
from resnet_cli.data.split import Manifest, default_manifest_path, read_manifest
from resnet_cli.engine.device import Placement
from resnet_cli.engine.distributed import DistInfo
from resnet_cli.engine.state import RunMeta, read_run_meta, versions
from resnet_cli.errors import CheckpointError, ConfigError, DatasetError, OutputExistsError
from resnet_cli.fs import LOCK_NAME, OWNED_NAME, atomic_write_text, check_not_busy, owned_files, remove_owned
from resnet_cli.io.checkpoint import read_project_checkpoint
from resnet_cli.io.weights import read_run_config
from resnet_cli.models import canonical_arch

#: Files a training run writes itself (recorded as the run's own as they are written).
RUN_FILES = (
    "config.json",
    "classes.json",
    "history.csv",
    "last.pt",
    "best.pt",
    "run.json",
    "manifest.csv",
    "data-stat.json",
)
DATA_STAT_NAME = "data-stat.json"
_DATA_STAT_FORMAT = "resnet-cli data stat"
_IGNORED = {LOCK_NAME}


@dataclass(frozen=True)
class FolderState:
    """What is in a folder about to become a run folder."""

    exists: bool
    owned: frozenset[str]  # files the tool recorded as its own
    foreign: tuple[str, ...]  # everything else (a user's files, or an unrecorded 0.1.0 run's)
    legacy_run: bool  # a run written by 0.1.0, which recorded no list of its files

    @property
    def is_run(self) -> bool:
        return bool(self.owned)

    @property
    def empty(self) -> bool:
        return not self.owned and not self.foreign


def inspect_folder(run_dir: Path) -> FolderState:
    """Look at ``run_dir`` without changing anything.

    Raises:
        ConfigError: ``run_dir`` is a file.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file: give a folder for the run")
    if not run_dir.exists():
        return FolderState(False, frozenset(), (), False)
    owned = frozenset(owned_files(run_dir))
    names = sorted(p.name for p in run_dir.iterdir() if p.name not in _IGNORED | {OWNED_NAME})
    foreign = tuple(n for n in names if n not in owned and not _is_stale_temporary(n, owned))
    legacy = not owned and _looks_like_legacy_run(run_dir)
    return FolderState(True, owned, foreign, legacy)


def check_new_run_folder(run_dir: Path, force: bool) -> FolderState:
    """Decide, before anything is touched, whether a new run may start in ``run_dir``.

    Raises:
        OutputExistsError: the folder holds a run and ``force`` is false, or holds files the tool did not write.
        RunBusyError: another process is writing in it.
        ConfigError: ``run_dir`` is a file.
    """
    state = inspect_folder(run_dir)
    if state.exists:
        check_not_busy(run_dir)
    if state.empty:
        return state
    if state.foreign:
        shown = ", ".join(state.foreign[:4]) + (", ..." if len(state.foreign) > 4 else "")
        if state.legacy_run and not force:
            raise OutputExistsError(
                f"{run_dir} already holds a run: pass --resume to continue it, or --out for a new folder"
            )
        if state.legacy_run:
            raise OutputExistsError(
                f"{run_dir} holds a run written by resnet-cli 0.1.0, which recorded no list of its own files, so "
                f"--force cannot tell them from yours ({shown}): delete the folder yourself, or choose another --out"
            )
        what = "holds files resnet did not write" if state.is_run else "is not empty and is not a resnet run"
        raise OutputExistsError(f"--out {run_dir} {what} ({shown}): choose a new or empty folder; nothing was changed")
    if not force:
        resumable = "last.pt" in state.owned and (run_dir / "last.pt").is_file()
        hint = "pass --resume to continue it, --force to start over" if resumable else "pass --force to start over"
        raise OutputExistsError(
            f"{run_dir} already holds a run ({', '.join(sorted(state.owned)[:4])}): {hint}, or --out for a new folder"
        )
    return state


def clear_run(run_dir: Path) -> list[str]:
    """``--force``: delete the files the tool recorded as the run's own (the caller holds the lock)."""
    return remove_owned(run_dir)


def numbered_run_dir(base: Path) -> Path:
    """``base`` if it is free (absent or empty), else the first free ``base-2``, ``base-3``, ... (as YOLO does)."""

    def free(path: Path) -> bool:
        return not path.exists() or (path.is_dir() and not any(path.iterdir()))

    if free(base):
        return base
    n = 2
    while not free(base.with_name(f"{base.name}-{n}")):
        n += 1
    return base.with_name(f"{base.name}-{n}")


def latest_run_dir(base: Path) -> Path:
    """The highest-numbered existing sibling of ``base`` (``runs/r34-3`` over ``runs/r34``), for ``--resume``."""
    pattern = re.compile(re.escape(base.name) + r"-(\d+)$")
    best, number = base, 1
    if base.parent.is_dir():
        for entry in base.parent.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir() and int(match.group(1)) > number:
                best, number = entry, int(match.group(1))
    return best


def cleanup_failed_start(run_dir: Path, created: bool) -> None:
    """Undo a start that failed before any checkpoint: remove what this run wrote, and the folder if it made it."""
    if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
        return
    remove_owned(run_dir)
    if created:
        # The lock is still held by this process: its file goes now, the flock with the open descriptor.
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # something else appeared in it meanwhile: leave it
            run_dir.rmdir()


# -- data checks for resume -------------------------------------------------------------------------------------


def data_stat(manifest: Manifest) -> list[list[Any]]:
    """``[path, size, mtime_ns, ctime_ns, inode]`` of every listed file, in manifest order (no reads).

    Raises:
        DatasetError: a listed file is missing.
    """
    table, missing = [], []
    for row in manifest.rows:
        try:
            st = (manifest.root / row.path).stat()
        except OSError:
            missing.append(row.path)
            continue
        table.append([row.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) of {manifest.path} are missing under {manifest.root}, e.g. {missing[0]}: "
            "pass --data with the folder that holds them, or run 'resnet split' again"
        )
    return table


def data_fingerprint(table: list[list[Any]]) -> str:
    """Hash of every listed file's path and size, from a :func:`data_stat` table (kept for 0.1.0 checkpoints,
    which recorded it)."""
    digest = hashlib.sha256()
    for path, size, *_ in table:
        digest.update(f"{path}\0{size}\n".encode())
    return digest.hexdigest()


def write_data_stat(run_dir: Path, table: list[list[Any]]) -> None:
    doc = {"format": _DATA_STAT_FORMAT, "files": table}
    atomic_write_text(run_dir / DATA_STAT_NAME, json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")


def verify_data_unchanged(run_dir: Path, manifest: Manifest) -> list[list[Any]]:
    """Check that the images are the ones the run started with, by content.

    A file whose size, modification time, change time and inode all match the run's record is taken as
    unchanged; every other file is hashed again and compared with the manifest's SHA-256, so a resume stays
    fast and swapped, edited or replaced images are still caught. Runs without a record (0.1.0) hash all.

    Returns:
        The current stat table (to record again when files were re-hashed and found intact).

    Raises:
        DatasetError: a file is missing or its content differs from the manifest's hash.
    """
    current = data_stat(manifest)
    recorded: dict[str, list[Any]] = {}
    try:
        doc = json.loads((run_dir / DATA_STAT_NAME).read_text(encoding="utf-8"))
        if doc.get("format") == _DATA_STAT_FORMAT:
            recorded = {entry[0]: entry for entry in doc["files"]}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        recorded = {}
    changed = []
    for entry, row in zip(current, manifest.rows, strict=True):
        if recorded.get(entry[0]) == entry:
            continue
        if _sha256(manifest.root / row.path) != row.sha256:
            changed.append(row.path)
    if changed:
        raise DatasetError(
            f"cannot resume {run_dir}: {len(changed)} image(s) under {manifest.root} changed content since the "
            f"run started, e.g. {changed[0]} (its SHA-256 no longer matches {manifest.path}): restore them, or "
            "split again and start a new run"
        )
    return current


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_stale_temporary(name: str, owned: frozenset[str]) -> bool:
    # ".last.pt.k3j2.tmp": an atomic write of one of the run's own files, left by a killed process.
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return any(name.startswith(f".{own}.") for own in owned | set(RUN_FILES))


def _looks_like_legacy_run(run_dir: Path) -> bool:
    doc = read_run_config(run_dir)
    return doc is not None and "train" in doc


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run folder of this tool (recorded, or written by 0.1.0)."""
    return path.is_dir() and (bool(owned_files(path)) or _looks_like_legacy_run(path))


def ensure_folder(run_dir: Path) -> bool:
    """Create ``run_dir`` (and parents) if needed; returns whether it was created."""
    if run_dir.is_dir():
        return False
    os.makedirs(run_dir, exist_ok=True)
    return True


# -- resume policy and config.json ------------------------------------------------------------------------------

#: Options a resumed run may change; everything else must match the checkpoint.
RESUMABLE_OVERRIDES = frozenset(
    {"epochs", "patience", "min_delta", "workers", "device", "gpus", "save_every", "max_steps_per_epoch", "compile"}
)


def resume_config(run_dir: str | os.PathLike[str], overrides: dict[str, Any]) -> TrainConfig:
    """The configuration of the run in ``run_dir`` with the allowed ``overrides`` applied.

    Raises:
        CheckpointError: nothing to resume.
        ConfigError: an override that would change what the run is (names the difference).
    """
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"nothing to resume in {run_dir}: no last.pt there (leave out --resume to start a run)")
    saved = read_run_meta(read_project_checkpoint(last)).config
    changes = {}
    for key, value in overrides.items():
        if key == "out" or value is None or (key == "precision" and value == "auto"):
            continue  # "choose automatically" repeats what the run already chose
        old = getattr(saved, key)
        if key == "arch":
            value, old = canonical_arch(value), canonical_arch(old)
        if key in ("data", "manifest") and value is not None and old is not None:
            same = Path(value).resolve() == Path(old).resolve()
            if not same:
                raise ConfigError(
                    f"cannot resume with --{key} {value}: the run in {run_dir} trained on {old}; "
                    "start a new run with --out"
                )
            continue
        if key == "epochs" and value != old and saved.schedule in ("cosine", "step"):
            raise ConfigError(
                f"cannot change --epochs when resuming {run_dir}: its {saved.schedule} schedule is laid out over "
                f"{old} epochs; start a new run (--init {Path(run_dir) / 'best.pt'} keeps the weights)"
            )
        if value != old and key not in RESUMABLE_OVERRIDES:
            raise ConfigError(
                f"cannot change --{key.replace('_', '-')} when resuming (the run used {old!r}, got {value!r}): "
                "start a new run with --out"
            )
        changes[key] = value
    return replace(saved, **changes)


def check_resume_matches(meta: RunMeta, manifest: Manifest, arch: str, run_dir: Path) -> None:
    """Refuse a resume whose architecture, classes or manifest differ from the run's.

    Raises:
        ConfigError, DatasetError: naming the difference.
    """
    saved_arch = meta.model_config.arch
    if saved_arch != arch:
        raise ConfigError(f"cannot resume {run_dir}: it trains {saved_arch}, not {arch}")
    if list(meta.classes) != list(manifest.classes):
        added = sorted(set(manifest.classes) - set(meta.classes))
        removed = sorted(set(meta.classes) - set(manifest.classes))
        raise DatasetError(
            f"cannot resume {run_dir}: the class list changed (added {added}, removed {removed}): start a new run"
        )
    if meta.manifest_sha256 != manifest.csv_sha256:
        raise DatasetError(
            f"cannot resume {run_dir}: {manifest.path} differs from the manifest the run started with "
            "(re-split?): start a new run with --out"
        )


def load_manifest(config: TrainConfig) -> Manifest:
    if config.manifest:
        return read_manifest(config.manifest, root=config.data if config.data and config.data != "data" else None)
    data = Path(config.data or "data")
    if not data.exists():
        raise DatasetError(
            f"data folder {data} does not exist: run 'resnet split {data} --val 0.2' on your ImageFolder, "
            "or pass --data DIR"
        )
    return read_manifest(default_manifest_path(data), root=data)


def run_config(
    resolved: TrainConfig,
    model_config: ModelConfig,
    pre: PreprocessConfig,
    manifest: Manifest,
    fingerprint: str,
    placement: Placement,
    dist: DistInfo,
) -> dict[str, Any]:
    return {
        "train": resolved.to_dict(),
        "model": model_config.to_dict(),
        "preprocess": pre.to_dict(),
        "classes": list(manifest.classes),
        "manifest": {
            "path": str(manifest.path.resolve()),
            "sha256": manifest.csv_sha256,
            "root": str(manifest.root.resolve()),
        },
        "data_fingerprint": fingerprint,
        "placement": {
            "device": str(placement.device),
            "gpus": list(placement.gpus),
            "precision": placement.precision,
            "channels_last": placement.channels_last,
            "world_size": dist.world_size,
        },
        "versions": versions(),
    }
