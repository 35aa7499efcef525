"""Experts share GPUs: with fewer GPUs than experts, a fractional share each, all running at once.

This machine has no GPU, so the test's Ray head declares one logical GPU
(`ray start --num-gpus=1`, three CPUs), which both cases join. Ray schedules
by that count; the code must not take a GPU resource to mean CUDA is usable
(each expert then trains on the CPU and says so in its result).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import joining
from tests.pipeline_helpers import FAST, REPO, copy_run, run_lfme
from tests.ray_cluster import head

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_gpu_head():
    """A head with one logical GPU and three CPUs, shared by the cases (one Ray start, not one per case)."""
    with head(num_cpus=3, cwd=REPO, num_gpus=1) as cluster:
        with joining(cluster.gcs):
            yield cluster.gcs


def expert_results(run_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "experts").glob("*/result.json"))]


@pytest.mark.parametrize("share, together", [(0.33, True), (0.5, False)])
def test_three_experts_on_one_gpu(one_gpu_head, finished_run, tmp_path, share, together):
    run_dir = copy_run(finished_run, tmp_path / "run")
    sets = FAST + [
        "experts.epochs=6",  # new expert settings: all three train again, long enough to overlap
        f"experts.resources.gpus_per_worker={share}",
        "experts.resources.cpus_per_worker=1",
    ]
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--stage", "experts", sets=sets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = expert_results(run_dir)
    assert len(results) == 3
    assert all(r["gpu_ids"] == ["0"] and r["device"] == "cpu" for r in results)  # a share of GPU 0, no CUDA here
    latest_start = max(r["started_at"] for r in results)
    earliest_end = min(r["finished_at"] for r in results)
    # A third each: one GPU holds all three at once. A half each: only two fit, the third waits for one to end.
    assert (latest_start < earliest_end) is together, results
