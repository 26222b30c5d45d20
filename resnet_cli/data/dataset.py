"""Datasets over one part of a manifest, seeded batch samplers and the DataLoader factory.

Augmentation randomness is private and per sample: before transforming sample ``i`` in epoch ``e`` the
dataset seeds torch's generator with a hash of ``(seed, e, i)`` inside ``torch.random.fork_rng``, so the
global generator is left untouched and every image gets the same augmentation whatever the number of
workers, the batch it lands in, or where a resumed run restarted. The order of samples comes from
:class:`torch.utils.data.DistributedSampler` seeded with ``seed + epoch`` (one replica when not
distributed). Together they make training reproducible bit for bit on the CPU.
"""

from __future__ import annotations

import hashlib
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.transforms.v2 import functional as F

from resnet_cli.data import images
from resnet_cli.data.split import ManifestRow
from resnet_cli.errors import DatasetError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ManifestDataset(Dataset):
    """Images of one manifest part. Items are ``(tensor, class index)``.

    Keys are plain indices, or ``(index, seed)`` pairs from :class:`EpochBatchSampler` (seeded augmentation).
    Images with more pixels than ``max_pixels`` are refused; by default the limit is Pillow's, raised to the
    largest image the manifest records (``resnet split --max-pixels`` let it in).
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
    ) -> None:
        self.root = Path(root)
        self.paths = [r.path for r in rows]
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
        path = self.root / self.paths[index]
        try:
            image = images.load(path, self.channels, self.background, self.max_pixels)
        except images.ImageDecodeError as exc:
            raise DatasetError(f"cannot decode {path}: {exc}; run 'resnet split' again to check the data") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; run 'resnet split' again") from None
        tensor: torch.Tensor = F.pil_to_tensor(image)  # torchvision ships no type information
        return tensor

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[tuple[torch.Tensor, int]]:
        """A whole batch: the DataLoader calls this with the batch sampler's keys.

        Seeded keys share one ``fork_rng`` per batch (saving and restoring the global generator costs more
        than seeding it), so the global generator is untouched and each sample still sees its own seed.
        """
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
) -> DataLoader:
    """A DataLoader with seeded workers (persistent across epochs unless ``persistent`` is false) and a private
    generator (never the global one)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
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
