"""The cache stage's cut of a part into shards, one task each (stages/cache.py); the stage itself runs in the e2e tests."""

from stages.cache import MIN_SHARD_ROWS, SHARD_BYTES, shard_ranges


def test_default_shard_is_128_mb_of_float16_logits_whatever_the_label_space():
    # iNaturalist 2018: 8,142 classes -> 8,242 rows of 16,284 bytes = 134,212,728 bytes <= 128 MiB.
    ranges = shard_ranges(437_513, 8_142, None, slots=2)
    assert ranges[0] == (0, 8_242) and 8_242 * 8_142 * 2 <= SHARD_BYTES < 8_243 * 8_142 * 2
    assert len(ranges) == 54 and ranges[-1] == (53 * 8_242, 437_513)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_at_least_as_many_shards_as_tasks_run_at_once():
    assert shard_ranges(12_406, 10, None, slots=2) == [(0, 6_203), (6_203, 12_406)]
    assert shard_ranges(12_406, 10, 5_000, slots=1) == [(0, 5_000), (5_000, 10_000), (10_000, 12_406)]
    assert shard_ranges(3, 10, 1, slots=8) == [(0, 1), (1, 2), (2, 3)]


def test_by_default_no_shard_is_smaller_than_a_task_is_worth():
    assert MIN_SHARD_ROWS == 1024
    assert shard_ranges(3, 10, None, slots=8) == [(0, 3)]
    assert shard_ranges(564, 10, None, slots=4) == [(0, 564)]  # the default run's training part
    assert shard_ranges(2_000, 10, None, slots=4) == [(0, 1_024), (1_024, 2_000)]
    # An explicit shard_rows is what the user asked for.
    assert shard_ranges(2_000, 10, 300, slots=4) == [(0, 300), (300, 600), (600, 900), (900, 1_200), (1_200, 1_500), (1_500, 1_800), (1_800, 2_000)]


def test_an_empty_part_gets_one_empty_shard():
    assert shard_ranges(0, 10, None, slots=4) == [(0, 0)]


def test_scale_benchmark_pss_counts_a_mapped_file_once_across_two_processes(tmp_path):
    """benchmarks.scale's measurement: the PSS of a file's mapping, read from /proc, halves when two processes map it."""
    import mmap
    import multiprocessing as mp
    import os

    from benchmarks.scale import pss_bytes

    path = tmp_path / "cache-copy.bin"
    size = 8 << 20
    path.write_bytes(os.urandom(size))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        sum(m[i] for i in range(0, size, 4096))  # fault in every page
        alone = pss_bytes(os.getpid(), "cache-copy.bin")
        assert size * 0.99 <= alone <= size
        ready, done = mp.get_context("fork").Event(), mp.get_context("fork").Event()

        def other():
            with open(path, "rb") as g, mmap.mmap(g.fileno(), 0, access=mmap.ACCESS_READ) as n:
                sum(n[i] for i in range(0, size, 4096))
                ready.set()
                done.wait(30)

        child = mp.get_context("fork").Process(target=other)
        child.start()
        try:
            assert ready.wait(30)
            mine, theirs = pss_bytes(os.getpid(), "cache-copy.bin"), pss_bytes(child.pid, "cache-copy.bin")
            assert abs(mine - size / 2) < size * 0.02 and abs(theirs - size / 2) < size * 0.02
            assert pss_bytes(os.getpid(), "no-such-mapping") == 0
        finally:
            done.set()
            child.join(30)


def test_top_k_enters_the_cache_fingerprint_only_when_set():
    from pipeline.graph import fingerprints
    from rundir.config import Config, load_config

    base = fingerprints(Config())
    k = fingerprints(load_config(None, ["cache.top_k=5"]))
    assert (k["split"], k["experts"]) == (base["split"], base["experts"])
    assert k["cache"] != base["cache"] and k["distill"] != base["distill"]
    assert fingerprints(load_config(None, ["cache.shard_rows=10", "cache.local_dir=/elsewhere"])) == base


def test_views_enter_the_cache_fingerprint_only_when_more_than_one_with_the_seed_that_draws_them():
    import pytest

    from pipeline.graph import fingerprints, stage_settings
    from rundir.config import Config, load_config
    from rundir.fields import ConfigError

    base = fingerprints(Config())
    assert fingerprints(load_config(None, ["cache.views=1"])) == base
    four, eight = (load_config(None, [f"cache.views={k}"]) for k in (4, 8))
    assert fingerprints(four)["experts"] == base["experts"]
    assert len({base["cache"], fingerprints(four)["cache"], fingerprints(eight)["cache"]}) == 3
    assert stage_settings(four, "cache")["views"] == 4 and stage_settings(four, "cache")["seed"] == 0
    assert "views" not in stage_settings(Config(), "cache")
    with pytest.raises(ConfigError, match="cache.views: must be a positive integer, got 0"):
        load_config(None, ["cache.views=0"])


def test_the_views_cache_cuts_shards_by_the_bytes_of_all_its_views():
    # 1,000 classes x 4 views x 2 bytes = 8,000 bytes a row -> 16,777 rows in 128 MiB.
    assert shard_ranges(100_000, 1_000, None, slots=1, views=4)[0] == (0, SHARD_BYTES // 8_000)


def test_the_runner_records_digests_a_stage_hashed_as_it_wrote_without_reading_those_files_again(tmp_path, monkeypatch):
    import hashlib

    from lfme import storage
    from pipeline import runner

    folder = tmp_path / "cache" / "data-x"
    folder.mkdir(parents=True)
    (folder / "train-00000.parquet").write_bytes(b"shard bytes")
    (tmp_path / "cache" / "manifest.json").write_bytes(b"{}")
    read = []
    real = storage.file_sha256
    monkeypatch.setattr(storage, "file_sha256", lambda path: read.append(path) or real(path))

    shard_digest = hashlib.sha256(b"shard bytes").hexdigest()
    outputs = runner.record_outputs(str(tmp_path), "cache", {"data-x/train-00000.parquet": shard_digest})
    assert outputs == {
        "data-x/train-00000.parquet": {"bytes": 11, "sha256": shard_digest},
        "manifest.json": {"bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
    }
    assert [p.rsplit("/", 1)[-1] for p in map(str, read)] == ["manifest.json"]


def test_joint_experts_enter_the_experts_fingerprint_only_when_asked_for():
    from pipeline.graph import fingerprints
    from rundir.config import Config, load_config

    base = fingerprints(Config())
    assert fingerprints(load_config(None, ["experts.init=scratch"])) == base
    joint = fingerprints(load_config(None, ["experts.init=joint"]))
    assert joint["split"] == base["split"] and all(joint[s] != base[s] for s in ("experts", "cache", "distill", "evaluate"))


def test_the_scale_plan_counts_the_signal_bytes_by_hand():
    from benchmarks.scale import planned_bytes

    n = 115_846
    assert planned_bytes(n, 1_000, 1, None) == n * 1_000 * 2  # C float16 logits
    assert planned_bytes(n, 1_000, 4, None) == n * (4 * 1_000 * 2 + 4 * 9 * 4)  # 4 views and their 9 float32
    # top-10 of 3 experts: 30 kept float16 logits, their 30 int32 classes, 3 float16 rest logits
    assert planned_bytes(n, 1_000, 1, 10) == n * (30 * 2 + 30 * 4 + 3 * 2)
    assert planned_bytes(n, 1_000, 4, 10) == n * (4 * (30 * 2 + 30 * 4 + 3 * 2) + 4 * 9 * 4)
