"""lfme.storage and the teacher cache on a real S3 API (moto's server on loopback, `s3_endpoint` in tests/conftest.py).

The local-disk half of these checks is tests/lfme/test_storage.py.
"""

import numpy as np
import pytest

from lfme import storage
from lfme.subsets import Subset
from lfme.teacher_cache import TeacherRows, read_cache, write_cache
from tests.conftest import s3_objects

pytestmark = pytest.mark.integration  # starts the session's S3 server


def test_s3_write_read_list_remove(s3_endpoint, s3_bucket):
    run = f"s3://{s3_bucket}/run"
    storage.write_json_atomic(storage.join(run, "manifest.json"), {"stages": {}})
    storage.save_torch_atomic(storage.join(run, "experts", "many", "model.pt"), {"w": [1, 2, 3]})
    assert storage.read_json(storage.join(run, "manifest.json")) == {"stages": {}}
    assert storage.load_torch(storage.join(run, "experts", "many", "model.pt")) == {"w": [1, 2, 3]}
    assert storage.exists(storage.join(run, "experts")) and not storage.exists(storage.join(run, "nothing"))
    assert storage.list_names(run) == ["experts", "manifest.json"]
    assert set(s3_objects(s3_endpoint, s3_bucket)) == {"run/manifest.json", "run/experts/many/model.pt"}

    storage.remove(storage.join(run, "experts"))
    assert set(s3_objects(s3_endpoint, s3_bucket)) == {"run/manifest.json"}
    storage.remove(storage.join(run, "experts"))  # nothing left to delete: not an error
    with pytest.raises(FileNotFoundError, match="run/nothing.json"):
        storage.read_json(storage.join(run, "nothing.json"))


def test_s3_failed_write_keeps_the_old_object(s3_endpoint, s3_bucket):
    target = f"s3://{s3_bucket}/run/report.md"
    storage.write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with storage.atomic_file(target) as f:
            f.write(b"partial")
            raise RuntimeError("connection lost")
    assert storage.read_text(target) == "old"
    assert set(s3_objects(s3_endpoint, s3_bucket)) == {"run/report.md"}


def _rows(ids, num_classes=4, offset=0.0):
    ids = np.asarray(ids, dtype=np.int64)
    labels = ids % num_classes
    logits = (np.arange(len(ids) * num_classes).reshape(len(ids), num_classes) / 8 + offset).astype(np.float16)
    return TeacherRows(ids, labels, (labels >= 2).astype(np.int32), logits, np.full(len(ids), 0.5, np.float32))


def test_teacher_cache_on_s3_round_trip_and_rewrite(s3_endpoint, s3_bucket):
    cache = f"s3://{s3_bucket}/run/cache"
    subsets = [Subset("head", (0, 1)), Subset("tail", (2, 3))]
    first = write_cache(cache, {"train": _rows(range(10))}, fingerprint="fp-one", subsets=subsets,
                        experts={"head": "a" * 64, "tail": "b" * 64}, shard_rows=4)
    keys = set(s3_objects(s3_endpoint, s3_bucket))
    data = f"run/cache/{first['data_dir']}"
    assert keys == {"run/cache/manifest.json", f"{data}/train-00000.parquet", f"{data}/train-00001.parquet",
                    f"{data}/train-00002.parquet"}
    got = read_cache(cache, "train", expected_fingerprint="fp-one")
    np.testing.assert_array_equal(got.sample_ids, np.arange(10))
    np.testing.assert_array_equal(got.logits, _rows(range(10)).logits)

    second = write_cache(cache, {"train": _rows(range(6), offset=1.0)}, fingerprint="fp-two", subsets=subsets,
                         experts={"head": "c" * 64, "tail": "d" * 64}, shard_rows=4)
    keys = set(s3_objects(s3_endpoint, s3_bucket))
    assert not any(first["data_dir"] in k for k in keys), "the replaced cache's shards must be deleted"
    assert sum(second["data_dir"] in k for k in keys) == 2
    np.testing.assert_array_equal(read_cache(cache, "train").logits, _rows(range(6), offset=1.0).logits)


def test_arrow_filesystem_reaches_the_same_bucket(s3_endpoint, s3_bucket):
    """What Ray Train writes through the pyarrow filesystem is what the pipeline reads through fsspec."""
    fs, path = storage.arrow_filesystem(f"s3://{s3_bucket}/run/ray")
    assert path == f"{s3_bucket}/run/ray"
    with fs.open_output_stream(f"{path}/checkpoint/state.txt") as f:
        f.write(b"epoch 3")
    assert storage.read_text(f"s3://{s3_bucket}/run/ray/checkpoint/state.txt") == "epoch 3"
