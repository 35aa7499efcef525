"""A run that cannot go on says so in one line and exits non-zero: it never hangs and never serves garbage.

Each case goes through the CLI as a user runs it, from a copy of the
session's finished default run where it can (a stage marked failed there
reruns alone, so only the stage under test runs):
- a training loss that diverges (experts or student) stops the stage at that
  epoch, keeps the last good state, and is not retried into the same divergence;
- a stage asking for more CPUs than a local Ray has fails at once, naming the
  stage, the request and the node (Ray itself would wait forever);
- a cluster address where nothing listens fails within the configured time.
The cluster cases (a Ray Job, waiting for a node) are in test_job_submission.py.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tests.pipeline_helpers import FAST, copy_run, manifest, run_lfme

pytestmark = pytest.mark.integration


def rerun_alone(run_dir, stage: str) -> None:
    """Mark `stage` failed in the manifest: the next `lfme run` reruns it (and what follows), the rest is skipped."""
    data = manifest(run_dir)
    data["stages"][stage]["status"] = "failed"
    (run_dir / "manifest.json").write_text(json.dumps(data))


def only_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.usefixtures("on_shared_ray")
def test_a_diverged_student_stops_at_that_epoch_and_keeps_the_last_good_student(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    student = (run_dir / "distill" / "student.pt").read_bytes()
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST + ["distill.lr=100000"], timeout=400)
    assert result.returncode == 1, result.stdout[-3000:]
    line = only_line(result)
    assert re.match(
        r"lfme: error: NonFiniteLossError: distill: epoch 1: the training loss is (nan|inf|-inf); stopped before saving it", line
    ), line
    assert "try a lower distill.lr" in line
    assert "[student] epoch 1/3" not in result.stdout  # the diverged epoch is neither shown nor checkpointed
    assert (run_dir / "distill" / "student.pt").read_bytes() == student  # the last good student stays
    record = manifest(run_dir)["stages"]["distill"]
    assert record["status"] == "failed" and record["error"].startswith("NonFiniteLossError: distill: epoch 1")
    assert manifest(run_dir)["stages"]["evaluate"]["status"] == "done"  # the last good report stays too


@pytest.mark.usefixtures("on_shared_ray")
def test_a_diverged_expert_stops_its_stage_with_one_line(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST + ["experts.lr=100000"], timeout=400)
    assert result.returncode == 1, result.stdout[-3000:]
    line = only_line(result)
    match = re.match(r"lfme: error: NonFiniteLossError: experts: (\w+): epoch (\d+): the training loss is (nan|inf|-inf); ", line)
    assert match, line
    name, epoch = match.group(1), int(match.group(2))
    assert f"experts: {name} failed: NonFiniteLossError" in result.stdout
    assert manifest(run_dir)["stages"]["experts"]["status"] == "failed"
    checkpoint = run_dir / "experts" / name / "checkpoint.pt"
    if epoch == 1:  # the diverged epoch was not saved: no checkpoint of this run
        assert not checkpoint.exists()


def test_a_stage_asking_more_than_the_local_ray_has_fails_at_once(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    rerun_alone(run_dir, "experts")
    started = time.monotonic()
    result = run_lfme(
        "run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST + ["ray.num_cpus=2", "experts.resources.cpus_per_worker=4"],
        timeout=300,
    )
    assert result.returncode == 1
    assert only_line(result).startswith(
        "lfme: error: InsufficientResourcesError: experts: each task asks for {CPU: 4}, but no node has that "
        "(the nodes have {CPU: 2}), and no node can join this local Ray; lower experts.resources "
    )
    assert "[expert" not in result.stdout
    assert time.monotonic() - started < 120
    assert manifest(run_dir)["stages"]["experts"]["status"] == "failed"


def test_an_address_where_nothing_listens_fails_within_the_connect_timeout(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    started = time.monotonic()
    result = run_lfme(
        "run", "ray_config.yaml", "--run-dir", str(tmp_path / "run"), sets=[f"ray.address=127.0.0.1:{port}", "ray.connect_timeout_s=3"],
        timeout=120,
    )
    took = time.monotonic() - started
    assert result.returncode == 1
    assert only_line(result).startswith(
        f"lfme: error: RayUnreachableError: ray.address: nothing answers at 127.0.0.1:{port} (Connection refused) after 3 s"
    )
    assert "== split" not in result.stdout  # checked before the first stage
    assert took < 30, f"took {took:.0f} s"
