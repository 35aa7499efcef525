"""lfme.storage: atomic writes on the local disk (on S3: tests/integration/test_s3_storage.py)."""

import os

import pytest

from lfme import storage


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with storage.atomic_file(target) as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.md"]


def test_successful_write_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "m.json"
    storage.write_json_atomic(target, {"x": 1})
    storage.write_json_atomic(target, {"x": 2})
    assert storage.read_json(target) == {"x": 2}
    assert os.listdir(target.parent) == ["m.json"]


def test_file_url_is_the_local_disk(tmp_path):
    url = f"file://{tmp_path}/run"
    storage.write_text_atomic(storage.join(url, "x", "a.txt"), "hi")
    assert (tmp_path / "run" / "x" / "a.txt").read_text() == "hi"
    assert storage.local_path(url) == f"{tmp_path}/run"
    assert storage.arrow_filesystem(url) == (None, f"{tmp_path}/run")


def test_join_keeps_url_schemes():
    assert storage.join("s3://bucket/run/", "cache", "manifest.json") == "s3://bucket/run/cache/manifest.json"
    assert storage.join("/data/run", "cache") == "/data/run/cache"
    assert storage.absolute("s3://bucket/run/") == "s3://bucket/run"
    assert storage.name("s3://bucket/run/trial_1/") == "trial_1"
