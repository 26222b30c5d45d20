"""Hostile and unusual data folders: decompression bombs, FIFOs and devices, names that are not UTF-8,
links that wander between classes, Unicode spellings of one class, manifests that point outside the data
folder, and datasets that arrive already split into train/val/test folders. Real files on disk throughout."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import resource
import shutil
import sys
import unicodedata
import warnings
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from resnet_cli.cli.app import app
from resnet_cli.config import SplitConfig
from resnet_cli.data import images
from resnet_cli.data import scan as scan_module
from resnet_cli.data.scan import scan_folder
from resnet_cli.data.split import make_split, read_manifest
from resnet_cli.errors import DatasetError
from tests.conftest import ROOT, run_cli
from tests.images import make_folder, write_png

runner = CliRunner()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, devices and byte file names are POSIX")


def split_cli(*args: object, env: dict | None = None):
    return runner.invoke(app, ["split", *map(str, args)], env=env)


def assert_clean_error(result, code: int, *fragments: str) -> None:
    stderr = result.stderr
    assert getattr(result, "returncode", getattr(result, "exit_code", None)) == code, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)


def _limit_memory() -> None:
    # Old code read a link to /dev/zero until memory ran out: cap the child so the machine is safe either way.
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def _png(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (width, height), 77).save(path)
    return path


# --- 1. decompression bombs ---------------------------------------------------------------------------------


def test_image_over_pillows_limit_is_refused_from_its_header_without_pillows_warning(tmp_path, monkeypatch):
    # Pillow only warns between one and two times its limit, and decodes anyway: lower the limit to 10,000
    # pixels so a 120x100 image (12,000) is the case, without writing a 90-megapixel file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    path = _png(tmp_path / "big.png", 120, 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(images.ImageDecodeError, match=r"120x100 = 12,000, over the limit of 10,000"):
            images.decode(path.read_bytes(), channels=3)
        with pytest.raises(images.ImageDecodeError, match="--max-pixels"):
            images.load(path, channels=3)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_raises_the_limit_even_past_twice_pillows(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    data = _png(tmp_path / "big.png", 120, 100).read_bytes()
    assert images.decode(data, channels=1, max_pixels=12_000).size == (120, 100)  # Pillow alone refuses >10,000
    assert images.load(tmp_path / "big.png", channels=1, max_pixels=12_000).size == (120, 100)
    assert Image.MAX_IMAGE_PIXELS == 5_000  # restored
    with pytest.raises(images.ImageDecodeError, match="over the limit of 11,999"):
        images.decode(data, channels=1, max_pixels=11_999)


def test_split_names_the_bomb_and_max_pixels_lets_it_in(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    _png(root / "a" / "big.png", 120, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = split_cli(root, "--workers", "1")
    assert result.exit_code == 2, result.stderr
    assert "a/big.png (too many pixels (120x100 = 12,000, over the limit of 10,000)" in result.stderr
    assert "DecompressionBombWarning" not in result.stderr
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]

    lowered = split_cli(root, "--max-pixels", "1000")
    assert lowered.exit_code == 2 and "over the limit of 1,000" in lowered.stderr

    result = split_cli(root, "--max-pixels", "20000", "--json")
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(root)
    assert manifest.meta["max_pixels"] == 20_000
    big = next(r for r in manifest.rows if r.path == "a/big.png")
    assert (big.width, big.height) == (120, 100)

    # Training reads what split let in: the dataset's limit rises to the largest image the manifest records.
    import torch

    from resnet_cli.data.dataset import ManifestDataset

    dataset = ManifestDataset(root, [big], manifest.classes, lambda x: x.to(torch.float32), channels=1)
    assert tuple(dataset[0][0].shape) == (1, 100, 120)


# --- 2. FIFOs and devices -----------------------------------------------------------------------------------


@posix_only
def test_fifo_named_png_does_not_hang_split(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    os.mkfifo(root / "a" / "x.png")
    result = run_cli("split", root, real_process=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "a/x.png (not a regular file (a FIFO)" in result.stderr
    result = run_cli("split", root, "--skip-bad", real_process=True, timeout=120)
    assert result.returncode == 0, result.stderr
    excluded = {e["path"]: e["reason"] for e in read_manifest(root).meta["excluded"]}
    assert "FIFO" in excluded["a/x.png"]


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_link_to_dev_zero_is_reported_not_read(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    os.symlink("/dev/zero", root / "b" / "zero.png")
    result = run_cli("split", root, real_process=True, timeout=120, preexec_fn=_limit_memory)
    assert result.returncode == 2, result.stderr
    assert "b/zero.png (not a regular file (a character device)" in result.stderr


@posix_only
def test_predict_and_training_loader_never_open_a_fifo(tmp_path):
    # images.load is what predict and the training dataset call; old code blocked forever in open().
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    code = (
        "import sys; from resnet_cli.data import images\n"
        "try:\n    images.load(sys.argv[1], 3)\n"
        "except images.ImageDecodeError as exc:\n    print(exc)\n"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code, str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "not a regular file (a FIFO)" in done.stdout, done.stderr


def test_reads_are_bounded(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(b"\0" * 5000)
    with pytest.raises(images.ImageDecodeError, match="file too large"):
        images.read_file(path, max_bytes=4096)
    assert len(images.read_file(path, max_bytes=5000)) == 5000


# --- 3. file names that are not UTF-8 -----------------------------------------------------------------------


def _bytes_named_png(folder: Path, name: bytes) -> None:
    data = (folder / "img_000.png").read_bytes()
    fd = os.open(os.path.join(os.fsencode(folder), name), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@posix_only
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_non_utf8_file_name_is_named_and_refused_or_left_out(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    write_png(root / "a" / "unique.png", seed=1234)
    _bytes_named_png(root / "a", b"\xff.png")
    result = split_cli(root)
    assert_clean_error(result, 2, "a/\\xff.png (name not valid UTF-8", "rename it", "--skip-bad")
    result = split_cli(root, "--skip-bad", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [e["path"] for e in doc["excluded"]] == ["a/\\xff.png"]
    assert sum(doc["totals"].values()) == 11
    read_manifest(root)  # the manifest and sidecar are valid UTF-8


@posix_only
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_non_utf8_class_folder_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5})
    os.mkdir(os.path.join(os.fsencode(root), b"caf\xe9"))
    write_png(Path(os.fsdecode(os.path.join(os.fsencode(root), b"caf\xe9"))) / "x.png")
    result = split_cli(root)
    assert_clean_error(result, 2, "caf\\xe9", "not valid UTF-8", "rename it")


# --- 4. links that leave their class ------------------------------------------------------------------------


def test_link_up_to_the_data_folder_never_relabels_images(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 7})
    write_png(root / "stray.png", seed=500)  # a file at the top: never an image of any class
    os.symlink("..", root / "a" / "loop")
    os.symlink("../a/img_000.png", root / "b" / "borrowed.png")  # a file link into another class
    os.symlink(".", root / "c")  # a class folder that is the data folder
    scan = scan_folder(root)
    assert scan.classes == ["a", "b"]
    assert {f.path for f in scan.files if f.label == "a"} == {f"a/img_{i:03d}.png" for i in range(5)}
    assert {f.path for f in scan.files if f.label == "b"} == {f"b/img_{i:03d}.png" for i in range(7)}
    skipped = dict(scan.skipped)
    assert set(skipped) == {"a/loop", "b/borrowed.png", "c"}
    assert "holds the data folder" in skipped["a/loop"] and "out of its class folder" in skipped["b/borrowed.png"]

    result = split_cli(root, "--val", "0.4", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {c: sum(n.values()) for c, n in doc["counts"].items()} == {"a": 5, "b": 7}
    assert "a/loop" in result.stderr and "b/borrowed.png" in result.stderr and "not followed" in result.stderr
    assert {s["path"] for s in read_manifest(root).meta["skipped_links"]} == {"a/loop", "b/borrowed.png", "c"}


def test_links_to_folders_outside_the_data_folder_are_still_followed(tmp_path):
    elsewhere = make_folder(tmp_path / "disk2", {"more": 3})
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    os.symlink(elsewhere / "more", root / "a" / "more")
    scan = scan_folder(root)
    assert sum(f.label == "a" for f in scan.files) == 8 and not scan.skipped


# --- 5. one class name in two Unicode spellings -------------------------------------------------------------


def test_nfc_and_nfd_spellings_of_one_class_are_refused(tmp_path):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", nfd) == nfc
    root = make_folder(tmp_path / "d", {nfc: 5, "tea": 5})
    try:
        write_png(root / nfd / "x.png", seed=77)
    except OSError:  # pragma: no cover - a file system that normalises names
        pytest.skip("this file system stores both spellings as one name")
    if len([p for p in root.iterdir() if p.is_dir()]) < 3:  # pragma: no cover
        pytest.skip("this file system stores both spellings as one name")
    result = split_cli(root)
    assert_clean_error(result, 2, "'caf\\xe9'", "'cafe\\u0301'", "merge them")
    with pytest.raises(DatasetError, match="Unicode spellings"):
        scan_folder(root)


# --- 6. manifests that point outside the data folder --------------------------------------------------------


def _rewrite_with_sidecar(manifest: Path, old: str, new: str) -> None:
    """A hand edit that also fixes the sidecar's hash, so the hash check alone cannot catch it."""
    text = manifest.read_text(encoding="utf-8").replace(old, new, 1)
    manifest.write_text(text, encoding="utf-8")
    side = manifest.with_suffix(".json")
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta["csv_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    side.write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize("evil", ["../outside.png", "a/../../outside.png", "/etc/passwd", "C:/Windows/x.png"])
def test_manifest_paths_leaving_the_data_folder_are_refused(tmp_path, evil):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    write_png(tmp_path / "outside.png", seed=1000)
    make_split(root, SplitConfig(val=0.2))
    manifest = root / "manifest.csv"
    first = manifest.read_text().splitlines()[1].split(",")[0]
    _rewrite_with_sidecar(manifest, first + ",", evil + ",")
    with pytest.raises(DatasetError, match=r"manifest.csv, line 2: path .* leads outside the data folder"):
        read_manifest(manifest)


def test_eval_refuses_a_manifest_pointing_outside(small_copy, tmp_path):
    run = tmp_path / "run"
    args = ("--arch", "18", "--epochs", "1", "--max-steps", "2", "--quiet")
    assert run_cli("train", "--data", small_copy, *args, "--out", run).returncode == 0
    write_png(small_copy.parent / "outside.png", seed=1001)
    manifest = small_copy / "manifest.csv"
    row = next(line for line in manifest.read_text().splitlines() if ",test," in line)
    _rewrite_with_sidecar(manifest, row.split(",")[0] + ",", "../outside.png,")
    result = run_cli("eval", run, "--data", small_copy, "--split", "test", "--no-save")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "leads outside the data folder" in result.stderr and "line" in result.stderr


# --- 7. datasets already split into train/val/test folders -------------------------------------------------


def _pre_split(root: Path, val_name: str = "val", test: bool = True) -> Path:
    seed = 0
    parts = {"train": 6, val_name: 3} | ({"test": 2} if test else {})
    for part, n in parts.items():
        for label in ("cat", "dog"):
            for i in range(n):
                write_png(root / part / label / f"{i}.png", seed=seed)
                seed += 1
    return root


def test_pre_split_layout_is_refused_without_from_folders(tmp_path):
    root = _pre_split(tmp_path / "d")
    assert scan_module.find_part_folders(root) == {"train": "train", "val": "val", "test": "test"}
    result = split_cli(root)
    assert_clean_error(result, 2, "train/, val/, test/", "--from-folders")
    assert not (root / "manifest.csv").exists()


@pytest.mark.parametrize("val_name", ["val", "valid", "Validation"])
def test_from_folders_keeps_membership_exactly(tmp_path, val_name):
    root = _pre_split(tmp_path / "d", val_name)
    result = split_cli(root, "--from-folders", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["classes"] == ["cat", "dog"]
    assert doc["counts"] == {c: {"train": 6, "val": 3, "test": 2} for c in ("cat", "dog")}
    manifest = read_manifest(root)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert {r.path for r in manifest.rows} == on_disk
    part_of = {"train": "train", val_name: "val", "test": "test"}
    for r in manifest.rows:
        folder, label, _ = r.path.split("/")
        assert (part_of[folder], label) == (r.part, r.label)
    assert manifest.meta["source"] == "folders"


def test_from_folders_table_shows_the_parts(tmp_path):
    root = _pre_split(tmp_path / "d")
    result = split_cli(root, "--from-folders")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{root / 'manifest.csv'}\n"
    assert "test" in result.stderr and "cat" in result.stderr


def test_from_folders_parts_must_have_the_same_classes(tmp_path):
    root = _pre_split(tmp_path / "d")
    write_png(root / "train" / "bird" / "0.png", seed=900)
    result = split_cli(root, "--from-folders")
    assert_clean_error(result, 2, "different classes", "lacks 'bird'")


def test_from_folders_needs_a_val_part_and_a_pre_split_layout(tmp_path):
    no_val = tmp_path / "nv"
    for part in ("train", "test"):
        make_folder(no_val / part, {"cat": 3, "dog": 3})
    assert_clean_error(split_cli(no_val, "--from-folders"), 2, "no val/", "valid/")
    plain = make_folder(tmp_path / "plain", {"cat": 5, "dog": 5})
    assert_clean_error(split_cli(plain, "--from-folders"), 2, "--from-folders needs")
    assert_clean_error(split_cli(_pre_split(tmp_path / "p"), "--from-folders", "--val", "0.3"), 2, "--val")


def test_from_folders_class_missing_images_in_a_part_and_no_test_part(tmp_path):
    root = tmp_path / "d"
    for part, n in {"train": 4, "validation": 2}.items():
        make_folder(root / part, {"cat": n, "dog": n, "eel": n})
    for image in (root / "validation" / "eel").iterdir():
        image.unlink()
    assert_clean_error(split_cli(root, "--from-folders"), 2, "'eel' (none in val)", "--drop-small")
    result = split_cli(root, "--from-folders", "--drop-small", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["classes"] == ["cat", "dog"] and doc["dropped_classes"] == {"eel": 4}
    assert doc["totals"] == {"train": 8, "val": 4, "test": 0}


def test_classes_that_happen_to_be_named_train_and_test_are_still_classes(tmp_path):
    root = make_folder(tmp_path / "d", {"train": 5, "test": 5})  # images of trains and of tests
    result = split_cli(root, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["classes"] == ["test", "train"]


def test_from_folders_reports_an_image_in_train_and_test_by_sha256(tmp_path):
    root = _pre_split(tmp_path / "d")
    data = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "test" / "cat" / "leak.png").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    result = split_cli(root, "--from-folders")
    assert result.exit_code == 0, result.stderr
    assert "test/cat/leak.png (test) = train/cat/0.png (train)" in result.stderr
    assert sha[:16] in result.stderr and "--dedupe" in result.stderr
    result = split_cli(root, "--from-folders", "--dedupe", "--force", "--json")
    doc = json.loads(result.stdout)
    # The copy in training goes: the test part stays as the dataset's authors made it.
    assert doc["excluded"] == [{"path": "train/cat/0.png", "reason": "duplicate of test/cat/leak.png"}]


def test_from_folders_links_between_parts_are_not_followed(tmp_path):
    root = _pre_split(tmp_path / "d")
    os.symlink("../../val/cat", root / "train" / "cat" / "more")
    result = split_cli(root, "--from-folders", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["cat"] == {"train": 6, "val": 3, "test": 2}
    assert "train/cat/more" in result.stderr


def test_train_and_eval_work_unchanged_on_a_from_folders_manifest(tmp_path):
    root = _pre_split(tmp_path / "d")
    assert split_cli(root, "--from-folders").exit_code == 0
    out = tmp_path / "run"
    trained = run_cli(
        "train", "--data", root, "--arch", "18", "--epochs", "1", "--max-steps", "2", "--out", out, "--quiet"
    )
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("eval", out, "--data", root, "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == 4


# --- 8. --quiet means errors and warnings only ---------------------------------------------------------------


def test_split_quiet_prints_no_table_but_keeps_warnings_and_the_result(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    shutil.copy(root / "cat" / "img_000.png", root / "dog" / "copy.png")
    result = split_cli(root, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{root / 'manifest.csv'}\n"
    assert result.stderr.startswith("warning: ") and "byte-identical" in result.stderr
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), result.stderr
    result = split_cli(root, "--quiet", "--json", "--force")
    assert json.loads(result.stdout)["totals"]["train"] > 0


def test_sample_data_quiet_prints_only_the_path(tmp_path):
    result = runner.invoke(app, ["sample-data", str(tmp_path / "s"), "--per-class", "2", "--quiet"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == f"{tmp_path / 's'}\n"


# --- 9 and 10. layering and help ------------------------------------------------------------------------------


def test_data_layer_imports_nothing_above_it():
    for path in (ROOT / "resnet_cli" / "data").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert not name.startswith(("resnet_cli.io", "resnet_cli.engine", "resnet_cli.cli")), (path, name)


@pytest.mark.parametrize(("command", "examples"), [("split", 3), ("sample-data", 3)])
def test_help_shows_one_example_per_line(command, examples):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    text = result.stdout
    assert " | resnet" not in text
    lines = [line for line in text.splitlines() if f"resnet {command} " in line and "Usage" not in line]
    assert len(lines) == examples, text
