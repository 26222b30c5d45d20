"""``--cache-images`` (decoded images held in RAM) and ``--decode cpu|gpu|auto`` (batched JPEG decoding)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_cli.config import PreprocessConfig, SplitConfig
from resnet_cli.data.dataset import (
    EpochBatchSampler,
    ImageCache,
    ManifestDataset,
    cache_bytes,
    keep_list,
    make_loader,
    physical_ram,
)
from resnet_cli.data.decode import BatchDecodeLoader, resolve_decode
from resnet_cli.data.split import make_split, read_manifest
from resnet_cli.data.transforms import eval_transform, train_transform
from resnet_cli.errors import ConfigError, DatasetError
from tests.conftest import run_cli
from tests.images import write_jpeg, write_png
from tests.test_train import one_error_line, same_weights

FAST = ["--arch", "18", "--batch-size", "16", "--workers", "0", "--max-steps", "2"]


def write_rotated_jpeg(path: Path, seed: int) -> Path:
    """A 10x6 JPEG whose EXIF says "rotate 90 degrees": decoded upright it is 6x10."""
    array = np.random.default_rng(seed).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array, "RGB").save(path, quality=90, exif=exif)
    return path


def write_rgba_png(path: Path, seed: int) -> Path:
    array = np.random.default_rng(seed).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(array, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def mixed_split(tmp_path_factory) -> Path:
    """Two classes of every kind of file the reader converts: greyscale and RGB PNG, RGBA (composited), plain
    and EXIF-rotated JPEG, CMYK JPEG, in several sizes. Read-only."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    seed = 0
    for label in ("a", "b"):
        folder = root / label
        for i in range(3):
            seed += 1
            write_png(folder / f"grey{i}.png", size=8 + i, seed=seed)
            write_png(folder / f"rgb{i}.png", size=9, mode="RGB", seed=seed)
            write_rgba_png(folder / f"rgba{i}.png", seed)
            write_jpeg(folder / f"photo{i}.jpg", size=12 + 2 * i, seed=seed)
            write_rotated_jpeg(folder / f"turned{i}.jpeg", seed)
            cmyk = np.random.default_rng(seed).integers(0, 256, (10, 10, 4), dtype=np.uint8)
            Image.fromarray(cmyk, "CMYK").save(folder / f"cmyk{i}.jpg")
    make_split(root, SplitConfig(val=0.25, seed=0))
    return root


def datasets(root: Path, pre: PreprocessConfig, cache: ImageCache | None, train: bool = True, **kwargs):
    manifest = read_manifest(root / "manifest.csv")
    rows = manifest.part("train")
    transform = train_transform(pre) if train else eval_transform(pre)
    return ManifestDataset(root, rows, manifest.classes, transform, pre.in_channels, cache=cache, **kwargs)


def every_sample(dataset: ManifestDataset, epoch: int, seed: int = 7) -> list[torch.Tensor]:
    """Each sample once, in order: seeded keys (training) or plain indices (evaluation)."""
    sampler = EpochBatchSampler(len(dataset), 4, seed, shuffle=False)
    sampler.set_epoch(epoch)
    keys = [key for batch in sampler for key in batch]
    assert len(keys) == len(dataset)
    return [x for x, _ in dataset.__getitems__(keys)]


@pytest.mark.parametrize("channels", [1, 3])
def test_cache_gives_exactly_the_tensors_decoding_gives(mixed_split, channels):
    manifest = read_manifest(mixed_split / "manifest.csv")
    cache = ImageCache(mixed_split, manifest.rows, channels, threads=2)
    assert len(cache) == len(manifest.rows)
    assert cache.nbytes == cache_bytes(manifest.rows, channels)
    train = PreprocessConfig(image_size=8, resize_size=8, in_channels=channels, augment="randaugment", hflip=True)
    plain, cached = datasets(mixed_split, train, None), datasets(mixed_split, train, cache)
    for i in range(len(plain)):
        assert torch.equal(cached.load(i), plain.load(i)), plain.paths[i]
    assert any(cached.load(i).shape[1:] == (10, 6) for i in range(len(cached)))  # EXIF rotation kept
    for epoch in (1, 2):  # the same seeded augmentation, from the cache as from the files
        expected, got = every_sample(plain, epoch), every_sample(cached, epoch)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    evaluation = PreprocessConfig(image_size=8, resize_size=9, in_channels=channels)
    expected = [x for x, _ in datasets(mixed_split, evaluation, None, train=False)]
    got = [x for x, _ in datasets(mixed_split, evaluation, cache, train=False)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_cached_epochs_read_no_file_even_in_workers(small_split, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_split, root)
    manifest = read_manifest(root / "manifest.csv")
    pre = PreprocessConfig(image_size=8, resize_size=8, in_channels=1, augment="crop")
    expected = every_sample(datasets(root, pre, None), 1)
    cache = ImageCache(root, manifest.rows, 1)
    for row in manifest.rows:  # from now on only the cache has the images
        (root / row.path).unlink()
    dataset = datasets(root, pre, cache)
    sampler = EpochBatchSampler(len(dataset), 16, 7, shuffle=False)
    sampler.set_epoch(1)
    for workers in (0, 1):  # a forked worker reads the cache the main process filled
        got = torch.cat([x for x, _ in make_loader(dataset, sampler, workers, seed=0, persistent=False)])
        assert torch.equal(got, torch.stack(expected))
    with pytest.raises(DatasetError, match="cannot read"):
        datasets(root, pre, None).load(0)


def test_cache_refuses_more_than_half_the_ram_before_decoding(small_split):
    rows = read_manifest(small_split / "manifest.csv").rows
    need = cache_bytes(rows, 3)
    assert need == 3 * sum(r.width * r.height for r in rows)
    with pytest.raises(ConfigError, match=r"cache_images=True needs 0.0 MiB for 200 decoded images, over half") as info:
        ImageCache(small_split / "nowhere", rows, 3, ram_bytes=2 * need - 2)  # no file is opened first
    assert "of the 0.1 MiB of RAM here: leave out cache_images=True" in str(info.value)
    assert len(ImageCache(small_split, rows, 3, ram_bytes=2 * need)) == len(rows)
    assert physical_ram() is None or physical_ram() > 2**20


def test_cache_refuses_an_image_whose_size_changed_since_the_split(small_split, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_split, root)
    row = read_manifest(root / "manifest.csv").rows[5]
    write_png(root / row.path, size=row.width + 3, seed=1)
    with pytest.raises(
        DatasetError,
        match=rf"{row.path.split('/')[-1]} is 11x11 px, not the 8x8 px the manifest records: run 'resnet split' again",
    ):
        ImageCache(root, read_manifest(root / "manifest.csv").rows, 1)


def test_cached_run_trains_and_resumes_to_the_uncached_weights(small_split, tmp_path):
    plain, cached = tmp_path / "plain", tmp_path / "cached"
    assert run_cli("train", "--data", small_split, *FAST, "--epochs", "2", "--out", plain).returncode == 0
    first = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--cache-images", "--out", cached)
    assert first.returncode == 0, first.stderr
    assert json.loads((cached / "config.json").read_text())["train"]["cache_images"] is True
    resumed = run_cli("train", "--resume", "--out", cached, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(cached / "last.pt", plain / "last.pt")
    assert (cached / "history.csv").read_text() != "" and same_weights(cached / "best.pt", plain / "best.pt")


# --decode


def test_decode_gpu_without_cuda_is_one_line_exit_2(small_split, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli("train", "--data", small_split, *FAST, "--decode", "gpu", "--out", tmp_path / "r")
    assert proc.returncode == 2
    assert "--decode gpu needs a CUDA device: this machine has none" in one_error_line(proc)
    on_cpu = run_cli("train", "--data", small_split, *FAST, "--decode", "gpu", "--device", "cpu", "--out", tmp_path)
    assert on_cpu.returncode == 2 and "--decode gpu needs a CUDA device: --device is cpu" in one_error_line(on_cpu)
    assert not (tmp_path / "r").exists()


def test_decode_bogus_is_exit_2(small_split, tmp_path):
    proc = run_cli("train", "--data", small_split, *FAST, "--decode", "bogus", "--out", tmp_path / "r")
    assert proc.returncode == 2
    assert "--decode must be one of auto, cpu, gpu, got 'bogus'" in one_error_line(proc)


@pytest.mark.parametrize("decode", ["cpu", "auto"])
def test_decode_cpu_and_auto_train_on_cpu(small_split, tmp_path, decode):
    out = tmp_path / "r"
    proc = run_cli("train", "--data", small_split, *FAST, "--epochs", "1", "--decode", decode, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["train"]["decode"] == "cpu"  # what auto resolved to here


def test_auto_decodes_on_the_gpu_only_for_jpeg_runs_on_cuda(mixed_split, small_split):
    jpegs = [r for r in read_manifest(mixed_split / "manifest.csv").rows if r.path.endswith((".jpg", ".jpeg"))]
    pngs = read_manifest(small_split / "manifest.csv").rows
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_decode("auto", cuda, jpegs) == "gpu"
    assert resolve_decode("auto", cpu, jpegs) == "cpu"
    assert resolve_decode("auto", cuda, pngs) == "cpu"
    assert resolve_decode("auto", cuda, jpegs, cache_images=True) == "cpu"
    assert resolve_decode("cpu", cuda, jpegs) == "cpu"


def batch_pair(root: Path, pre: PreprocessConfig, device: str, workers: int = 0, train: bool = True):
    """(the DataLoader's batches, BatchDecodeLoader's batches on ``device``) of one epoch, same order and seeds."""
    plain, raw = datasets(root, pre, None, train), datasets(root, pre, None, train, raw=True)
    samplers = [EpochBatchSampler(len(plain), 8, 3, shuffle=train, train=train) for _ in range(2)]
    for sampler in samplers:
        sampler.set_epoch(2)
    expected = list(make_loader(plain, samplers[0], 0, seed=0))
    batched = BatchDecodeLoader(make_loader(raw, samplers[1], workers, 0, collate_fn=keep_list), plain.transform,
                                pre.in_channels, device)  # fmt: skip
    assert len(batched) == len(expected) and batched.batch_sampler is samplers[1]
    return expected, list(batched), batched


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_decoding_matches_the_reader_within_jpeg_tolerance(mixed_split, channels):
    # The GPU path's structure, run with the CPU's decode_jpeg: raw bytes through a worker, batched decode,
    # per-sample seeded transforms, stack. JPEG decoders may differ by a level or two; nothing else may differ.
    pre = PreprocessConfig(image_size=8, resize_size=8, in_channels=channels, augment="crop", hflip=True,
                           mean=(0.0,) * channels, std=(1.0,) * channels)  # fmt: skip
    expected, got, batched = batch_pair(mixed_split, pre, "cpu", workers=1)
    for (x, y), (gx, gy) in zip(expected, got, strict=True):
        assert torch.equal(y, gy) and x.shape == gx.shape
        assert (x - gx).abs().max() <= 2 / 255 + 1e-6
    # Only plain JPEGs go to the batched decoder: PNGs, the EXIF-rotated and the CMYK JPEGs are decoded as before.
    items = batched.loader.dataset.__getitems__(list(range(len(batched.dataset))))
    plain = datasets(mixed_split, pre, None)
    kinds = {Path(p).stem.rstrip("0123456789"): item.jpeg for p, item in zip(plain.paths, items, strict=True)}
    assert kinds == {"grey": False, "rgb": False, "rgba": False, "photo": True, "turned": False, "cmyk": False}
    for i, (image, item) in enumerate(zip(batched.decode(items), items, strict=True)):
        reference = plain.load(i)
        assert image.shape == reference.shape
        if item.jpeg:
            assert (image.int() - reference.int()).abs().max() <= 2
        else:
            assert torch.equal(image, reference)


def write_smooth_jpegs(root: Path, per_class: int = 12, size: int = 24) -> Path:
    """Photograph-like JPEGs (upsampled noise, 4:2:0 chroma as cameras write) and one PNG per class."""
    rng = np.random.default_rng(5)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            noise = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
            noise.resize((size, size + i % 3), Image.Resampling.BICUBIC).save(root / label / f"{i}.jpg", quality=90)
        write_png(root / label / "extra.png", size=size, mode="RGB", seed=len(label))
    make_split(root, SplitConfig(val=0.25, seed=0))
    return root


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [1, 3])
def test_gpu_decoding_matches_cpu_within_jpeg_tolerance_and_is_exact_across_resume(tmp_path, channels):
    root = write_smooth_jpegs(tmp_path / "photos")
    pre = PreprocessConfig(image_size=16, resize_size=16, in_channels=channels, augment="crop", hflip=True,
                           mean=(0.0,) * channels, std=(1.0,) * channels)  # fmt: skip
    expected, got, batched = batch_pair(root, pre, "cuda", workers=1)
    items = batched.dataset.__getitems__(list(range(len(batched.dataset))))
    plain = datasets(root, pre, None)
    assert [item.jpeg for item in items] == [p.endswith(".jpg") for p in plain.paths]  # PNGs: decoded on the CPU
    for i, (image, item) in enumerate(zip(batched.decode(items), items, strict=True)):
        reference = plain.load(i)
        assert image.device.type == "cuda" and image.shape == reference.shape
        diff = (image.cpu().int() - reference.int()).abs().max()
        assert diff <= 2 if item.jpeg else diff == 0, plain.paths[i]
    for (x, y), (gx, gy) in zip(expected, got, strict=True):  # the same crops and flips: seeds are per sample
        assert gx.device.type == "cuda" and torch.equal(y, gy) and x.shape == gx.shape
        assert (x - gx.cpu()).abs().max() <= 3 / 255 + 1e-6  # decoder, then resampling rounding
    # Resuming mid-epoch: a fresh loader that skips the first batch gives the rest bit for bit.
    _, again, resumed = batch_pair(root, pre, "cuda", workers=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again, strict=True))
    resumed.batch_sampler.set_epoch(2, start_batch=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got[1:], list(resumed), strict=True))


@pytest.mark.gpu
def test_gpu_decoded_run_trains_and_resumes(tmp_path):
    # Weights are not compared bit for bit: cuDNN's autotuned convolutions need not repeat on CUDA; the batches
    # they see do (the test above).
    root = write_smooth_jpegs(tmp_path / "photos")
    gpu = ["--data", root, "--arch", "18", "--batch-size", "8", "--workers", "1", "--device", "cuda",
           "--decode", "gpu", "--max-steps", "2"]  # fmt: skip
    out = tmp_path / "run"
    first = run_cli("train", *gpu, "--epochs", "1", "--out", out)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "config.json").read_text())["train"]["decode"] == "gpu"
    resumed = run_cli("train", "--resume", "--out", out, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert len((out / "history.csv").read_text().splitlines()) == 3


def test_luma_is_pillows_greyscale_conversion():
    from resnet_cli.data.decode import luma

    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    assert torch.equal(luma(torch.from_numpy(rgb).permute(2, 0, 1)), torch.from_numpy(pillow.copy()).unsqueeze(0))
