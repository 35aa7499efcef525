"""benchmarks/scale.py's measurement, plan and table: the PSS of a mapped file, the signal bytes of a cache, a row (no timings)."""


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


def test_the_scale_plan_counts_the_signal_bytes_by_hand():
    from benchmarks.scale import planned_bytes

    n = 115_846
    assert planned_bytes(n, 1_000, 1, None) == n * 1_000 * 2  # C float16 logits
    assert planned_bytes(n, 1_000, 4, None) == n * (4 * 1_000 * 2 + 4 * 9 * 4)  # 4 views and their 9 float32
    # top-10 of 3 experts: 30 kept float16 logits, their 30 int32 classes, 3 float16 rest logits
    assert planned_bytes(n, 1_000, 1, 10) == n * (30 * 2 + 30 * 4 + 3 * 2)
    assert planned_bytes(n, 1_000, 4, 10) == n * (4 * (30 * 2 + 30 * 4 + 3 * 2) + 4 * 9 * 4)


def test_the_scale_table_gives_the_students_mean_epoch_and_n_a_for_a_result_without_epochs():
    """A committed result (written before epochs were recorded) renders as it did, with n/a for the epoch."""
    import json
    from pathlib import Path

    from benchmarks.scale import render

    committed = json.loads((Path(__file__).parents[2] / "docs/results/scale-inat2018-views4-top10.json").read_text())
    old_row = render([committed]).splitlines()[-1]
    assert old_row.startswith("| inat2018 | 437,513 x 8,142 | 4 | 10 | 0.38 | 0.76 | 1.98 | 1.20 | 2.38 | 0.38 | 0.40 | 0.39 |")
    assert old_row.endswith("| 1401 | 205 | n/a |")
    assert render([{**committed, "epoch_seconds": [140.0, 144.0]}]).splitlines()[-1].endswith("| 1401 | 205 | 142 |")
