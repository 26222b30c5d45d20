"""Scanning, verification, stratification and manifests, on real files on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from resnet_cli.cli.app import app
from resnet_cli.config import SplitConfig
from resnet_cli.data.sample import write_digits
from resnet_cli.data.scan import scan_folder
from resnet_cli.data.split import PARTS, make_split, read_manifest
from resnet_cli.errors import DatasetError, SplitError
from tests.images import make_folder, truncate, write_jpeg, write_png

runner = CliRunner()


def split_cli(*args: str):
    return runner.invoke(app, ["split", *map(str, args)])


def assert_clean_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits") / "data"
    write_digits(root)
    return root


# --- sample-data ------------------------------------------------------------------------------------------


def test_sample_data_writes_all_real_digits(digits):
    files = sorted(p.relative_to(digits).as_posix() for p in digits.rglob("*.png"))
    assert len(files) == 1797
    assert sorted({f.split("/")[0] for f in files}) == [str(d) for d in range(10)]
    assert files[0] == "0/0_0000.png"
    from PIL import Image

    with Image.open(digits / files[0]) as image:
        assert image.mode == "L" and image.size == (8, 8)
        levels = set(np.asarray(image).ravel().tolist())
    assert levels <= {round(v * 255 / 16) for v in range(17)} and len(levels) > 2


def test_sample_data_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["sample-data", str(tmp_path)])
    assert_clean_error(result, 2, "--force", str(tmp_path))
    result = runner.invoke(app, ["sample-data", str(tmp_path), "--force", "--per-class", "3"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert len(list(tmp_path.rglob("*.png"))) == 30


# --- stratification and manifests --------------------------------------------------------------------------


@pytest.mark.parametrize(("val", "test", "seed"), [(0.2, 0.0, 1), (0.15, 0.15, 0), (0.1, 0.3, 7)])
def test_stratified_within_one_image_disjoint_and_complete(digits, tmp_path, val, test, seed):
    out = tmp_path / "m.csv"
    result = make_split(digits, SplitConfig(val=val, test=test, seed=seed, out=str(out)))
    rows = result.manifest.rows
    assert len(rows) == 1797 and len({r.path for r in rows}) == 1797  # disjoint and covering
    assert {r.path for r in rows} == {p.relative_to(digits).as_posix() for p in digits.rglob("*.png")}
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    for label, counts in result.manifest.counts().items():
        n = sum(counts.values())
        for part in PARTS:
            assert abs(counts[part] - n * fractions[part]) <= 1, (label, part, counts)


def test_same_seed_same_bytes_other_seed_differs(digits, tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    make_split(digits, SplitConfig(val=0.2, test=0.1, seed=3, out=str(a)))
    make_split(digits, SplitConfig(val=0.2, test=0.1, seed=3, out=str(b)))
    make_split(digits, SplitConfig(val=0.2, test=0.1, seed=4, out=str(c)))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    meta_a, meta_b = (json.loads(p.with_suffix(".json").read_text()) for p in (a, b))
    meta_a.pop("csv")
    meta_b.pop("csv")
    assert meta_a == meta_b


def test_manifest_contents_and_read_back(digits, tmp_path):
    out = tmp_path / "m.csv"
    make_split(digits, SplitConfig(val=0.2, seed=5, out=str(out)))
    header = out.read_text().splitlines()[0]
    assert header == "path,class,split,sha256,width,height,mode"
    manifest = read_manifest(out)
    assert manifest.root.resolve() == digits.resolve()
    assert manifest.seed == 5 and manifest.val == 0.2 and manifest.classes == [str(d) for d in range(10)]
    assert all(r.width == 8 and r.height == 8 and r.mode == "L" and len(r.sha256) == 64 for r in manifest.rows)
    # Hand edits are caught.
    out.write_text(out.read_text().replace(",val,", ",train,", 1))
    with pytest.raises(DatasetError, match="changed after it was written"):
        read_manifest(out)


def test_cli_table_json_and_path_last(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 10, "dog": 20})
    result = split_cli(root, "--val", "0.2", "--test", "0.2")
    assert result.exit_code == 0, result.stderr
    # Outside a terminal stdout holds just the path (for $(...)); the table goes to stderr.
    assert result.stdout == f"{root / 'manifest.csv'}\n"
    assert "cat" in result.stderr and "ratio 2.0" in result.stderr
    again = split_cli(root, "--val", "0.2")
    assert_clean_error(again, 2, "already exists", "--force")
    forced = split_cli(root, "--val", "0.25", "--force", "--json")
    doc = json.loads(forced.stdout)
    assert doc["counts"]["dog"] == {"train": 15, "val": 5, "test": 0}
    assert doc["totals"] == {"train": 22, "val": 8, "test": 0}


def test_default_manifest_is_where_train_looks(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    make_split(root, SplitConfig(val=0.2))
    assert read_manifest(root).path == root / "manifest.csv"


# --- the scan's rules ---------------------------------------------------------------------------------------


def test_scan_rules(tmp_path):
    root = tmp_path / "d"
    write_png(root / "cat" / "a.PNG", seed=1)
    write_jpeg(root / "cat" / "b.JpEg", seed=2)
    write_png(root / "cat" / "nested" / "deeper" / "c.png", seed=3)  # nested folders belong to the class
    write_png(root / "cat" / ".hidden.png", seed=4)
    write_png(root / "cat" / ".cache" / "d.png", seed=5)
    write_png(root / ".trash" / "e.png", seed=6)  # hidden class folder
    write_png(root / "loose.png", seed=7)  # files at the top are not a class
    (root / "cat" / "notes.txt").write_text("x")
    write_png(root / "dog" / "f.png", seed=8)
    os.symlink(root / "cat" / "a.PNG", root / "cat" / "link-to-a.png")  # same file twice
    os.symlink(root / "cat" / "a.PNG", root / "dog" / "z-link.png")  # into another class: not followed
    os.symlink(root / "cat", root / "cat" / "nested" / "loop")  # a folder loop
    scan = scan_folder(root)
    assert scan.classes == ["cat", "dog"]
    assert [f.path for f in scan.files] == ["cat/a.PNG", "cat/b.JpEg", "cat/nested/deeper/c.png", "dog/f.png"]
    assert [a[0] for a in scan.aliases] == ["cat/link-to-a.png"]
    assert [s[0] for s in scan.skipped] == ["dog/z-link.png"] and "out of its class" in scan.skipped[0][1]
    assert scan.other_files == {"cat": ["cat/notes.txt"]}


def test_spaces_and_non_ascii_names(tmp_path):
    root = tmp_path / "my data"
    make_folder(root, {"chat noir": 5, "größe ✓": 5})
    result = split_cli(root, "--val", "0.2", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["classes"] == ["chat noir", "größe ✓"]
    manifest = read_manifest(root / "manifest.csv")
    assert any(r.path.startswith("größe ✓/") for r in manifest.rows)


def test_png_named_jpg_is_accepted(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    write_png(root / "a" / "really-a-png.jpg", seed=99)
    assert split_cli(root, "--val", "0.2").exit_code == 0
    assert any(r.path == "a/really-a-png.jpg" for r in read_manifest(root).rows)


# --- bad input: exit 2, one line, no traceback --------------------------------------------------------------


def test_missing_folder(tmp_path):
    assert_clean_error(split_cli(tmp_path / "nope"), 2, "does not exist", "nope")


def test_file_instead_of_folder(tmp_path):
    f = write_png(tmp_path / "x.png")
    assert_clean_error(split_cli(f), 2, "is a file, not a folder")


def test_no_class_folders(tmp_path):
    write_png(tmp_path / "d" / "a.png")
    assert_clean_error(split_cli(tmp_path / "d"), 2, "no class folders", "1 images lie directly")


def test_empty_class(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "empty").mkdir()
    assert_clean_error(split_cli(root), 2, "'empty' (empty)", "--drop-small")


def test_class_of_only_non_image_files(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("hi")
    assert_clean_error(split_cli(root), 2, "'docs' (no images; 1 other file(s) such as docs/readme.txt)")


def test_class_with_one_image_and_drop_small(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10, "solo": 1, "pair": 2})
    result = split_cli(root, "--val", "0.2", "--test", "0.1")
    assert_clean_error(result, 2, "'solo' (1 image)", "'pair' (2 images)", "at least 5 images", "--drop-small")
    result = split_cli(root, "--val", "0.2", "--test", "0.1", "--drop-small", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["classes"] == ["a", "b"] and doc["dropped_classes"] == {"pair": 2, "solo": 1}
    assert "left out 2 class(es)" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--val", "0.6", "--test", "0.4"], "leaves nothing to train on"),
        (["--val", "0"], "--val must be greater than 0"),
        (["--val", "-0.1"], "between 0 and 1"),
        (["--val", "0.2", "--test", "-0.2"], "--test must be a fraction"),
        (["--val", "1.5"], "between 0 and 1"),
    ],
)
def test_impossible_fractions(tmp_path, args, fragment):
    root = make_folder(tmp_path / "d", {"a": 5, "b": 5})
    assert_clean_error(split_cli(root, *args), 2, fragment)


def _corrupt_folder(tmp_path: Path) -> Path:
    root = make_folder(tmp_path / "d", {"a": 8, "b": 8})
    truncate(write_png(root / "a" / "trunc.png", seed=50, size=64))
    truncate(write_jpeg(root / "b" / "trunc.jpg", size=64))
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("this is not a jpeg")
    return root


def test_unreadable_images_are_listed(tmp_path):
    root = _corrupt_folder(tmp_path)
    result = split_cli(root)
    assert_clean_error(
        result,
        2,
        "4 unreadable images",
        "a/trunc.png (truncated",
        "b/trunc.jpg (truncated",
        "a/zero.png (empty file",
        "b/text.jpg (not an image",
        "--skip-bad",
    )


def test_skip_bad_records_them(tmp_path):
    root = _corrupt_folder(tmp_path)
    result = split_cli(root, "--skip-bad")
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(root)
    assert len(manifest.rows) == 16
    excluded = {e["path"]: e["reason"] for e in manifest.meta["excluded"]}
    assert set(excluded) == {"a/trunc.png", "b/trunc.jpg", "a/zero.png", "b/text.jpg"}
    assert excluded["a/zero.png"].startswith("unreadable: empty file")


def test_duplicates_reported_and_deduped(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    data = (root / "a" / "img_000.png").read_bytes()
    for i in range(4):
        (root / "a" / f"copy_{i}.png").write_bytes(data)
    result = split_cli(root, "--val", "0.5")
    assert result.exit_code == 0
    assert "byte-identical" in result.stderr and "--dedupe" in result.stderr
    result = split_cli(root, "--val", "0.5", "--dedupe", "--force", "--json")
    doc = json.loads(result.stdout)
    assert sum(doc["totals"].values()) == 20
    assert {e["reason"] for e in doc["excluded"]} == {"duplicate of a/copy_0.png"}


def test_fractions_that_leave_a_part_empty_for_some_class_sizes(tmp_path):
    # round(4 * 0.4) twice leaves no training image for a class of 4, though a class of 3 would do.
    root = make_folder(tmp_path / "d", {"a": 4, "b": 3})
    result = split_cli(root, "--val", "0.4", "--test", "0.4")
    assert_clean_error(result, 2, "'a' (4 images leave train empty)", "--drop-small")


def test_brackets_in_names_are_printed_verbatim(tmp_path):
    root = make_folder(tmp_path / "d", {"[draft] cats": 5, "[bold]dogs": 5})
    result = split_cli(root, "--val", "0.2")
    assert result.exit_code == 0, result.stderr
    assert "[draft] cats" in result.stderr and "[bold]dogs" in result.stderr


def test_make_split_errors_are_domain_errors(tmp_path):
    with pytest.raises(SplitError):
        make_split(make_folder(tmp_path / "d", {"a": 2, "b": 2}), SplitConfig(val=0.2, test=0.2))


def test_a_missing_manifest_says_where_one_is(small_split, tmp_path):
    from resnet_cli.data.split import read_manifest

    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(DatasetError, match=f"but {small_split} has one .*: pass data {small_split}$"):  # a class folder
        read_manifest(small_split / "3")
    unsplit = tmp_path / "photos"
    unsplit.mkdir()
    with pytest.raises(DatasetError, match=f"run 'resnet split {unsplit} --val 0.2' first"):
        read_manifest(unsplit)
