"""Tests of lfme.teacher_cache: format on disk, round trip, sharding, atomic rewrite, errors."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lfme import teacher_cache as tc
from lfme.storage import file_sha256
from lfme.subsets import Subset
from lfme.teacher_cache import CacheDamagedError, CacheMismatchError, TeacherRows, read_cache, read_manifest, write_cache

C = 6
SUBSETS = [Subset("many", (0, 1, 2)), Subset("medium", (3, 4)), Subset("few", (5,))]
OWNER = np.array([0, 0, 0, 1, 1, 2])
EXPERTS = {"many": {"sha256": "a" * 64}, "medium": {"sha256": "b" * 64}, "few": {"sha256": "c" * 64}}


def make_rows(n, seed=0, id_offset=0):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype(np.int64) * 7 + id_offset  # unsorted, non-contiguous
    labels = rng.integers(0, C, n).astype(np.int64)
    return TeacherRows(
        sample_ids=ids,
        labels=labels,
        subsets=OWNER[labels].astype(np.int32),
        logits=(rng.standard_normal((n, C)) * 4).astype(np.float32),
        confidence=rng.random(n).astype(np.float32),
    )


def write(directory, parts=None, fingerprint="fp-one-0123456789", **kw):
    parts = parts if parts is not None else {"train": make_rows(10), "val": make_rows(4, seed=1, id_offset=1_000_000_000)}
    kw.setdefault("experts", EXPERTS)
    return write_cache(directory, parts, fingerprint=fingerprint, subsets=SUBSETS, **kw)


def data_dirs(directory):
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def test_round_trip_sorted_and_float16(tmp_path):
    src = make_rows(10)
    manifest = write(tmp_path, {"train": src, "val": make_rows(4, seed=1)}, extra={"note": "x"})
    got = read_cache(tmp_path, "train", expected_fingerprint="fp-one-0123456789", expected_experts=EXPERTS)
    order = np.argsort(src.sample_ids)
    assert len(got) == 10
    np.testing.assert_array_equal(got.sample_ids, src.sample_ids[order])
    np.testing.assert_array_equal(got.labels, src.labels[order])
    np.testing.assert_array_equal(got.subsets, src.subsets[order])
    np.testing.assert_array_equal(got.confidence, src.confidence[order])
    assert got.logits.dtype == np.float16 and got.logits.shape == (10, C)
    np.testing.assert_array_equal(got.logits, src.logits[order].astype(np.float16))
    # float16 precision only: close to the float32 source, not equal to it
    np.testing.assert_allclose(got.logits.astype(np.float32), src.logits[order], rtol=1e-3, atol=1e-3)
    assert got.sample_ids.dtype == np.int64 and got.subsets.dtype == np.int32 and got.confidence.dtype == np.float32
    # rows_for maps ids back to positions
    pick = src.sample_ids[[3, 0, 7]]
    np.testing.assert_array_equal(got.sample_ids[got.rows_for(pick)], pick)
    # manifest as documented
    on_disk = read_manifest(tmp_path)
    assert on_disk == manifest
    assert on_disk["format"] == "lfme-teacher-cache/1"
    assert on_disk["num_classes"] == C and on_disk["subsets"] == [s.record() for s in SUBSETS] and on_disk["experts"] == EXPERTS
    assert on_disk["parts"]["train"]["rows"] == 10 and on_disk["parts"]["val"]["rows"] == 4
    assert on_disk["extra"] == {"note": "x"} and "T" in on_disk["created_at"]
    assert on_disk["data_dir"].startswith("data-fp-one-01234-")
    assert data_dirs(tmp_path) == [on_disk["data_dir"]]


def test_plain_pyarrow_and_pandas_read_documented_schema(tmp_path):
    manifest = json.loads((write(tmp_path) and (tmp_path / "manifest.json")).read_text())
    shard = tmp_path / manifest["data_dir"] / manifest["parts"]["train"]["shards"][0]
    table = pq.read_table(shard)
    assert table.column_names == ["sample_id", "label", "subset", "logits", "confidence"]
    types = {f.name: f.type for f in table.schema}
    assert types["sample_id"] == pa.int64()
    assert types["label"] == pa.int64()
    assert types["subset"] == pa.int32()
    assert types["logits"] == pa.list_(pa.float16(), C)
    assert pa.types.is_fixed_size_list(types["logits"]) and types["logits"].value_type == pa.float16()
    assert types["confidence"] == pa.float32()
    meta = json.loads(table.schema.metadata[b"lfme"])
    assert meta["num_classes"] == C and meta["fingerprint"] == "fp-one-0123456789"
    ids = table.column("sample_id").to_numpy()
    assert (np.diff(ids) > 0).all()

    df = pd.read_parquet(shard)
    assert list(df.columns) == ["sample_id", "label", "subset", "logits", "confidence"]
    assert df["sample_id"].dtype == np.int64 and df["label"].dtype == np.int64
    assert df["subset"].dtype == np.int32 and df["confidence"].dtype == np.float32
    first = np.asarray(df["logits"].iloc[0])
    assert first.shape == (C,) and first.dtype == np.float16


def test_sharding(tmp_path):
    manifest = write(tmp_path, shard_rows=3)
    train = manifest["parts"]["train"]
    assert train["shards"] == [f"train-{k:05d}.parquet" for k in range(4)]
    sizes = [pq.read_metadata(tmp_path / manifest["data_dir"] / s).num_rows for s in train["shards"]]
    assert sizes == [3, 3, 3, 1]
    assert manifest["parts"]["val"]["shards"] == ["val-00000.parquet", "val-00001.parquet"]
    # shards are sorted and consecutive in sample_id
    ids = np.concatenate(
        [pq.read_table(tmp_path / manifest["data_dir"] / s).column("sample_id").to_numpy() for s in train["shards"]]
    )
    assert (np.diff(ids) > 0).all()
    assert len(read_cache(tmp_path, "train")) == 10


def test_failed_rewrite_leaves_old_cache_intact(tmp_path, monkeypatch):
    old_manifest = write(tmp_path, shard_rows=3)
    old_bytes = (tmp_path / "manifest.json").read_bytes()
    old_rows = read_cache(tmp_path, "train")

    real = tc.write._write_shard
    calls = {"n": 0}

    def flaky(table, path):
        calls["n"] += 1
        if calls["n"] == 2:
            real(table, path)  # half-write the shard, then die
            raise OSError("disk full (simulated)")
        return real(table, path)

    monkeypatch.setattr(tc.write, "_write_shard", flaky)
    with pytest.raises(OSError, match="simulated"):
        write(tmp_path, {"train": make_rows(10, seed=5)}, fingerprint="fp-two", shard_rows=3)
    assert calls["n"] == 2

    assert (tmp_path / "manifest.json").read_bytes() == old_bytes
    assert data_dirs(tmp_path) == [old_manifest["data_dir"]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    again = read_cache(tmp_path, "train", expected_fingerprint="fp-one-0123456789")
    np.testing.assert_array_equal(again.sample_ids, old_rows.sample_ids)
    np.testing.assert_array_equal(again.logits, old_rows.logits)


def test_a_write_that_fails_after_its_manifest_replaced_the_old_keeps_the_new_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    write(cache)
    new_train = make_rows(10, seed=5)

    def interrupted(directory, keep):
        raise KeyboardInterrupt  # Ctrl-C while the old data is being removed

    monkeypatch.setattr(tc.write, "_remove_unreferenced", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(cache, {"train": new_train, "val": make_rows(4, seed=1, id_offset=1_000_000_000)}, fingerprint="fp-two")
    got = read_cache(cache, "train", expected_fingerprint="fp-two")
    order = np.argsort(new_train.sample_ids)
    np.testing.assert_array_equal(got.logits, new_train.logits[order].astype(np.float16))


def test_successful_rewrite_removes_old_data(tmp_path):
    first = write(tmp_path)
    (tmp_path / "data-orphan-deadbeef").mkdir()  # left over from a crashed writer
    (tmp_path / "keep-me").mkdir()  # not ours: never deleted
    second = write(tmp_path, {"train": make_rows(5, seed=9)}, fingerprint="fp-two")
    assert second["data_dir"] != first["data_dir"]
    assert data_dirs(tmp_path) == sorted([second["data_dir"], "keep-me"])
    assert read_manifest(tmp_path)["fingerprint"] == "fp-two"
    assert len(read_cache(tmp_path, "train")) == 5
    with pytest.raises(KeyError, match="val"):
        read_cache(tmp_path, "val")


def test_fingerprint_mismatch_names_both(tmp_path):
    write(tmp_path)
    with pytest.raises(CacheMismatchError) as err:
        read_cache(tmp_path, "train", expected_fingerprint="fp-other")
    msg = str(err.value)
    assert "fp-one-0123456789" in msg and "fp-other" in msg and "rerun the cache stage" in msg
    assert isinstance(err.value, ValueError)


def test_expert_mismatch_names_the_expert(tmp_path):
    write(tmp_path)
    wanted = {"many": "a" * 64, "medium": "d" * 64, "few": "e" * 64}
    with pytest.raises(CacheMismatchError) as err:
        read_cache(tmp_path, "train", expected_experts=wanted)
    msg = str(err.value)
    assert "'medium'" in msg and "b" * 64 in msg and "d" * 64 in msg and "rerun the cache stage" in msg
    assert "'few'" not in msg
    with pytest.raises(CacheMismatchError, match="'extra'"):
        read_cache(tmp_path, "train", expected_experts={**{k: v["sha256"] for k, v in EXPERTS.items()}, "extra": "f" * 64})
    assert len(read_cache(tmp_path, "train", expected_experts={k: v["sha256"] for k, v in EXPERTS.items()})) == 10


def test_missing_manifest_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_cache(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere" / "manifest.json") in str(err.value) and "cache stage" in str(err.value)
    tmp_path.joinpath("manifest.json").write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(ValueError, match="something-else/9"):
        read_manifest(tmp_path)


def test_duplicate_ids_rejected(tmp_path):
    rows = make_rows(6)
    rows.sample_ids[4] = rows.sample_ids[1]
    dup = int(rows.sample_ids[1])
    with pytest.raises(ValueError, match=rf"part 'train': duplicate sample_id {dup}\b"):
        write(tmp_path, {"train": rows})
    assert not (tmp_path / "manifest.json").exists()
    assert data_dirs(tmp_path) == []


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("logits", np.zeros((10, C + 1), np.float32), "'logits'"),
        ("logits", np.zeros((10, C), np.int64), "'logits'"),
        ("labels", np.zeros(9, np.int64), "'labels'"),
        ("subsets", np.zeros(10, np.float32), "'subsets'"),
        ("confidence", np.full(10, 2.0, np.float32), "'confidence'"),
    ],
)
def test_validation_names_field_and_part(tmp_path, field, value, needle):
    rows = make_rows(10)
    setattr(rows, field, value)
    with pytest.raises(ValueError) as err:
        write(tmp_path, {"val": rows})
    assert needle in str(err.value) and "'val'" in str(err.value)


def test_wrong_subset_index_rejected(tmp_path):
    rows = make_rows(10)
    rows.subsets = (rows.subsets + 1) % 3
    with pytest.raises(ValueError, match="'subsets'"):
        write(tmp_path, {"train": rows})


def test_rows_for_missing_id_and_unsorted(tmp_path):
    write(tmp_path)
    got = read_cache(tmp_path, "train")
    present = int(got.sample_ids[2])
    missing = int(got.sample_ids.max()) + 1
    with pytest.raises(KeyError, match=rf"sample_id {missing}\b"):
        got.rows_for([present, missing, missing + 3])
    with pytest.raises(KeyError, match=r"sample_id -5\b"):
        got.rows_for([-5])
    # unsorted rows (as built in memory) are searched correctly too
    rows = make_rows(8)
    pos = rows.rows_for(rows.sample_ids[::-1])
    np.testing.assert_array_equal(pos, np.arange(8)[::-1])
    assert rows.rows_for([]).shape == (0,)


def test_row_count_mismatch_names_shard(tmp_path):
    manifest = write(tmp_path, shard_rows=3)
    manifest["parts"]["train"]["shard_rows"][1] = 2
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="train-00001.parquet"):
        read_cache(tmp_path, "train")


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "ckpt.pt"
    data = os.urandom(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    assert file_sha256(p, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_a_damaged_shard_is_named_not_a_pyarrow_traceback(tmp_path):
    manifest = write(tmp_path, {"train": make_rows(20)}, shard_rows=8)
    shard = tmp_path / manifest["data_dir"] / manifest["parts"]["train"]["shards"][1]
    assert manifest["parts"]["train"]["shard_bytes"][1] == shard.stat().st_size
    assert manifest["parts"]["train"]["shard_sha256"][1] == hashlib.sha256(shard.read_bytes()).hexdigest()
    shard.write_bytes(shard.read_bytes()[:100])  # truncated, as a full disk or a killed copy leaves it
    with pytest.raises(CacheDamagedError, match=rf"shard {shard} is damaged: 100 bytes"):
        read_cache(tmp_path, "train")


def test_a_shard_with_one_byte_changed_is_found(tmp_path):
    """Same size, other bytes (a bit flipped in storage): the checksum catches what a size check cannot."""
    manifest = write(tmp_path, {"train": make_rows(8)})
    shard = tmp_path / manifest["data_dir"] / "train-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheDamagedError, match="is damaged"):
        read_cache(tmp_path, "train")


# ----------------------------------------------------- shards written anywhere


def test_shards_written_separately_and_committed_read_back_as_one_sorted_part(tmp_path):
    src = make_rows(12)
    order = np.argsort(src.sample_ids)
    data_dir = tc.new_data_dir("fp-one-0123456789")
    # Three writers, as three cache tasks would be, each with an id range of its own, in any order.
    shards = [
        tc.write_shard(tmp_path, data_dir, "train", k, TeacherRows(*(getattr(src, f)[order[4 * k : 4 * k + 4]][::-1] for f in
                       ("sample_ids", "labels", "subsets", "logits", "confidence"))), fingerprint="fp-one-0123456789", subsets=SUBSETS)
        for k in (2, 0, 1)
    ]
    manifest = tc.commit_cache(tmp_path, data_dir, shards, fingerprint="fp-one-0123456789", subsets=SUBSETS, experts=EXPERTS)
    assert manifest["parts"]["train"]["shards"] == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    assert manifest["parts"]["train"]["shard_rows"] == [4, 4, 4]
    got = read_cache(tmp_path, "train", expected_experts=EXPERTS)
    np.testing.assert_array_equal(got.sample_ids, np.sort(src.sample_ids))
    np.testing.assert_array_equal(got.logits, src.logits[order].astype(np.float16))


def test_commit_refuses_overlapping_shards_and_missing_indices_and_keeps_the_old_cache(tmp_path):
    write(tmp_path)
    before = read_cache(tmp_path, "train")
    src = make_rows(8)
    data_dir = tc.new_data_dir("fp-two")
    first = tc.write_shard(tmp_path, data_dir, "train", 0, src.slice(0, 4), fingerprint="fp-two", subsets=SUBSETS)
    second = tc.write_shard(tmp_path, data_dir, "train", 1, src.slice(4, 8), fingerprint="fp-two", subsets=SUBSETS)
    # make_rows' ids are a permutation: the two halves' id ranges interleave.
    with pytest.raises(ValueError, match=r"shard train-00001.parquet starts at sample_id \d+, not after \d+"):
        tc.commit_cache(tmp_path, data_dir, [first, second], fingerprint="fp-two", subsets=SUBSETS, experts=EXPERTS)
    with pytest.raises(ValueError, match=r"shard indices \[1\] are not 0..0"):
        tc.commit_cache(tmp_path, data_dir, [second], fingerprint="fp-two", subsets=SUBSETS, experts=EXPERTS)
    tc.discard_data_dir(tmp_path, data_dir)
    after = read_cache(tmp_path, "train", expected_fingerprint="fp-one-0123456789")
    np.testing.assert_array_equal(after.logits, before.logits)
    assert len(data_dirs(tmp_path)) == 1


# ------------------------------------------------------- the node's mapped copy


def test_map_cache_equals_read_cache_and_is_a_read_only_memory_map(tmp_path):
    write(tmp_path / "cache", {"train": make_rows(40), "val": make_rows(4, seed=1)}, shard_rows=7)
    local = tmp_path / "local"
    mapped = tc.map_cache(tmp_path / "cache", "train", local_dir=str(local), expected_experts=EXPERTS)
    read = read_cache(tmp_path / "cache", "train")
    assert isinstance(mapped.logits, np.memmap) and not mapped.logits.flags.writeable
    for f in ("sample_ids", "labels", "subsets", "logits", "confidence"):
        np.testing.assert_array_equal(getattr(mapped, f), getattr(read, f))
        assert getattr(mapped, f).dtype == getattr(read, f).dtype
    # The copy is one uncompressed float16 array: 40 x 6 x 2 bytes of data after the .npy header.
    (copy,) = local.glob("*/data-*/train/logits.npy")
    assert 40 * C * 2 < copy.stat().st_size < 40 * C * 2 + 256


def test_map_cache_copies_once_per_node_and_anew_when_the_cache_is_rebuilt(tmp_path, monkeypatch):
    cache, local = tmp_path / "cache", str(tmp_path / "local")
    write(cache)
    reads = []
    real = tc.local._read_shard
    monkeypatch.setattr(tc.local, "_read_shard", lambda *a: reads.append(a[2:]) or real(*a))
    first = tc.map_cache(cache, "train", local_dir=local)
    again = tc.map_cache(cache, "train", local_dir=local)
    assert reads == [("train", 0)]  # the second reader maps the copy the first made
    np.testing.assert_array_equal(first.logits, again.logits)

    write(cache, {"train": make_rows(10, seed=9), "val": make_rows(4, seed=1, id_offset=10**9)}, fingerprint="fp-two")
    rebuilt = tc.map_cache(cache, "train", local_dir=local)
    assert reads == [("train", 0), ("train", 0)]
    np.testing.assert_array_equal(rebuilt.logits, read_cache(cache, "train").logits)
    assert not np.array_equal(rebuilt.logits, first.logits)
    # The old copy was removed (its mapping in `first` stays valid until dropped).
    assert len(list(Path(local).glob("*/data-*/train"))) == 1
    assert first.logits.shape == (10, C) and np.isfinite(first.logits).all()


def test_map_cache_removes_the_copies_of_caches_that_are_gone_and_keeps_the_others(tmp_path):
    local = tmp_path / "local"
    for name in ("gone", "kept", "new"):
        write(tmp_path / name)
    tc.map_cache(tmp_path / "gone", "train", local_dir=str(local))
    tc.map_cache(tmp_path / "kept", "train", local_dir=str(local))
    sources = {p.read_text(): p.parent for p in local.glob(f"*/{tc.LOCAL_SOURCE}")}
    assert set(sources) == {str(tmp_path / "gone"), str(tmp_path / "kept")}
    (tmp_path / "gone" / "manifest.json").unlink()  # its run directory deleted

    tc.map_cache(tmp_path / "new", "train", local_dir=str(local))
    assert not sources[str(tmp_path / "gone")].exists()
    assert list(sources[str(tmp_path / "kept")].glob("data-*/train/logits.npy"))
    assert {p.read_text() for p in local.glob(f"*/{tc.LOCAL_SOURCE}")} == {str(tmp_path / "kept"), str(tmp_path / "new")}


def test_a_reader_that_copied_a_replaced_version_leaves_the_current_copy_alone(tmp_path):
    cache, local = tmp_path / "cache", tmp_path / "local"
    old = write(cache)["data_dir"]
    write(cache, fingerprint="fp-two")
    tc.map_cache(cache, "train", local_dir=str(local))  # the current version's copy
    [root] = [p for p in local.iterdir() if p.is_dir()]
    (root / old / "train").mkdir(parents=True)  # a reader that read the manifest before the commit made its copy
    tc.local._remove_stale_copies(str(cache), root, old)
    assert sorted(p.name for p in root.glob("data-*")) == sorted([old, read_manifest(cache)["data_dir"]])


def test_map_cache_concurrent_readers_make_one_copy(tmp_path, monkeypatch):
    import threading

    cache, local = tmp_path / "cache", str(tmp_path / "local")
    write(cache, {"train": make_rows(30)}, shard_rows=5)
    reads = []
    real = tc.local._read_shard
    monkeypatch.setattr(tc.local, "_read_shard", lambda *a: reads.append(a[3]) or real(*a))
    results = [None] * 4

    def reader(i):
        results[i] = tc.map_cache(cache, "train", local_dir=local)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(reads) == [0, 1, 2, 3, 4, 5]  # each shard read once, by the one reader that copied
    for r in results:
        np.testing.assert_array_equal(r.logits, results[0].logits)


def test_map_cache_of_a_damaged_shard_names_it_and_leaves_no_copy(tmp_path):
    cache, local = tmp_path / "cache", tmp_path / "local"
    manifest = write(cache, {"train": make_rows(20)}, shard_rows=8)
    shard = cache / manifest["data_dir"] / manifest["parts"]["train"]["shards"][1]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CacheDamagedError, match=r"train-00001\.parquet is damaged: 100 bytes"):
        tc.map_cache(cache, "train", local_dir=str(local))
    assert not list(local.glob("*/data-*/train"))
    assert not list(local.glob("*/data-*/.train*"))  # the staging folder went too


def test_map_cache_of_an_empty_part(tmp_path):
    write(tmp_path / "cache", {"train": make_rows(5), "val": make_rows(0)})
    rows = tc.map_cache(tmp_path / "cache", "val", local_dir=str(tmp_path / "local"))
    assert len(rows) == 0 and rows.logits.shape == (0, C)


# ------------------------------------------------------------------- top-k


def topk_rows(n=12, seed=0):
    from lfme.teachers import teacher_rows

    rng = np.random.default_rng(seed)
    subsets = SUBSETS
    logits = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    labels = rng.integers(0, C, n)
    return logits, subsets, teacher_rows(np.arange(n) * 3, labels, logits, subsets, top_k=2)


def test_top_k_target_is_exact_on_the_kept_classes_and_spreads_the_rest_evenly():
    logits, subsets, rows = topk_rows()
    assert rows.logits is None and rows.topk.values.shape == (12, 2 + 2 + 1) and rows.topk.rest.shape == (12, 3)
    rebuilt = rows.dense(np.arange(12))
    many = [0, 1, 2]  # three classes, two kept
    for i in range(12):
        z = logits[i, many].astype(np.float64)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        q = np.exp(rebuilt[i, many] - rebuilt[i, many].max())
        q /= q.sum()
        kept = np.argsort(-z)[:2]
        np.testing.assert_allclose(q[kept], p[kept], atol=3e-3)  # float16 storage
        dropped = np.argsort(-z)[2]
        np.testing.assert_allclose(q[dropped], 1 - p[kept].sum(), atol=3e-3)
        # medium (two classes, both kept) and few (one class) are stored whole.
        np.testing.assert_allclose(rebuilt[i, 3:], logits[i, 3:], atol=2e-2)
    # The argmax within each subset (Acc_E) is the one of the full logits.
    for s in subsets:
        cls = list(s.classes)
        np.testing.assert_array_equal(rebuilt[:, cls].argmax(1), logits[:, cls].argmax(1))
    # p_i comes from every logit, not from the rebuilt ones.
    from lfme.teachers import expert_confidence
    np.testing.assert_allclose(rows.confidence, expert_confidence(logits, rows.labels, subsets), rtol=1e-6)


def test_top_k_rest_logit_by_hand():
    from lfme.teachers import top_k_signal

    z = np.array([[4.0, 1.0, 0.0, 2.0]], dtype=np.float32)  # one subset of four classes, k = 1
    t = top_k_signal(z, [Subset("all", (0, 1, 2, 3))], 1)
    assert t.classes.tolist() == [[0]] and float(t.values[0, 0]) == 4.0
    # log of the mean of e^1, e^0, e^2
    assert float(t.rest[0, 0]) == pytest.approx(np.log((np.e + 1 + np.e**2) / 3), abs=2e-3)


def test_top_k_cache_round_trip_through_read_and_map(tmp_path):
    _, _, rows = topk_rows(20)
    manifest = write_cache(tmp_path / "cache", {"train": rows}, fingerprint="fp-k", subsets=SUBSETS, experts=EXPERTS, shard_rows=7)
    assert manifest["top_k"] == 2
    schema = pq.read_schema(tmp_path / "cache" / manifest["data_dir"] / manifest["parts"]["train"]["shards"][0])
    assert schema.names == ["sample_id", "label", "subset", "topk_logits", "topk_classes", "rest_logits", "confidence"]
    want = rows.dense(np.arange(20))
    for got in (read_cache(tmp_path / "cache", "train"), tc.map_cache(tmp_path / "cache", "train", local_dir=str(tmp_path / "local"))):
        assert got.logits is None and got.topk.k == 2
        np.testing.assert_array_equal(got.dense(np.arange(20)), want)
        np.testing.assert_array_equal(got.dense(np.array([5, 0])), want[[5, 0]])
    mapped = tc.map_cache(tmp_path / "cache", "train", local_dir=str(tmp_path / "local"))
    assert isinstance(mapped.topk.values, np.memmap)
    # Per row: 2+2+1 kept logits (float16) and their classes (int32), and one rest logit per expert (float16).
    arrays = (mapped.topk.values, mapped.topk.classes, mapped.topk.rest)
    assert [(a.dtype, a.shape) for a in arrays] == [(np.float16, (20, 5)), (np.int32, (20, 5)), (np.float16, (20, 3))]
    assert tc.signal_bytes_per_row(manifest) == 5 * 2 + 5 * 4 + 3 * 2
    assert tc.signal_bytes_per_row(write(tmp_path / "full")) == C * 2


def test_shards_of_top_k_and_full_caches_do_not_mix(tmp_path):
    _, _, topk = topk_rows(6)
    data_dir = tc.new_data_dir("fp")
    a = tc.write_shard(tmp_path, data_dir, "train", 0, topk.slice(0, 3), fingerprint="fp", subsets=SUBSETS)
    full = make_rows(3, id_offset=1000)
    b = tc.write_shard(tmp_path, data_dir, "train", 1, full, fingerprint="fp", subsets=SUBSETS)
    with pytest.raises(ValueError, match="mix top_k values"):
        tc.commit_cache(tmp_path, data_dir, [a, b], fingerprint="fp", subsets=SUBSETS, experts=EXPERTS)


def views_rows(n, views, seed=0, top_k=None):
    """Rows of `views` views per sample whose view v's logits are the sample's base logits + 10 v (so each view is told apart)."""
    from lfme.teachers import teacher_rows

    rng = np.random.default_rng(seed)
    base = make_rows(n, seed)
    view_logits = base.logits[:, None, :] + 10.0 * np.arange(views)[None, :, None]
    params = rng.integers(0, 9, (n, views, 9)).astype(np.float32)
    subsets = SUBSETS
    return teacher_rows(base.sample_ids, base.labels, base.logits, subsets, top_k, view_logits, params), view_logits, params


@pytest.mark.parametrize("top_k", [None, 1])
def test_a_views_cache_round_trips_through_read_and_map_view_by_view(tmp_path, top_k):
    from lfme.teachers import teacher_rows

    rows, view_logits, params = views_rows(10, 3, top_k=top_k)
    v = make_rows(4, seed=1, id_offset=10**9)
    val = teacher_rows(v.sample_ids, v.labels, v.logits, SUBSETS, top_k)
    manifest = write(tmp_path / "cache", {"train": rows, "val": val})
    assert manifest["parts"]["train"]["views"] == 3 and "views" not in manifest["parts"]["val"]
    # Per row: 3 views x (6 float16 logits, or top-1 of 3 experts: 3 float16 + 3 int32 + 3 rest float16) + 3 x 9 float32.
    assert tc.signal_bytes_per_row(manifest) == 3 * (C * 2 if top_k is None else 3 * 2 + 3 * 4 + 3 * 2) + 3 * 9 * 4
    assert tc.signal_bytes_per_row(manifest, "val") == (C * 2 if top_k is None else 3 * 2 + 3 * 4 + 3 * 2)
    order = np.argsort(rows.sample_ids)
    for got in (read_cache(tmp_path / "cache", "train"), tc.map_cache(tmp_path / "cache", "train", local_dir=str(tmp_path / "local"))):
        assert got.views == 3
        np.testing.assert_array_equal(got.view_params.reshape(10, 3, 9), params[order])
        np.testing.assert_array_equal(got.confidence, rows.confidence[order])
        chosen = np.array([0, 1, 2, 2, 1, 0, 0, 1, 2, 0])
        dense = got.dense(np.arange(10), chosen)
        expected = view_logits[order, chosen]
        if top_k is None:
            np.testing.assert_array_equal(dense, expected.astype(np.float16).astype(np.float32))
        else:  # each expert's largest logit of that view, kept exactly
            for s in SUBSETS:
                np.testing.assert_allclose(dense[:, list(s.classes)].max(1), expected[:, list(s.classes)].max(1), rtol=1e-3)
    val = read_cache(tmp_path / "cache", "val")
    assert val.views == 1 and val.view_params is None


def test_a_damaged_views_shard_is_found_and_shards_of_other_views_do_not_mix(tmp_path):
    rows, _, _ = views_rows(10, 2)
    write(tmp_path / "cache", {"train": rows})
    manifest = read_manifest(tmp_path / "cache")
    shard = tmp_path / "cache" / manifest["data_dir"] / manifest["parts"]["train"]["shards"][0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheDamagedError, match=str(shard.name)):
        read_cache(tmp_path / "cache", "train")
    data_dir = tc.new_data_dir("fp")
    two = tc.write_shard(tmp_path / "mixed", data_dir, "train", 0, rows.slice(0, 5), fingerprint="fp", subsets=SUBSETS)
    one = tc.write_shard(tmp_path / "mixed", data_dir, "train", 1, make_rows(3, id_offset=10**6), fingerprint="fp", subsets=SUBSETS)
    with pytest.raises(ValueError, match="mix views"):
        tc.commit_cache(tmp_path / "mixed", data_dir, [two, one], fingerprint="fp", subsets=SUBSETS, experts=EXPERTS)


def allotted_rows(counts, top_k=None):
    """Rows of allot draws: sample k owns counts[k] rows of one view each, whose logits are its base logits + 10 v
    and whose parameters start (k, v); the samples' rows interleaved (view 0 of each, then view 1, ...), each's in view order."""
    from lfme.teachers import teacher_rows

    base = make_rows(len(counts))
    sample = np.repeat(np.arange(len(counts)), counts)
    view = np.arange(sample.size) - np.repeat(np.cumsum(counts) - counts, counts)
    order = np.lexsort((sample, view))
    sample, view = sample[order], view[order]
    params = np.zeros((sample.size, 1, 9), np.float32)
    params[:, 0, 0], params[:, 0, 1] = sample, view
    logits = (base.logits[sample] + 10.0 * view[:, None])[:, None, :]
    rows = teacher_rows(base.sample_ids[sample], base.labels[sample], None, SUBSETS, top_k, logits, params, base.confidence[sample])
    return rows, base


@pytest.mark.parametrize("top_k", [None, 1])
def test_a_cache_of_allotted_views_round_trips_view_by_view_through_shards_that_split_a_sample(tmp_path, top_k):
    from lfme.data.views import StoredViews

    counts = np.array([1, 2, 7, 1, 4])
    rows, base = allotted_rows(counts, top_k)
    assert rows.allot == "draws" and rows.views == 1 and len(rows) == 15
    manifest = write(tmp_path / "cache", {"train": rows}, shard_rows=3)  # sample 2's seven views span three shards
    entry = manifest["parts"]["train"]
    assert entry["allot"] == "draws" and "views" not in entry and entry["shard_rows"] == [3] * 5
    # Per row: one view's logits (or top-1 of 3 experts: 3 float16 + 3 int32 + 3 rest float16) and its 9 float32.
    assert tc.signal_bytes_per_row(manifest) == (C * 2 if top_k is None else 3 * 2 + 3 * 4 + 3 * 2) + 9 * 4
    k = np.concatenate([np.full(n, s) for s, n in sorted(enumerate(counts), key=lambda sn: base.sample_ids[sn[0]])])
    v = np.concatenate([np.arange(n) for _, n in sorted(enumerate(counts), key=lambda sn: base.sample_ids[sn[0]])])
    local = str(tmp_path / "local")
    for got in (read_cache(tmp_path / "cache", "train"), tc.map_cache(tmp_path / "cache", "train", local_dir=local)):
        assert got.allot == "draws" and got.augmented
        # Sorted by (sample id, view): each sample's rows together, in view order, its p_i and label on each.
        np.testing.assert_array_equal(got.sample_ids, base.sample_ids[k])
        np.testing.assert_array_equal(got.view_params[:, :2], np.stack([k, v], axis=1))
        np.testing.assert_array_equal(got.confidence, base.confidence[k])
        np.testing.assert_array_equal(got.rows_for(base.sample_ids), np.searchsorted(base.sample_ids[k], base.sample_ids))
        # Every view of every sample, looked up from the sample's first row, in a shuffled order.
        shuffle = np.random.default_rng(0).permutation(k.size)
        dense = got.dense(got.rows_for(base.sample_ids[k[shuffle]]), v[shuffle])
        expected = base.logits[k[shuffle]] + 10.0 * v[shuffle, None]
        if top_k is None:
            np.testing.assert_array_equal(dense, expected.astype(np.float16).astype(np.float32))
        else:  # each expert's largest logit of that view, kept exactly
            for s in SUBSETS:
                np.testing.assert_allclose(dense[:, list(s.classes)].max(1), expected[:, list(s.classes)].max(1), rtol=1e-3)
        with pytest.raises(ValueError, match="past the sample's stored views"):
            got.dense(got.rows_for(base.sample_ids[[2, 4]]), [6, 4])  # sample 2 has views 0..6, sample 4 0..3
        with pytest.raises(ValueError, match="name the view"):
            got.dense(np.arange(3))
        stored = StoredViews.of_rows(got, seed=0)
        np.testing.assert_array_equal(stored.counts, counts[np.argsort(base.sample_ids)])
        np.testing.assert_array_equal(stored.of(base.sample_ids[k[shuffle]], v[shuffle])[:, :2], np.stack([k, v], axis=1)[shuffle])


def test_only_a_cache_of_allotted_views_repeats_sample_ids_and_its_shards_do_not_mix_with_others(tmp_path):
    rows, _ = allotted_rows(np.array([2, 3]))
    uniform = TeacherRows(rows.sample_ids, rows.labels, rows.subsets, rows.logits, rows.confidence, views=1)
    with pytest.raises(ValueError, match="duplicate sample_id"):
        write(tmp_path / "dup", {"train": uniform})
    without_params = TeacherRows(rows.sample_ids, rows.labels, rows.subsets, rows.logits, rows.confidence, allot="draws")
    with pytest.raises(ValueError, match="view_params"):
        write(tmp_path / "bare", {"train": without_params})
    data_dir = tc.new_data_dir("fp")
    drawn = tc.write_shard(tmp_path / "mixed", data_dir, "train", 0, rows, fingerprint="fp", subsets=SUBSETS)
    one = tc.write_shard(tmp_path / "mixed", data_dir, "train", 1, make_rows(3, id_offset=10**6), fingerprint="fp", subsets=SUBSETS)
    with pytest.raises(ValueError, match="allot"):
        tc.commit_cache(tmp_path / "mixed", data_dir, [drawn, one], fingerprint="fp", subsets=SUBSETS, experts=EXPERTS)
    # The first sample's views run on into the next shard (both samples have two or more); no shard goes back to an earlier sample.
    data_dir = tc.new_data_dir("fp")
    ordered = rows.take(np.argsort(rows.sample_ids, kind="stable"))
    parts = [tc.write_shard(tmp_path / "split", data_dir, "train", i, ordered.slice(a, b), fingerprint="fp", subsets=SUBSETS) for i, (a, b) in enumerate([(0, 1), (1, 5)])]
    tc.commit_cache(tmp_path / "split", data_dir, parts, fingerprint="fp", subsets=SUBSETS, experts=EXPERTS)
    np.testing.assert_array_equal(read_cache(tmp_path / "split", "train").view_params, ordered.view_params)
    back = tc.write_shard(tmp_path / "split", data_dir, "train", 1, ordered.slice(0, 1), fingerprint="fp", subsets=SUBSETS)
    with pytest.raises(ValueError, match="not after"):
        tc.commit_cache(tmp_path / "split", data_dir, [parts[1] | {"index": 0}, back | {"index": 1}], fingerprint="fp", subsets=SUBSETS, experts=EXPERTS)
