"""Sending the pipeline to a Ray cluster as a Ray Job, the way cluster/README.md says.

A real two-node cluster on this host (`ray start --head` plus a second
`ray start --address=...`, each its own raylet), the default pipeline submitted
through the Jobs API with the repository as working_dir and no `ray.address`
(inside a job the driver joins the job's cluster), as on a launched cluster.
On the same cluster, a driver whose stage no node can hold waits for the
cluster to grow, then stops with one line. (That the cluster files in
`cluster/` parse and pass valid config keys is tests/cluster/test_cluster_files.py.)

The daemons start and stop as `tests.ray_cluster` says (free ports, stopped
by session id, never `ray stop`).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time

import pytest

from tests.pipeline_helpers import FAST, REPO, copy_run, manifest, run_lfme
from tests.ray_cluster import free_port, head, kill_sessions, ray_start, temp_dir

STAGES = ["split", "experts", "cache", "distill", "evaluate"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head (2 CPUs) and a second node (1 CPU) on loopback, shared by this module's tests; yields (dashboard URL, GCS address)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        yield from _two_node_cluster()


def _two_node_cluster():
    with head(num_cpus=2) as cluster:
        # A temp dir of its own, as each node of a real cluster has its own disk: two raylets on one host would
        # otherwise unpack a job's working_dir package into one session folder, the second node while the first
        # node's driver imports from it (seen on a fresh cluster's first job: an ImportError of a name the
        # package has, lfme.sampling.DistributedClassBalancedSampler, as the experts stage started).
        node_temp = temp_dir()
        node = ray_start(
            f"--address={cluster.gcs}", "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=1", f"--temp-dir={node_temp}",
        )
        cluster.sessions.append(node)
        try:
            yield cluster.dashboard, cluster.gcs
        finally:
            kill_sessions([node])
            shutil.rmtree(node_temp, ignore_errors=True)


def test_default_pipeline_as_a_ray_job_on_two_nodes(two_node_cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_nodes

    address, _ = two_node_cluster
    nodes = list_nodes(address=address)
    assert sorted((n.state, n.resources_total.get("CPU")) for n in nodes) == [("ALIVE", 1.0), ("ALIVE", 2.0)]

    run_dir = tmp_path / "run"
    # No ray.address: inside a Ray Job the driver joins the job's cluster (RAY_ADDRESS), whose
    # workers hold the job's working_dir package; a Ray of its own would not have it.
    entrypoint = shlex.join([
        sys.executable, "-m", "pipeline.cli", "run", "ray_config.yaml", "--run-dir", str(run_dir),
        "--set", "experts.epochs=2", "--set", "distill.epochs=2",
    ])
    client = JobSubmissionClient(address)
    job = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={"working_dir": str(REPO), "excludes": [".venv", "runs", ".git"]},
    )
    deadline = time.monotonic() + 600
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job still running after 600 s:\n" + client.get_job_logs(job)[-5000:]
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-5000:]

    data = manifest(run_dir)
    assert [s for s in STAGES if data["stages"][s]["status"] == "done"] == STAGES, logs[-3000:]
    assert (run_dir / "evaluate" / "report.json").stat().st_size > 0
    assert "[student] epoch 2/2" in logs
    assert "ray: joining the cluster at " in logs and "(RAY_ADDRESS is set, as inside a Ray Job)" in logs
    assert "\x1b[" not in logs  # the job's output is a file, not a terminal: no colour codes
    # Both nodes served the whole run: neither died or was replaced.
    after = list_nodes(address=address)
    assert sorted(n.node_id for n in after) == sorted(n.node_id for n in nodes)
    assert all(n.state == "ALIVE" for n in after)


def test_a_stage_no_node_can_hold_waits_for_the_cluster_to_grow_then_stops(two_node_cluster, finished_run, tmp_path):
    _, gcs = two_node_cluster
    run_dir = copy_run(finished_run, tmp_path / "run")
    data = manifest(run_dir)
    data["stages"]["experts"]["status"] = "failed"  # the experts stage runs again, on the cluster
    (run_dir / "manifest.json").write_text(json.dumps(data))
    started = time.monotonic()
    result = run_lfme(
        "run", "ray_config.yaml", "--run-dir", str(run_dir),
        sets=FAST + [f"ray.address={gcs}", "experts.resources.cpus_per_worker=4", "ray.resource_wait_s=6"], timeout=300,
    )
    took = time.monotonic() - started
    assert result.returncode == 1
    assert (
        "== experts: each task asks for {CPU: 4}, but no node has that (the nodes have {CPU: 1}, {CPU: 2}): "
        "waiting up to 6 s for the cluster to grow (ray.resource_wait_s)"
    ) in result.stdout.replace("{CPU: 2}, {CPU: 1}", "{CPU: 1}, {CPU: 2}")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "lfme: error: InsufficientResourcesError: experts: each task asks for {CPU: 4}, but after 6 s of waiting no node has that"
    ), result.stderr[-3000:]
    assert took < 120
