"""Plain PyTorch and Ray Train runs of the distill loop do the same work (`python -m benchmarks.speed`, part (c)).

A copy of the session's finished digits run (split, experts and cache by the
pipeline, `finished_run`), then the distill stage's worker loop, `stages.distill.distill_loop`, through
`stages.workers.fit` twice: in Ray Train's local mode (`num_workers=0`, the
loop in this process, no actors) and on one Ray Train worker. With the same
seed and thread count both must produce the same history and weights, bit for
bit; otherwise the benchmark's per-epoch comparison would not be like for
like. No timing is checked, only that every epoch has its seconds.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.pipeline_helpers import FAST, copy_run

pytestmark = pytest.mark.integration

RESULTS = ("epoch", "loss", "ce", "kd", "train_acc", "val_acc", "lr", "student_subset_acc", "weights_used", "weights_next", "mean_instance_weight")


@pytest.fixture(scope="module")
def digits_run(finished_run, tmp_path_factory):
    """A digits run directory with split, experts and cache done, and Ray started for the module."""
    import ray

    from rundir.config import load_config, with_absolute_paths
    from pipeline.manifest import Manifest
    from pipeline.graph import fingerprints
    from pipeline.ray_session import init_ray

    run_dir = copy_run(finished_run, tmp_path_factory.mktemp("speed") / "run")
    config = with_absolute_paths(load_config("ray_config.yaml", FAST + ["distill.epochs=2", f"run_dir={run_dir}"]))
    fps, done = fingerprints(config), Manifest.load(str(run_dir))
    assert all(done.is_done(stage, fps[stage]) for stage in ("split", "experts", "cache"))
    init_ray(config.ray)
    try:
        yield config
    finally:
        ray.shutdown()


def test_local_mode_and_one_ray_worker_train_the_same_student(digits_run):
    from pipeline.graph import fingerprints
    from rundir.layout import load_split, verified_cache
    from stages import workers as ray_workers
    from stages.distill import distill_loop

    config = digits_run
    expected = verified_cache(config.run_dir, fingerprints(config)["cache"], load_split(config.run_dir, config.data).subsets)
    loop_config = {"config": config, "run_dir": config.run_dir, "expected": expected}
    threads = torch.get_num_threads()
    states = {}
    for workers in (0, 1):
        resources = dataclasses.replace(config.distill.resources, num_workers=workers)
        states[workers] = ray_workers.fit(
            distill_loop, loop_config, resources, name=f"same-{workers}", storage_path=f"{config.run_dir}/ray", max_failures=0
        )
        if workers == 0:
            # local mode ran the loop here: the threads are ours again
            assert torch.get_num_threads() == threads

    plain, on_ray = states[0], states[1]
    assert plain["epoch"] == on_ray["epoch"] == 2
    for a, b in zip(plain["history"], on_ray["history"], strict=True):
        assert {k: a[k] for k in RESULTS} == {k: b[k] for k in RESULTS}
        assert a["seconds"] > 0 and b["seconds"] > 0
    assert plain["model"].keys() == on_ray["model"].keys()
    assert all(torch.equal(plain["model"][k], on_ray["model"][k]) for k in plain["model"])
    assert plain["carry"] == on_ray["carry"]
