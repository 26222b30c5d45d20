"""``--decode``: where JPEGs are decoded, and batched decoding on the GPU.

``--decode gpu`` splits loading in two. DataLoader workers read the files (:class:`ManifestDataset` with
``raw=True`` gives each plain JPEG's bytes, and decodes anything else on the CPU as usual); the main process
decodes each batch's JPEGs at once with ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG), runs the
run's transforms per sample on the GPU tensors and stacks them (:class:`BatchDecodeLoader`). The transforms v2
draw their random parameters from torch's CPU generator, which is seeded per sample exactly as the dataset
does, so a run decoded on the GPU augments every image alike on every pass and resumes exactly. nvJPEG's
pixels may differ from Pillow's by a level or two (another IDCT and colour conversion), so switching
``--decode`` changes the numbers a little, as switching the device does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from resnet_cli.data.dataset import JPEG_EXTENSIONS, RawItem
from resnet_cli.data.split import ManifestRow
from resnet_cli.errors import ConfigError

DECODE_CHOICES = ("auto", "cpu", "gpu")


def check_decode(decode: str, device: str, cache_images: bool = False) -> None:
    """Check ``--decode`` against the other options and this machine, before any data is read.

    Args:
        device: the ``--device`` option (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        ConfigError: an unknown value, or ``gpu`` without a CUDA device to decode on.
    """
    if decode not in DECODE_CHOICES:
        raise ConfigError(f"--decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
    if decode != "gpu":
        return
    if device == "cpu":
        raise ConfigError("--decode gpu needs a CUDA device: --device is cpu (use --decode cpu, or --device cuda)")
    if not torch.cuda.is_available():
        raise ConfigError("--decode gpu needs a CUDA device: this machine has none usable (use --decode cpu or auto)")
    if cache_images:
        raise ConfigError("--decode gpu decodes every epoch, --cache-images only once: leave out one of them")


def resolve_decode(decode: str, device: torch.device, rows: Sequence[ManifestRow], cache_images: bool = False) -> str:
    """``cpu`` or ``gpu``: ``auto`` is ``gpu`` when the run trains on CUDA, caches nothing and most of ``rows``
    (the train images) are JPEG files."""
    if decode != "auto":
        return decode
    jpegs = sum(Path(r.path).suffix.lower() in JPEG_EXTENSIONS for r in rows)
    return "gpu" if device.type == "cuda" and not cache_images and 2 * jpegs > len(rows) else "cpu"


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """One channel from uint8 RGB (3, H, W) with Pillow's own ITU-R 601-2 integer formula, so a JPEG decoded to
    RGB and reduced here matches Pillow's ``convert("L")`` within the decoders' difference (a decoder's own
    greyscale output is the file's Y plane, which differs from Pillow's by several levels on busy images)."""
    r, g, b = rgb.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


class BatchDecodeLoader:
    """Batches ``(images, targets)`` like a DataLoader over :class:`ManifestDataset`, decoding each batch's
    JPEGs together on ``device`` and transforming them there.

    It wraps a DataLoader of :class:`RawItem` lists (a ``raw=True`` dataset with ``collate_fn=keep_list``) and
    passes through what a run reads from its loaders: ``dataset``, ``batch_sampler``, ``generator``, ``len``.
    """

    def __init__(
        self,
        loader: DataLoader[Any],
        transform: Callable[[torch.Tensor], torch.Tensor],
        channels: int,
        device: torch.device | str,
    ) -> None:
        self.loader = loader
        self.transform = transform
        self.channels = channels
        self.device = torch.device(device)
        self.dataset = loader.dataset
        self.batch_sampler = loader.batch_sampler
        self.generator = loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for items in self.loader:
            yield self.collate(items)

    def decode(self, items: Sequence[RawItem]) -> list[torch.Tensor]:
        """Each item's untransformed pixels (uint8, C x H x W) on the device: the JPEGs in one call."""
        jpegs = [i for i, item in enumerate(items) if item.jpeg]
        pixels = [item.data.to(self.device, non_blocking=True) for item in items]
        if jpegs:
            with warnings.catch_warnings():  # torchvision 0.29 warns that TorchCodec will take over its decoders
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = decode_jpeg([items[i].data for i in jpegs], mode=ImageReadMode.RGB, device=self.device)
            for i, image in zip(jpegs, decoded, strict=True):
                pixels[i] = image if self.channels == 3 else luma(image)
        return pixels

    def collate(self, items: Sequence[RawItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: decoded, transformed with each item's own seed (as the dataset seeds), stacked."""
        pixels = self.decode(items)
        with torch.random.fork_rng(devices=[]):  # the CPU generator only: v2 draws its parameters there
            out = []
            for item, image in zip(items, pixels, strict=True):
                if item.seed is not None:
                    torch.default_generator.manual_seed(item.seed)
                out.append(self.transform(image))
        return torch.stack(out), torch.tensor([item.target for item in items])
