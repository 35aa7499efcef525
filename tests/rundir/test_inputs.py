"""The signature of a data config's files (rundir.inputs): what it signs, and how a change is described."""

from __future__ import annotations

import json
import os

from rundir.sections import DataConfig
from rundir.inputs import data_signature, describe_changes


def touch(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def imagefolder(tmp_path) -> DataConfig:
    for part, counts in (("train", {"a": 3, "b": 2}), ("test", {"a": 1, "b": 1})):
        for name, n in counts.items():
            for i in range(n):
                touch(tmp_path / part / name / f"{i}.png")
    touch(tmp_path / "train" / "a" / "notes.txt")  # not an image: not read, not signed
    return DataConfig(source="imagefolder", root=str(tmp_path), transform="cifar")


def test_an_imagefolder_is_signed_by_class_folder(tmp_path):
    cfg = imagefolder(tmp_path)
    signature = data_signature(cfg)
    entries = signature["entries"]
    assert sorted(entries) == ["test/a/", "test/b/", "train/a/", "train/b/"]
    assert (entries["train/a/"]["files"], entries["train/a/"]["bytes"]) == (3, 3)
    assert data_signature(cfg) == signature  # the same files: the same signature


def test_added_images_and_a_changed_image_are_named(tmp_path):
    cfg = imagefolder(tmp_path)
    before = data_signature(cfg)
    for i in range(6):
        touch(tmp_path / "train" / "b" / f"new{i}.png")
    assert describe_changes(before, data_signature(cfg)) == ["train/b/ has 6 files more (2 -> 8)"]

    before = data_signature(cfg)
    image = tmp_path / "test" / "a" / "0.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert describe_changes(before, data_signature(cfg)) == ["test/a/ has files of other sizes or modification times (1 files)"]


def test_list_files_are_signed_by_content_and_their_images_by_stat(tmp_path):
    touch(tmp_path / "img" / "x.jpg")
    touch(tmp_path / "img" / "y.jpg")
    (tmp_path / "train.txt").write_text("img/x.jpg 0\nimg/y.jpg 1\n")
    (tmp_path / "test.txt").write_text("img/x.jpg 0\n")
    cfg = DataConfig(source="oltr", root=str(tmp_path), train="train.txt", test="test.txt", transform="imagenet")
    before = data_signature(cfg)
    assert sorted(before["entries"]) == ["img/", "test.txt", "train.txt"]
    assert before["entries"]["img/"]["files"] == 3  # x listed twice, y once
    (tmp_path / "train.txt").write_text("img/x.jpg 0\nimg/y.jpg 0\n")  # same size, other label
    assert describe_changes(before, data_signature(cfg)) == ["train.txt has other content"]


def test_inat_images_come_from_the_json(tmp_path):
    touch(tmp_path / "train_val2018" / "c" / "1.jpg")
    for name in ("train2018.json", "val2018.json"):
        (tmp_path / name).write_text(json.dumps({"images": [{"id": 1, "file_name": "train_val2018/c/1.jpg"}]}))
    cfg = DataConfig(source="inat", root=str(tmp_path), train="train2018.json", test="val2018.json", transform="imagenet")
    entries = data_signature(cfg)["entries"]
    assert sorted(entries) == ["train2018.json", "train_val2018/c/", "val2018.json"]
    (tmp_path / "train_val2018" / "c" / "1.jpg").unlink()
    assert describe_changes({"entries": entries}, data_signature(cfg)) == ["train_val2018/c/ is gone (2 files before)"]


def test_sources_without_files_have_an_empty_signature():
    assert data_signature(DataConfig(source="digits"))["entries"] == {}


def test_many_changes_are_summarised():
    before = {"entries": {f"{i}/": {"files": 1, "bytes": 1, "digest": "a"} for i in range(5)}}
    assert describe_changes(before, {"entries": {}}) == [
        "0/ is gone (1 files before)", "1/ is gone (1 files before)", "2/ is gone (1 files before)", "and 2 more"
    ]
