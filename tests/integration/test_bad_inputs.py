"""Bad input through the CLI: one clear line naming the culprit, a non-zero exit, nothing lost.

These runs stop in the split stage, which decodes every image and checks every
label before any training starts, so they need no Ray.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.pipeline_helpers import manifest, run_lfme

pytestmark = pytest.mark.integration


def write_config(path: Path, run_dir: Path, data: dict) -> Path:
    config = {
        "run_dir": str(run_dir),
        "data": {"imbalance_factor": 2, "val_per_class": 2, "transform": "cifar", "image_size": 8, **data},
        "split": {"method": "balanced", "num_subsets": 2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """A tiny ImageFolder tree: 3 classes, 12 train and 3 test JPEGs each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for split, n in (("train", 12), ("test", 3)):
        for c in ("ant", "bee", "cat"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return root


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_missing_data_root(tmp_path):
    run_dir = tmp_path / "run"
    missing = tmp_path / "no-such-folder"
    config = write_config(tmp_path / "c.yaml", run_dir, {"source": "imagefolder", "root": str(missing)})
    result = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert result.returncode == 1
    assert str(missing) in last_line(result)
    assert not (run_dir / "split" / "split.json").exists()
    assert manifest(run_dir)["stages"]["split"]["status"] == "failed"


def test_corrupt_image_is_named_and_the_last_good_split_survives(tmp_path, image_tree):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", run_dir, {"source": "imagefolder", "root": str(image_tree)})
    good = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert good.returncode == 0, good.stderr
    split_json = (run_dir / "split" / "split.json").read_bytes()

    corrupt = image_tree / "train" / "bee" / "0005.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    changed = write_config(tmp_path / "c.yaml", run_dir, {"source": "imagefolder", "root": str(image_tree), "val_per_class": 3})
    result = run_lfme("run", str(changed), "--stage", "split", timeout=120)
    assert result.returncode == 1
    assert "CorruptImageError" in result.stderr and str(corrupt) in result.stderr
    assert (run_dir / "split" / "split.json").read_bytes() == split_json
    assert manifest(run_dir)["stages"]["split"]["status"] == "failed"


def test_label_out_of_range_names_file_and_value(tmp_path, image_tree):
    lists = tmp_path / "lists"
    lists.mkdir()
    files = sorted(p.relative_to(image_tree) for p in (image_tree / "train").rglob("*.jpg"))
    label = {"ant": 0, "bee": 1, "cat": 2}
    (lists / "train.txt").write_text("".join(f"{p} {label[p.parent.name]}\n" for p in files))
    (lists / "test.txt").write_text(f"{files[0]} 0\n{files[1]} 7\n")  # 7: only classes 0..2 exist
    config = write_config(
        tmp_path / "c.yaml",
        tmp_path / "run",
        {"source": "oltr", "root": str(image_tree), "train": str(lists / "train.txt"), "test": str(lists / "test.txt")},
    )
    result = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert result.returncode == 1
    line = last_line(result)
    assert "test.txt" in line and "7" in line


def test_images_added_after_a_split_rerun_it_with_one_line_saying_what_changed(tmp_path, image_tree):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", run_dir, {"source": "imagefolder", "root": str(image_tree)})
    first = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert first.returncode == 0, first.stderr
    sizes = json.loads((run_dir / "split" / "split.json").read_text())["sizes"]
    again = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert "== split: up to date" in again.stdout  # nothing changed: skipped

    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(image_tree / "train" / "bee" / f"new{i}.jpg")
    verify = run_lfme("verify", str(run_dir))
    assert verify.returncode == 1
    assert "split: DATA CHANGED since the split: train/bee/ has 6 files more (12 -> 18)" in verify.stdout

    rerun = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "== split: the data changed since it ran (train/bee/ has 6 files more (12 -> 18)); running it again" in rerun.stdout
    now = json.loads((run_dir / "split" / "split.json").read_text())["sizes"]
    assert now["train"] + now["val"] > sizes["train"] + sizes["val"]
    assert run_lfme("verify", str(run_dir)).returncode == 0


def test_a_truncated_png_is_named_with_the_decoder_reason_only(tmp_path, image_tree):
    png = image_tree / "train" / "cat" / "0007.png"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    png.write_bytes(buffer.getvalue()[:30])
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", {"source": "imagefolder", "root": str(image_tree)})
    result = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert result.returncode == 1
    line = last_line(result)
    assert f"cannot decode image {png}: not an image format PIL recognises" in line
    assert "BytesIO" not in line and " at 0x" not in line


def test_a_subset_without_validation_images_stops_the_split_naming_it(tmp_path, image_tree):
    """A source's validation folder may miss classes; a subset with none of its classes there has no Acc_E."""
    rng = np.random.default_rng(1)
    for c in ("ant", "bee", "cat"):  # every class folder, two of them empty
        (image_tree / "val" / c).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(image_tree / "val" / "ant" / f"{i}.jpg")
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", {"source": "imagefolder", "root": str(image_tree), "val": "val"})
    result = run_lfme("run", str(config), "--stage", "split", timeout=120)
    assert result.returncode == 1
    line = last_line(result)
    assert re.search(r"split: subset '\w+' \(\d classes: [a-z, ]+\) has no validation image", line), line
    assert "ant" not in line.split("(")[1].split(")")[0]  # the subset named is one without ant
    assert not (tmp_path / "run" / "split" / "split.json").exists()
