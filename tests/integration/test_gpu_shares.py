"""Experts share GPUs: with fewer GPUs than experts, a fractional share each, all running at once.

This machine has no GPU, so the local Ray declares one logical GPU
(`ray.num_gpus=1`). Ray schedules by that count; the code must not take a GPU
resource to mean CUDA is usable (each expert then trains on the CPU and says
so in its result).
"""

from __future__ import annotations

import json

import pytest

from tests.pipeline_helpers import FAST, copy_run, run_lfme

pytestmark = pytest.mark.integration


def expert_results(run_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "experts").glob("*/result.json"))]


@pytest.mark.parametrize("share, together", [(0.33, True), (0.5, False)])
def test_three_experts_on_one_gpu(finished_run, tmp_path, share, together):
    run_dir = copy_run(finished_run, tmp_path / "run")
    sets = FAST + [
        "experts.epochs=6",  # new expert settings: all three train again, long enough to overlap
        "ray.num_cpus=3",
        "ray.num_gpus=1",
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
