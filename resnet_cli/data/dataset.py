"""Datasets over one part of a manifest, seeded batch samplers and the DataLoader factory.

Augmentation randomness is private and per sample: before transforming sample ``i`` in epoch ``e`` the
dataset seeds torch's generator with a hash of ``(seed, e, i)`` inside ``torch.random.fork_rng``, so the
global generator is left untouched and every image gets the same augmentation whatever the number of
workers, the batch it lands in, or where a resumed run restarted. The order of samples comes from
:class:`torch.utils.data.DistributedSampler` seeded with ``seed + epoch`` (one replica when not
distributed). Together they make training reproducible bit for bit on the CPU.

``--cache-images`` (:class:`ImageCache`) decodes every image once, in the main process before the loaders are
built, into one flat uint8 tensor; DataLoader workers forked afterwards share its pages copy-on-write (one
storage, so neither reference counts nor a spawned worker's pickling copy it per image). The cache holds the
images exactly as :meth:`ManifestDataset.load` returns them (after the reader's conversion to the run's
channels, before any transform), so it changes no number and resume stays exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.transforms.v2 import functional as F

from resnet_cli.data import images
from resnet_cli.data.split import ManifestRow
from resnet_cli.errors import ConfigError, DatasetError

#: File extensions sent whole to the batched JPEG decoder (``--decode gpu``); other files are decoded on the CPU.
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ManifestDataset(Dataset):
    """Images of one manifest part. Items are ``(tensor, class index)``.

    Keys are plain indices, or ``(index, seed)`` pairs from :class:`EpochBatchSampler` (seeded augmentation).
    Images with more pixels than ``max_pixels`` are refused; by default the limit is Pillow's, raised to the
    largest image the manifest records (``resnet split --max-pixels`` let it in).

    Args:
        cache: decoded images to read instead of the files (``--cache-images``); it must hold every row.
        raw: items are :class:`RawItem` (a plain JPEG's file bytes, anything else decoded; untransformed) for
            :class:`resnet_cli.data.decode.BatchDecodeLoader`, which decodes and transforms whole batches.
    """

    def __init__(
        self,
        root: str | Path,
        rows: Sequence[ManifestRow],
        classes: Sequence[str],
        transform: Callable[[torch.Tensor], torch.Tensor],
        channels: int,
        background: int = 255,
        max_pixels: int | None = None,
        cache: ImageCache | None = None,
        raw: bool = False,
    ) -> None:
        self.root = Path(root)
        self.paths = [r.path for r in rows]
        self.cache = cache
        self.raw = raw
        self.slots = cache.slots(self.paths) if cache is not None else []
        index = {c: i for i, c in enumerate(classes)}
        try:
            self.targets = [index[r.label] for r in rows]
        except KeyError as exc:
            raise DatasetError(f"class {exc.args[0]!r} of the manifest is not among the model's classes") from None
        self.transform = transform
        self.channels = channels
        self.background = background
        self.max_pixels = max_pixels if max_pixels is not None else _pixel_limit(rows)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        """The decoded, untransformed image as a uint8 tensor (C, H, W)."""
        if self.cache is not None:
            return self.cache.get(self.slots[index])
        return decode_file(self.root / self.paths[index], self.channels, self.background, self.max_pixels)

    def load_raw(self, index: int) -> tuple[torch.Tensor, bool]:
        """``(file bytes, True)`` for a JPEG the batched decoder reads as :meth:`load` would (``L`` or ``RGB``,
        upright, within the pixel limit), else ``(decoded pixels, False)``."""
        path = self.root / self.paths[index]
        if path.suffix.lower() not in JPEG_EXTENSIONS:
            return self.load(index), False
        with _read_errors(path):
            data = images.read_file(path, images.max_file_bytes(self.max_pixels))
            if not _plain_jpeg(data, self.max_pixels):
                return F.pil_to_tensor(images.decode(data, self.channels, self.background, self.max_pixels)), False
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), True

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[Any]:
        """A whole batch: the DataLoader calls this with the batch sampler's keys.

        Seeded keys share one ``fork_rng`` per batch (saving and restoring the global generator costs more
        than seeding it), so the global generator is untouched and each sample still sees its own seed.
        """
        if self.raw:
            raw = []
            for key in keys:
                index, seed = key if isinstance(key, tuple) else (key, None)
                data, jpeg = self.load_raw(index)
                raw.append(RawItem(data, jpeg, seed, self.targets[index]))
            return raw
        if not any(isinstance(key, tuple) for key in keys):
            return [(self.transform(self.load(i)), self.targets[i]) for i in keys]
        items = []
        with torch.random.fork_rng(devices=[]):
            for key in keys:
                index, seed = key if isinstance(key, tuple) else (key, None)
                pixels = self.load(index)
                if seed is not None:
                    torch.default_generator.manual_seed(seed)  # the CPU generator only; CUDA's stay untouched
                items.append((self.transform(pixels), self.targets[index]))
        return items


class RawItem(NamedTuple):
    """One sample for batched decoding: a JPEG file's bytes (``jpeg``) or decoded pixels, untransformed."""

    data: torch.Tensor  # uint8: the file's bytes (1-D) when jpeg, else pixels (C, H, W)
    jpeg: bool
    seed: int | None  # augmentation seed (training), None for evaluation
    target: int


def keep_list(items: list[RawItem]) -> list[RawItem]:
    """A collate function that keeps a batch as its list of items (their images differ in size)."""
    return items


def decode_file(path: Path, channels: int, background: int, max_pixels: int | None) -> torch.Tensor:
    """One image file decoded by :func:`resnet_cli.data.images.load`, as a uint8 tensor (C, H, W).

    Raises:
        DatasetError: the file cannot be read or decoded, named with what to do.
    """
    with _read_errors(path):
        image = images.load(path, channels, background, max_pixels)
    tensor: torch.Tensor = F.pil_to_tensor(image)  # torchvision ships no type information
    return tensor


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn a file's read and decode errors into one-line :class:`DatasetError` naming it."""
    try:
        yield
    except images.ImageDecodeError as exc:
        raise DatasetError(f"cannot decode {path}: {exc}; run 'resnet split' again to check the data") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; run 'resnet split' again") from None


def _plain_jpeg(data: bytes, max_pixels: int | None) -> bool:
    """Whether a batched JPEG decoder gives what :func:`images.decode` would: a baseline ``L``/``RGB`` JPEG,
    upright (no EXIF rotation), within the pixel limit. Reads the header only."""
    limit = max_pixels if max_pixels is not None else images.default_max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                return (
                    image.format == "JPEG"
                    and image.mode in ("L", "RGB")
                    and (limit is None or width * height <= limit)
                    and image.getexif().get(0x0112, 1) in (None, 1)
                )
    except Exception:  # anything odd: the CPU path decodes it, or raises its own error
        return False


class ImageCache:
    """Decoded images (uint8, C x H x W, as :meth:`ManifestDataset.load` returns them) of a set of manifest rows,
    held in one flat tensor and filled at construction.

    Args:
        root: the data folder the rows' paths are relative to.
        rows: the images to hold (rows repeated by path are held once).
        channels, background: as :class:`ManifestDataset`'s.
        threads: decoding threads (Pillow releases the GIL while decoding); default: this machine's CPUs, at most 8.
        ram_bytes: the machine's memory for the size check (default: :func:`physical_ram`).

    Raises:
        ConfigError: the images would take more than half of ``ram_bytes``.
        DatasetError: an image cannot be read or decoded, or no longer has its manifest size.
    """

    def __init__(
        self,
        root: str | Path,
        rows: Sequence[ManifestRow],
        channels: int,
        background: int = 255,
        threads: int | None = None,
        ram_bytes: int | None = None,
    ) -> None:
        unique = list({r.path: r for r in rows}.values())
        check_cache_fits(unique, channels, ram_bytes)
        self.channels = channels
        self.index = {r.path: i for i, r in enumerate(unique)}
        sizes = [channels * r.width * r.height for r in unique]
        self.offsets = [0, *np.cumsum(sizes, dtype=np.int64).tolist()]
        self.shapes: list[tuple[int, ...]] = [(channels, r.height, r.width) for r in unique]
        self.flat = torch.empty(self.offsets[-1], dtype=torch.uint8)
        limit = _pixel_limit(unique)
        root = Path(root)

        def fill(slot: int) -> None:
            row = unique[slot]
            pixels = decode_file(root / row.path, channels, background, limit)
            if pixels.numel() != sizes[slot]:
                raise DatasetError(
                    f"{root / row.path} is {pixels.shape[2]}x{pixels.shape[1]} px, not the {row.width}x{row.height} "
                    "px the manifest records: run 'resnet split' again"
                )
            self.shapes[slot] = tuple(pixels.shape)  # EXIF rotation may swap the sides
            self.flat[self.offsets[slot] : self.offsets[slot + 1]] = pixels.reshape(-1)

        if threads is None:
            threads = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(fill, range(len(unique))))  # list(): re-raises the first error

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def nbytes(self) -> int:
        return int(self.flat.numel())

    def slots(self, paths: Sequence[str]) -> list[int]:
        """The cache positions of ``paths`` (each must be held)."""
        try:
            return [self.index[p] for p in paths]
        except KeyError as exc:
            raise DatasetError(f"{exc.args[0]} is not in the image cache") from None

    def get(self, slot: int) -> torch.Tensor:
        """A copy of one image: transforms then never see (nor could change) the shared pixels."""
        return self.flat[self.offsets[slot] : self.offsets[slot + 1]].view(self.shapes[slot]).clone()


def physical_ram() -> int | None:
    """This machine's physical memory in bytes (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def cache_bytes(rows: Sequence[ManifestRow], channels: int) -> int:
    """The bytes :class:`ImageCache` takes for ``rows``, from the sizes the manifest records."""
    return channels * sum(r.width * r.height for r in {r.path: r for r in rows}.values())


def check_cache_fits(rows: Sequence[ManifestRow], channels: int, ram_bytes: int | None = None) -> None:
    """Refuse a cache of more than half the machine's memory (the rest is for the model, workers and the system).

    Raises:
        ConfigError: naming the cache's size and the memory.
    """
    ram = ram_bytes if ram_bytes is not None else physical_ram()
    need = cache_bytes(rows, channels)
    if ram is not None and need > ram // 2:
        raise ConfigError(
            f"--cache-images needs {_size(need)} for {len(rows):,} decoded images, over half of the {_size(ram)} of "
            "RAM here: leave out --cache-images, or train on fewer or smaller images"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _pixel_limit(rows: Sequence[ManifestRow]) -> int | None:
    default = images.default_max_pixels()
    if default is None:
        return None
    return max([default] + [r.width * r.height for r in rows])


class EpochBatchSampler(Sampler[list]):
    """Batches of ``(index, augmentation seed)`` (training) or plain indices (evaluation) for one rank,
    reproducible from ``(seed, epoch)``.

    Args:
        size: samples in the dataset.
        batch_size: samples per batch (per rank).
        seed: run seed.
        shuffle: reshuffle every epoch (training) or keep the manifest order (evaluation).
        rank, world_size: this process's shard when distributed.
        train: pad shards to equal length like DistributedSampler and drop a final batch of one sample
            (BatchNorm cannot normalise a batch of one); evaluation shards are unpadded so every sample is
            seen exactly once.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        train: bool = True,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.train = train
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; skip the first ``start_batch`` batches (resuming mid-epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _indices(self) -> list[int]:
        if self.train:
            # DistributedSampler only takes len() of its dataset, but its stub asks for a Dataset.
            sampler: DistributedSampler[int] = DistributedSampler(
                range(self.size),  # type: ignore[arg-type]
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=self.shuffle,
                seed=self.seed,
            )
            sampler.set_epoch(self.epoch)
            return list(sampler)
        return list(range(self.rank, self.size, self.world_size))

    def _batches(self) -> list[list[int]]:
        order = self._indices()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.train and batches and len(batches[-1]) == 1 and len(batches) > 1:
            batches.pop()
        return batches

    def total_batches(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list]:
        for batch in self._batches()[self.start_batch :]:
            if self.train:
                yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]
            else:  # evaluation transforms are deterministic: plain indices, no seeding
                yield list(batch)

    def __len__(self) -> int:
        return max(0, self.total_batches() - self.start_batch)


def _init_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process turns it into a clean stop and a checkpoint,
    # which a worker dying of KeyboardInterrupt mid-batch would prevent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # DataLoader seeds torch in each worker from its private generator; derive python's and numpy's from it.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_sampler: Sampler,
    workers: int,
    seed: int,
    pin_memory: bool = False,
    persistent: bool = True,
    collate_fn: Callable[[list], Any] | None = None,
) -> DataLoader:
    """A DataLoader with seeded workers (persistent across epochs unless ``persistent`` is false) and a private
    generator (never the global one)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        worker_init_fn=_init_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if workers > 0 else None,
    )


def compute_mean_std(
    dataset: ManifestDataset, batch_size: int, workers: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a dataset's pixels in [0, 1] (``--normalize dataset``).

    ``dataset`` should use the evaluation transform without normalisation; sums are accumulated in float64.
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, 0, shuffle=False, train=False)
    total = torch.zeros(dataset.channels, dtype=torch.float64)
    squares = torch.zeros(dataset.channels, dtype=torch.float64)
    count = 0
    for x, _ in make_loader(dataset, sampler, workers, 0, persistent=False):
        x = x.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(max(float(v), 1e-3), 6) for v in std)
