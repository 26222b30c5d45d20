"""The loader: tensors of the model's channel count, private and worker-independent randomness, shards."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_cli.config import PreprocessConfig, TrainConfig
from resnet_cli.data.dataset import EpochBatchSampler, ManifestDataset, compute_mean_std, make_loader
from resnet_cli.data.preprocess import resolve
from resnet_cli.data.split import ManifestRow, read_manifest
from resnet_cli.data.transforms import eval_transform, train_transform

PRE = PreprocessConfig(image_size=8, resize_size=8, in_channels=1, mean=(0.5,), std=(0.25,), augment="crop")


def dataset(root, part="train", pre=PRE, train=True):
    manifest = read_manifest(root)
    transform = train_transform(pre) if train else eval_transform(pre)
    return ManifestDataset(root, manifest.part(part), manifest.classes, transform, pre.in_channels)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_items_are_normalised_tensors_of_the_model_shape(small_split):
    ds = dataset(small_split, train=False)
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert 0 <= y < 10
    raw = np.asarray(Image.open(small_split / ds.paths[0]), dtype=np.float32) / 255
    torch.testing.assert_close(x[0], (torch.from_numpy(raw) - 0.5) / 0.25)
    rgb = dataset(small_split, pre=replace(PRE, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3), train=False)
    assert rgb[0][0].shape == (3, 8, 8)


def test_augmentation_is_the_same_whatever_the_workers(small_split):
    ds = dataset(small_split)
    runs = []
    for workers in (0, 2):
        sampler = EpochBatchSampler(len(ds), 16, seed=7, shuffle=True)
        sampler.set_epoch(3)
        runs.append(batches(make_loader(ds, sampler, workers, seed=7)))
    assert len(runs[0]) == len(runs[1]) > 1
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Augmentation really happens: the same image differs between epochs.
    key = sampler._indices()[0]
    a = ds[(key, 1)][0]
    assert any(not torch.equal(a, ds[(key, s)][0]) for s in range(2, 6))


def test_global_rng_is_never_touched(small_split):
    ds = dataset(small_split)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sampler = EpochBatchSampler(len(ds), 16, seed=1, shuffle=True)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches(make_loader(ds, sampler, 0, seed=1))
    assert torch.equal(before, torch.get_rng_state())


def test_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        s = EpochBatchSampler(50, 8, seed=seed, shuffle=True)
        s.set_epoch(epoch)
        return [i for batch in s for i, _ in batch]

    assert order(1, 1) == order(1, 1)
    assert order(1, 1) != order(1, 2) and order(1, 1) != order(2, 1)
    assert sorted(order(1, 1)) == list(range(50))


def test_resume_position_skips_exactly_the_batches_done():
    full = EpochBatchSampler(100, 8, seed=3, shuffle=True)
    full.set_epoch(4)
    tail = EpochBatchSampler(100, 8, seed=3, shuffle=True)
    tail.set_epoch(4, start_batch=5)
    assert list(tail) == list(full)[5:]
    assert len(tail) == len(full) - 5


def test_a_final_batch_of_one_is_dropped_in_training_only():
    train = EpochBatchSampler(17, 8, seed=0, shuffle=False)
    assert [len(b) for b in train] == [8, 8]
    evaluation = EpochBatchSampler(17, 8, seed=0, shuffle=False, train=False)
    assert [len(b) for b in evaluation] == [8, 8, 1]
    assert next(iter(evaluation)) == list(range(8))  # plain indices: evaluation needs no augmentation seeds


def test_distributed_shards():
    shards = []
    for rank in range(3):
        s = EpochBatchSampler(20, 4, seed=0, shuffle=True, rank=rank, world_size=3)
        s.set_epoch(1)
        shards.append([i for b in s for i, _ in b])
    assert len({len(s) for s in shards}) == 1  # padded to equal length, like DistributedSampler
    assert set().union(*map(set, shards)) == set(range(20))
    evaluation = [
        [i for b in EpochBatchSampler(20, 4, seed=0, shuffle=False, rank=r, world_size=3, train=False) for i in b]
        for r in range(3)
    ]
    assert sorted(i for shard in evaluation for i in shard) == list(range(20))  # every sample exactly once


def test_dataset_mean_and_std(small_split):
    ds = dataset(small_split, train=False, pre=replace(PRE, normalize="dataset"))
    ds.transform = eval_transform(PRE, normalize=False)
    mean, std = compute_mean_std(ds, batch_size=32, workers=0)
    pixels = np.concatenate([np.asarray(Image.open(small_split / p), dtype=np.float64).ravel() / 255 for p in ds.paths])
    assert mean[0] == pytest.approx(pixels.mean(), abs=1e-5)
    assert std[0] == pytest.approx(pixels.std(), abs=1e-5)


def _rows(size: int, mode: str, n: int = 5) -> list[ManifestRow]:
    return [ManifestRow(f"c/{i}.png", "c", "train", "0" * 64, size, size, mode) for i in range(n)]


def test_automatic_preprocessing():
    pre, small = resolve(TrainConfig(), _rows(8, "L"))
    assert (pre.image_size, pre.in_channels, pre.augment, small) == (8, 1, "crop", True)
    pre, small = resolve(TrainConfig(), _rows(500, "RGB"))
    assert (pre.image_size, pre.resize_size, pre.in_channels, pre.augment, small) == (224, 256, 3, "rrc", False)
    pre, small = resolve(TrainConfig(), _rows(32, "RGBA"))
    assert (pre.image_size, pre.in_channels, small) == (32, 3, True)
    pre, small = resolve(TrainConfig(image_size=64, small_input=False, in_channels=3), _rows(8, "L"))
    assert (pre.image_size, pre.in_channels, small) == (64, 3, False)
