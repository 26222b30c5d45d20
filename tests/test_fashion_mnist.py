"""`resnet sample-data --dataset fashion-mnist`: the IDX reader (resnet_cli/data/idx.py) and the import
(resnet_cli/data/sample.py), on tiny IDX files written by the tests; and on the real files when installed."""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from resnet_cli.data.idx import read_idx_images, read_idx_labels
from resnet_cli.data.sample import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, FASHION_MNIST_SOURCE
from resnet_cli.data.split import part_sizes, read_manifest
from resnet_cli.errors import DatasetError

TRAIN_PER_CLASS = 12
TEST_PER_CLASS = 3


def idx_images(pixels: np.ndarray) -> bytes:
    count, rows, cols = pixels.shape
    return struct.pack(">IIII", 2051, count, rows, cols) + pixels.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def tiny_dataset(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` random 28x28 images of each of the 10 classes, the labels interleaved in shuffled order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
    pixels = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    return pixels, labels


def write_source(folder: Path, gzipped: tuple[str, ...] = ("train_images", "train_labels")) -> dict[str, Path]:
    """The four standard files in ``folder``: the training pair gzipped (``.gz``), the test pair raw."""
    folder.mkdir(parents=True, exist_ok=True)
    train = tiny_dataset(TRAIN_PER_CLASS, seed=1)
    test = tiny_dataset(TEST_PER_CLASS, seed=2)
    contents = {
        "train_images": idx_images(train[0]),
        "train_labels": idx_labels(train[1]),
        "test_images": idx_images(test[0]),
        "test_labels": idx_labels(test[1]),
    }
    paths = {}
    for key, data in contents.items():
        name = FASHION_MNIST_FILES[key]
        if key in gzipped:
            paths[key] = folder / f"{name}.gz"
            paths[key].write_bytes(gzip.compress(data))
        else:
            paths[key] = folder / name
            paths[key].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("idx") / "fashion"
    write_source(folder)
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory, source) -> Path:
    """The tiny files imported with --val 0.25 --seed 3. Read-only."""
    dest = tmp_path_factory.mktemp("fm") / "data"
    proc = run_cli(
        "sample-data", dest, "--dataset", "fashion-mnist", "--source", source, "--val", "0.25", "--seed", "3"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{dest}\n"
    assert "train 90, val 30 (seed 3), test 30" in proc.stderr and f"resnet train --data {dest}" in proc.stderr
    return dest


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


def test_the_import_writes_one_png_per_idx_image_in_its_class_folder_with_the_idx_bytes_as_pixels(imported, source):
    train_x, train_y = (
        read_idx_images(source / "train-images-idx3-ubyte.gz"),
        read_idx_labels(source / "train-labels-idx1-ubyte.gz"),
    )
    test_x, test_y = (
        read_idx_images(source / "t10k-images-idx3-ubyte"),
        read_idx_labels(source / "t10k-labels-idx1-ubyte"),
    )
    seen = {"train": set(), "test": set()}
    for path in pngs(imported):
        part, label, name = path.relative_to(imported).parts
        kind, index = name.removesuffix(".png").split("_")
        pixels, labels = (train_x, train_y) if kind == "train" else (test_x, test_y)
        assert part in (("train", "val") if kind == "train" else ("test",))
        assert label == FASHION_MNIST_CLASSES[labels[int(index)]]
        with Image.open(path) as image:
            assert image.mode == "L"
            assert np.array_equal(np.asarray(image), pixels[int(index)])
        seen[kind].add(int(index))
    assert seen == {"train": set(range(10 * TRAIN_PER_CLASS)), "test": set(range(10 * TEST_PER_CLASS))}
    for part in ("train", "val", "test"):
        assert sorted(p.name for p in (imported / part).iterdir()) == sorted(FASHION_MNIST_CLASSES)


def test_the_manifest_makes_the_t10k_file_the_test_part_and_a_stratified_val_from_train(imported):
    manifest = read_manifest(imported)
    assert manifest.classes == sorted(FASHION_MNIST_CLASSES)
    assert {r.path for r in manifest.part("test")} == {
        p.relative_to(imported).as_posix() for p in pngs(imported / "test")
    }
    assert all(Path(r.path).name.startswith("test_") for r in manifest.part("test"))
    assert not any(Path(r.path).name.startswith("test_") for r in manifest.part("train") + manifest.part("val"))
    expected_val = part_sizes(TRAIN_PER_CLASS, 0.25, 0.0)["val"]
    assert expected_val == 3
    for label, counts in manifest.counts().items():
        assert counts == {"train": TRAIN_PER_CLASS - expected_val, "val": expected_val, "test": TEST_PER_CLASS}, label
    assert manifest.seed == 3 and manifest.meta["source"] == "folders"


def test_the_val_draw_is_seeded_deterministic_and_nested(tmp_path, source, imported):
    def val_set(dest: Path, *args: str) -> set[str]:
        proc = run_cli("sample-data", dest, "--dataset", "fashion-mnist", "--source", source, *args)
        assert proc.returncode == 0, proc.stderr
        return {Path(r.path).name for r in read_manifest(dest).part("val")}

    again = val_set(tmp_path / "again", "--val", "0.25", "--seed", "3")
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == (imported / "manifest.csv").read_bytes()
    assert again == {Path(r.path).name for r in read_manifest(imported).part("val")}
    assert val_set(tmp_path / "other", "--val", "0.25", "--seed", "4") != again
    smaller = val_set(tmp_path / "smaller", "--val", "0.1", "--seed", "3")
    assert len(smaller) == 10 and smaller < again  # one RandomState per class: a smaller fraction takes a prefix
    fewer = {p.name for p in pngs(tmp_path / "smaller")}
    val_set(tmp_path / "five", "--per-class", "5", "--val", "0.2")
    five = {p.name for p in pngs(tmp_path / "five")}
    assert len(five) == 10 * (5 + TEST_PER_CLASS) and five < fewer  # the first N of each class of each file


def test_train_starts_on_the_import_and_eval_uses_the_official_test_images(tmp_path, imported):
    run = tmp_path / "run"
    proc = run_cli(
        "train", "--data", imported, "--arch", "18", "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
        "--out", run,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = run_cli("eval", run, "--json", "--no-save")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["split"] == "test" and doc["images"] == 10 * TEST_PER_CLASS


def test_force_reimports_with_another_seed_without_leaving_images_in_their_old_part(tmp_path, source):
    dest = tmp_path / "data"
    assert run_cli("sample-data", dest, "--dataset", "fashion-mnist", "--source", source).returncode == 0
    refused = run_cli("sample-data", dest, "--dataset", "fashion-mnist", "--source", source, "--seed", "9")
    assert refused.returncode == 2 and "--force" in refused.stderr
    (dest / "notes.txt").write_text("mine\n")
    again = run_cli("sample-data", dest, "--dataset", "fashion-mnist", "--source", source, "--seed", "9", "--force")
    assert again.returncode == 0, again.stderr
    assert "warning" not in again.stderr
    assert len(pngs(dest)) == len(read_manifest(dest).rows) == 10 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    assert (dest / "notes.txt").read_text() == "mine\n"


def test_digits_stay_the_default_and_refuse_the_fashion_mnist_options(tmp_path):
    proc = run_cli("sample-data", tmp_path / "d", "--per-class", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(tmp_path / "d").as_posix() for p in pngs(tmp_path / "d"))[:2] == [
        "0/0_0000.png",
        "0/0_0010.png",
    ]
    wrong = run_cli("sample-data", tmp_path / "e", "--seed", "1")
    assert wrong.returncode == 2 and "--seed apply to --dataset fashion-mnist only" in wrong.stderr
    unknown = run_cli("sample-data", tmp_path / "f", "--dataset", "cifar")
    assert unknown.returncode == 2 and "digits, fashion-mnist" in unknown.stderr


# -- bad input: each a one-line exit 2 naming the file -----------------------------------------------------------


def error_of(tmp_path: Path, source: Path, *args: str) -> str:
    proc = run_cli("sample-data", tmp_path / "out", "--dataset", "fashion-mnist", "--source", source, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written
    return lines[0]


def test_missing_files_say_where_they_were_looked_for_and_how_to_get_them(tmp_path):
    (tmp_path / "empty").mkdir()
    line = error_of(tmp_path, tmp_path / "empty")
    assert str(tmp_path / "empty") in line
    assert "sudo apt-get install dataset-fashion-mnist" in line and "--source DIR" in line
    assert "https://github.com/zalandoresearch/fashion-mnist" in line
    paths = write_source(tmp_path / "three")
    paths["test_labels"].unlink()
    line = error_of(tmp_path, tmp_path / "three")
    assert "t10k-labels-idx1-ubyte[.gz]" in line and "apt-get install" in line


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated", "is truncated: its header promises 120 images of 28x28"),
        ("trailing", "has data after the 120 images of 28x28"),
        ("wrong magic", "IDX unsigned byte data in 1 dimension(s) (magic 2049), expected IDX images (magic 2051)"),
        ("absurd count", "header gives 4,000,000,000 items"),
        ("absurd side", "header gives 5000 rows per image"),
        ("count mismatch", "holds 120 images but"),
        ("label out of range", "label 10 at position 7 is out of range 0..9"),
    ],
)
def test_a_damaged_idx_file_is_one_line_naming_it(tmp_path, gzipped, damage, expected):
    paths = write_source(tmp_path / "src", gzipped=("train_images", "train_labels") if gzipped else ())
    images, labels = paths["train_images"], paths["train_labels"]
    read = gzip.decompress if gzipped else bytes
    write = gzip.compress if gzipped else bytes
    data, target = read(images.read_bytes()), images
    if damage == "truncated":
        data = data[:-100]
    elif damage == "trailing":
        data += b"\0" * 3
    elif damage == "wrong magic":
        data = read(labels.read_bytes())
    elif damage == "absurd count":
        data = struct.pack(">IIII", 2051, 4_000_000_000, 28, 28) + data[16:]
    elif damage == "absurd side":
        data = struct.pack(">IIII", 2051, 120, 5000, 28) + data[16:]
    elif damage == "count mismatch":
        data, target = read(labels.read_bytes())[:-1], labels
        data = struct.pack(">II", 2049, 119) + data[8:]
    elif damage == "label out of range":
        data, target = bytearray(read(labels.read_bytes())), labels
        data[8 + 7] = 10
    target.write_bytes(write(bytes(data)))
    line = error_of(tmp_path, tmp_path / "src")
    assert str(target) in line and expected in line


def test_a_cut_gzip_file_is_named(tmp_path):
    paths = write_source(tmp_path / "src")
    whole = paths["train_images"].read_bytes()
    paths["train_images"].write_bytes(whole[: len(whole) // 2])  # the gzip stream ends mid-way
    line = error_of(tmp_path, tmp_path / "src")
    assert str(paths["train_images"]) in line and "damaged gzip file" in line


def test_a_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    """A header for one image followed by 256 MiB of zeros: read stops one byte after the 784 bytes promised."""
    path = tmp_path / "bomb.gz"
    compressor = gzip.GzipFile(path, "wb")
    compressor.write(struct.pack(">IIII", 2051, 1, 28, 28))
    zeros = b"\0" * (1 << 20)
    for _ in range(256):
        compressor.write(zeros)
    compressor.close()
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="has data after the 1 images of 28x28"):
            read_idx_images(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_too_few_training_images_for_the_val_fraction_is_exit_2(tmp_path, source):
    line = error_of(tmp_path, source, "--per-class", "2")
    assert "--val 0.1" in line and "raise --per-class or --val" in line


@pytest.mark.skipif(
    not all((FASHION_MNIST_SOURCE / f"{name}.gz").exists() for name in FASHION_MNIST_FILES.values()),
    reason="the real Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)",
)
def test_the_installed_debian_files_import_20_per_class(tmp_path):
    proc = run_cli("sample-data", tmp_path / "fm", "--dataset", "fashion-mnist", "--per-class", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["classes"] == sorted(FASHION_MNIST_CLASSES) and doc["source"] == str(FASHION_MNIST_SOURCE)
    assert all(c["train"] + c["val"] == 20 and c["val"] == 2 and c["test"] == 20 for c in doc["counts"].values())
    with Image.open(tmp_path / "fm" / "test" / "Ankle_boot" / "test_00000.png") as first:  # t10k's first: a boot
        assert first.size == (28, 28) and first.mode == "L"
