"""Faults inside a running stage: training workers killed, a node removed.

The stage must absorb them without a new `lfme run`: Ray Train restarts the
student's worker group (`distill.max_failures`), Ray reruns an expert's task
whose worker died (`experts.max_failures`), and the loop resumes from the last
checkpoint, so the run loses at most the epochs after its last committed
checkpoint. Each test
checks that every epoch is in the history exactly once and that the resume
point is no earlier than the checkpoint Ray Train had committed when the
fault hit. Committed means in the controller's `checkpoint_manager_snapshot.json`:
a worker's report reaches the controller only when it polls, so on a loaded
machine a worker may log epoch n+1 (even write its checkpoint) before epoch n
is committed, and a kill then loses both; the log is not the reference.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from lfme.storage import read_json
from tests.pipeline_helpers import FAST, REPO, copy_run, kill_group, manifest, start_lfme, wait_for
from tests.ray_cluster import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def base_run(finished_run) -> Path:
    """The session's finished default run: the faults below rerun only what they change, on a copy."""
    return finished_run


def train_workers(session: int, title: bytes = b"RayTrainWorker") -> list[int]:
    """Pids of one driver's (session's) Ray workers whose process title holds `title`.

    Ray titles a Ray Train worker actor `ray::RayTrainWorker` and a worker
    running a task `ray::<function name>` while it runs it.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session and title in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    return pids


def committed_epoch(train_run: Path) -> int:
    """The epoch of the newest checkpoint Ray Train has committed for a run (0: none yet)."""
    try:
        snapshot = json.loads((train_run / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being replaced
        return 0
    latest = snapshot.get("latest_checkpoint_result")
    return latest["metrics"]["epoch"] if latest else 0


def new_train_runs(run_dir: Path, prefix: str, before: set[str]) -> list[Path]:
    """Ray Train runs of a stage started after `before` was listed (new settings: new run names)."""
    root = run_dir / "ray"
    return [p for p in root.glob(f"{prefix}-*") if p.name not in before] if root.exists() else []


def finish(driver, timeout: float) -> int:
    try:
        return driver.wait(timeout=timeout)
    finally:
        kill_group(driver)  # the driver's own Ray, whatever the outcome


def kill_workers_and_finish(driver, committed, expected_workers=None, title: bytes = b"RayTrainWorker"):
    """SIGKILL the driver's training workers; (committed checkpoints at the kill, the driver's exit code)."""
    victims = train_workers(driver.pid, title)
    at_kill = committed()
    if expected_workers is None:
        assert victims
    else:
        assert len(victims) == expected_workers, victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return at_kill, finish(driver, timeout=400)


def test_distill_workers_killed_mid_stage_resume_from_the_last_checkpoint(base_run, tmp_path):
    run_dir = copy_run(base_run, tmp_path / "run")
    before = {p.name for p in (run_dir / "ray").iterdir()}
    log = tmp_path / "run.log"
    driver = start_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir),
                        sets=FAST + ["distill.epochs=6", "distill.lr=0.03"], log=log)

    def committed() -> int:
        runs = new_train_runs(run_dir, "distill", before)
        return committed_epoch(runs[0]) if runs else 0

    try:
        wait_for(lambda: committed() >= 2, timeout=400, what="the student's second committed checkpoint")
        at_kill, code = kill_workers_and_finish(driver, committed, expected_workers=2)  # distill.resources.num_workers
    except BaseException:
        kill_group(driver)
        raise
    text = log.read_text()
    assert code == 0, text[-4000:]
    resumed = [int(k) for k in re.findall(r"\[student\] resuming after epoch (\d+)", text)]
    assert len(resumed) == 1 and resumed[0] >= at_kill >= 2, (resumed, at_kill, text[-4000:])
    history = read_json(run_dir / "distill" / "history.json")
    assert [h["epoch"] for h in history] == list(range(1, 7))
    record = manifest(run_dir)["stages"]["distill"]
    assert record["status"] == "done" and record["attempts"] == 1 and not record["resumes"]
    assert manifest(run_dir)["stages"]["evaluate"]["status"] == "done"


def expert_checkpoint_epoch(path: Path) -> int:
    """The epoch of an expert's last checkpoint (0: none yet, or being replaced)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def test_expert_workers_killed_mid_stage_resume_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "run.log"
    epochs = 40  # digits experts take 0.05-0.3 s an epoch: enough epochs to be killed in the middle
    # Through the experts only: what the test asserts ends there.
    driver = start_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--through", "experts",
                        sets=[f"experts.epochs={epochs}", "data.decode_once=true"], log=log)

    def committed() -> dict[str, int]:
        return {p.parent.name: expert_checkpoint_epoch(p) for p in (run_dir / "experts").glob("*/checkpoint.pt")}

    try:
        # An expert past its first epoch and still training (its checkpoint goes when it is done).
        wait_for(lambda: any(e >= 1 for e in committed().values()), timeout=400, what="an expert's first checkpoint")
        at_kill, code = kill_workers_and_finish(driver, committed, title=b"ray::train_expert")
    except BaseException:
        kill_group(driver)
        raise
    text = log.read_text()
    assert code == 0, text[-4000:]
    resumed = {name: int(k) for name, k in re.findall(r"\[expert (\S+)\] resuming after epoch (\d+)", text)}
    # Every expert that had a checkpoint and was still training resumed from it, or later.
    started = {name for name, epoch in at_kill.items() if 1 <= epoch < epochs}
    assert started and started <= set(resumed), (at_kill, resumed, text[-4000:])
    for name, after in resumed.items():
        assert after >= at_kill.get(name, 0), (name, after, at_kill)
    for subset in read_json(run_dir / "split" / "split.json")["subsets"]:
        history = read_json(run_dir / "experts" / subset["name"] / "result.json")["history"]
        assert [h["epoch"] for h in history] == list(range(1, epochs + 1)), subset["name"]
        assert not (run_dir / "experts" / subset["name"] / "checkpoint.pt").exists()
    # Ray reran the tasks inside the stage: no second attempt of the stage, no resume recorded by the runner.
    record = manifest(run_dir)["stages"]["experts"]
    assert record["status"] == "done" and record["attempts"] == 1 and not record["resumes"]


def alive_train_workers(list_actors) -> list:
    """The alive Ray Train workers, from the state API once the head's dashboard serves it.

    On a loaded machine the dashboard can come up after the student's first
    checkpoints; the state API then fails to connect instead of waiting.
    """
    deadline = time.monotonic() + 180
    while True:
        try:
            return list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_node_hosting_distill_workers_removed_mid_stage(base_run, tmp_path, monkeypatch, capfd):
    """Ray's multi-node test cluster in this process: the node of the student's workers is removed.

    The worker group needs 2 CPUs at once (2 workers x 1 CPU) and the head has
    1: the group can only run on a worker node, and after the removal only on
    the node added in its place.
    """
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from rundir.config import load_config
    from pipeline.runner import run_pipeline

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
    run_dir = copy_run(base_run, tmp_path / "run")
    before = {p.name for p in (run_dir / "ray").iterdir()}
    # A dashboard port of its own: the default (8265) may be held by another Ray on this machine, and the
    # state API below needs this cluster's dashboard.
    dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, **dashboard})
    try:
        first = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        config = load_config(REPO / "ray_config.yaml", FAST + [
            f"ray.address={cluster.address}", "distill.epochs=5", "distill.lr=0.03",
            "distill.resources.cpus_per_worker=1",
        ])
        outcome: dict = {}

        def drive():
            try:
                outcome["manifest"] = run_pipeline(config, run_dir=run_dir, log=lambda line: None)
            except BaseException as err:
                outcome["error"] = err

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()

        def committed() -> int:
            runs = new_train_runs(run_dir, "distill", before)
            return committed_epoch(runs[0]) if runs else 0

        wait_for(lambda: committed() >= 2, timeout=400, what="the student's second committed checkpoint")
        workers = alive_train_workers(list_actors)
        assert {w.node_id for w in workers} == {first.node_id}, workers
        checkpointed = committed()
        cluster.remove_node(first)
        cluster.add_node(num_cpus=2)
        thread.join(timeout=400)
        assert not thread.is_alive(), "the pipeline did not finish within 400 s of the node's removal"
        assert "error" not in outcome, repr(outcome.get("error"))
    finally:
        ray.shutdown()
        cluster.shutdown()
    out = capfd.readouterr().out
    resumed = [int(k) for k in re.findall(r"\[student\] resuming after epoch (\d+)", out)]
    assert len(resumed) == 1 and resumed[0] >= checkpointed, (resumed, checkpointed, out[-3000:])
    history = read_json(run_dir / "distill" / "history.json")
    assert [h["epoch"] for h in history] == list(range(1, 6))
    record = outcome["manifest"].data["stages"]["distill"]
    assert record["status"] == "done" and record["attempts"] == 1
