"""`lfme tune`: a sweep of the distill stage over one run's teacher cache.

One module-scoped copy of the session's finished run (`finished_run`: split,
experts and cache with the short schedule) is swept; the sweep runs the CLI in its own process group, with two
trials side by side (one 0.5-CPU worker each, trained in the trial's process) so a trial never waits on
another's CPUs. The checks: a killed sweep resumes, the tables and best config
are written and loadable, no expert or cache file changes, TensorBoard logs exist; a sweep of two-worker
students trains each trial as a Ray Train run, which a killed sweep's resume continues from its checkpoint.
The search space's checks need no Ray: tests/rundir/test_sections.py, tests/pipeline/test_tune.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from rundir.config import load_config
from tests.pipeline_helpers import copy_run, kill_group, manifest, run_lfme, start_lfme, wait_for

SPACE = "tune.search_space={distill.temperature: {choice: [2, 4]}, distill.alpha: {uniform: [0.4, 0.8]}}"
SWEEP = [
    SPACE,
    "experts.epochs=2",  # the inputs' settings: a different expert setting would (rightly) retrain the experts
    "data.decode_once=true",  # as FAST (tests.pipeline_helpers): no torchvision in the trials' workers
    "tune.grace_period=1",
    "tune.max_concurrent_trials=2",
    "distill.resources={num_workers: 1, cpus_per_worker: 0.5}",
]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inputs_run(finished_run, tmp_path_factory) -> Path:
    return copy_run(finished_run, tmp_path_factory.mktemp("tune") / "run")


def fingerprint_files(run_dir: Path) -> dict[str, str]:
    """The inputs a sweep must not change, and the distill stage's own scalars (a trial logs under its own name)."""
    files = sorted(run_dir.glob("experts/*/model.pt")) + [run_dir / "cache" / "manifest.json"]
    files += sorted((run_dir / "tensorboard" / "distill").rglob("events*"))
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def input_records(run_dir: Path) -> dict:
    return {stage: manifest(run_dir)["stages"][stage] for stage in ("split", "experts", "cache")}


def read_trials(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def saved_results(sweep: Path) -> list[dict]:
    """Each trial's last result in the newest sweep state Tune has saved (none before the first save)."""
    states = sorted(sweep.glob("trials/experiment_state*.json"))
    try:
        trials = json.loads(states[-1].read_text())["trial_data"] if states else []
    except json.JSONDecodeError:  # Tune writes each file whole (stages.ray_compat.atomic_tune_uploads); a partial one is a bug
        raise AssertionError(f"{states[-1]} is not whole") from None
    return [json.loads(metadata).get("last_result") or {} for _, metadata in trials]


def kill_sweep_when(ready, what: str, args: tuple[str, ...], sets: list[str], sweep: Path, tmp_path: Path) -> None:
    """Start the sweep and kill its process group once `ready()` holds, before it has written its outcome."""
    process = start_lfme(*args, sets=sets, log=tmp_path / "first.log")
    try:
        wait_for(ready, timeout=300, what=what)
    finally:
        kill_group(process)
    assert not (sweep / "trials.csv").exists()


@pytest.mark.usefixtures("on_shared_ray")
def test_a_killed_sweep_resumes_and_writes_tables_and_best_config_touching_no_expert(inputs_run, tmp_path, monkeypatch):
    """One sweep, killed after its trials' first epochs and resumed with --resume (one sweep checks both the
    resume and what a finished sweep writes)."""
    files, records = fingerprint_files(inputs_run), input_records(inputs_run)
    distill_record, student = manifest(inputs_run)["stages"]["distill"], (inputs_run / "distill" / "student.pt").read_bytes()
    out = inputs_run / "tune" / "resumable"
    args = ("tune", "ray_config.yaml", "--run-dir", str(inputs_run), "--num-samples", "2")
    # Tune saves its experiment state every TUNE_GLOBAL_CHECKPOINT_S seconds (10 s by default): 1 s lets the
    # kill land a few epochs (0.2-0.5 s each) into the trials, well before their 20th, and often inside a save.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")
    sets = [*SWEEP, "distill.epochs=20", "tune.name=resumable"]

    def state_saved_after_an_epoch() -> bool:
        """Tune's saved state of the sweep records a trial that is past an epoch, checkpointed and not done."""
        return any(r.get("epoch", 0) >= 1 and r.get("checkpoint_dir_name") and not r.get("done") for r in saved_results(out))

    kill_sweep_when(state_saved_after_an_epoch, "Tune's experiment state saved after a trial's first epoch", args, sets, out, tmp_path)

    result = run_lfme(*args, "--resume", sets=sets, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[student] resuming after epoch" in result.stdout  # a trial Tune saw report continues from its checkpoint

    rows = read_trials(out / "trials.csv")
    errors = {path.parent.name: path.read_text()[-2000:] for path in out.glob("trials/*/error.txt")}
    assert len(rows) == 2 and all(row["status"] != "error" for row in rows), errors
    assert list(rows[0]) == ["trial_id", "distill.temperature", "distill.alpha", "epochs", "val_acc", "status"]
    for row in rows:
        assert float(row["distill.temperature"]) in (2.0, 4.0) and 0.4 <= float(row["distill.alpha"]) <= 0.8
        assert 1 <= int(row["epochs"]) <= 20 and 0 <= float(row["val_acc"]) <= 1
    markdown = (out / "trials.md").read_text()
    assert "Best trial" in markdown and all(row["trial_id"] in markdown for row in rows)
    assert "| overall | many | medium | few |" in markdown

    best = load_config(out / "best_config.yaml")  # what `lfme run best_config.yaml` loads first
    best_row = max(rows, key=lambda row: float(row["val_acc"]))
    assert best.distill.temperature == float(best_row["distill.temperature"])
    assert best.distill.alpha == pytest.approx(float(best_row["distill.alpha"]))
    assert best.distill.epochs == 20
    assert Path(best.run_dir) == inputs_run.resolve()

    # No trial retrained an expert or rebuilt the cache, and the distill stage was left alone.
    assert fingerprint_files(inputs_run) == files
    assert input_records(inputs_run) == records
    assert manifest(inputs_run)["stages"]["distill"] == distill_record
    assert (inputs_run / "distill" / "student.pt").read_bytes() == student
    assert list((out / "trials").rglob("events.out.tfevents*")), "no TensorBoard event file"
    for row in rows:  # each trial's own scalars (a resumed trial starts another events file beside the first)
        assert list((inputs_run / "tensorboard" / "tune" / "resumable" / row["trial_id"]).glob("events*"))
    assert list((out / "trials").glob("*/checkpoint_*/state.pt")) and not (out / "train").exists()  # Tune's checkpoints, no Ray Train run


@pytest.mark.usefixtures("on_shared_ray")
def test_a_killed_sweep_of_two_worker_students_resumes_its_trial_from_the_ray_train_checkpoint(inputs_run, tmp_path, monkeypatch):
    """A several-worker trial is a Ray Train run named after the trial: killed after a checkpoint, the resumed
    sweep restarts the trial, whose run continues from that checkpoint to the planned last epoch."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")  # as in the one-worker test: Tune's state saved within a second
    sets = [
        *SWEEP,
        "tune.search_space={distill.temperature: {choice: [2]}}",
        "distill.epochs=40",  # 0.1-0.3 s each: the kill lands well before the last (about the 8th here)
        "distill.resources={num_workers: 2, cpus_per_worker: 0.5}",
        "tune.name=two_workers",
    ]
    args = ("tune", "ray_config.yaml", "--run-dir", str(inputs_run), "--num-samples", "1")
    out = inputs_run / "tune" / "two_workers"

    def checkpointed_and_running() -> bool:
        """Ray Train kept an epoch checkpoint of the trial's run and Tune's saved state has the trial not done."""
        running = any(r.get("epoch", 0) >= 1 and not r.get("done") for r in saved_results(out))
        return running and bool(list(out.glob("train/*/checkpoint_*/")))

    kill_sweep_when(checkpointed_and_running, "a checkpoint of the trial's Ray Train run, the trial not done", args, sets, out, tmp_path)
    [run] = (out / "train").iterdir()  # the trial's Ray Train run, named after the sweep and the trial

    result = run_lfme(*args, "--resume", sets=sets, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = [int(k) for k in re.findall(r"\[student\] resuming after epoch (\d+)", result.stdout)]
    assert resumed and all(1 <= k < 40 for k in resumed), result.stdout[-3000:]

    [row] = read_trials(out / "trials.csv")
    assert row["status"] == "done" and row["epochs"] == "40", row
    assert [path.name for path in (out / "train").iterdir()] == [run.name] == [f"two_workers_{row['trial_id']}"]
    assert (run / "checkpoint_manager_snapshot.json").is_file()
    assert "Best trial" in (out / "trials.md").read_text() and (out / "best_student.pt").is_file()
    assert list((inputs_run / "tensorboard" / "tune" / "two_workers" / row["trial_id"]).glob("events*"))
