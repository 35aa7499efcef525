"""Ctrl-C and errors a person can act on.

Ctrl-C (SIGINT) stops `lfme run` within 10 s in every stage, keeps what was
checkpointed, records the stage `interrupted`, says so on one line and exits
130; the same command resumes. A second Ctrl-C (or a stop that hangs) exits at
once. An error raised in a Ray worker reaches the console as one line, the
worker's own exception naming the file, with the full traceback in the run's
log file (`<run_dir>/logs/`). Ray's own chatter (its warnings, the C++ core
worker's ERROR lines, the raylet's "N PYTHON worker processes have been
started") goes to that log file, not to the console, unless `--verbose`.

The pieces are unit-tested without Ray (tests/stages/test_ray_compat.py,
tests/stages/test_tasks.py, tests/pipeline/test_console.py); these tests run the
CLI in its own process group (as a terminal runs it) on a copy of the session's
finished run, and send SIGINT to the driver alone or, as a terminal's Ctrl-C
does, to the whole group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import FAST, REPO, copy_run, kill_group, lfme_command, manifest, run_lfme, wait_for

INTERRUPTED = "lfme: interrupted; run the same command again to resume"
EXIT_WITHIN_S = 10.0
# Lines of Ray's own that the console must not show (the log file keeps them).
RAY_CHATTER = ("core_worker.cc", "PYTHON worker processes have been started", "Traceback (most recent call last)")

pytestmark = pytest.mark.integration


# --------------------------------------------- CLI processes without Ray (fast)

SIGNALS_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pipeline.console import Console, interrupts
    with interrupts(Console(), grace_s=float(sys.argv[2])):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        if sys.argv[1] == "twice":
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # a stop that hangs
    print("not reached", flush=True)
    """
)


@pytest.mark.parametrize("how, grace, message", [("twice", 60.0, "interrupted again"), ("once", 1.0, "still stopping 1 s after Ctrl-C")])
def test_a_second_ctrl_c_or_a_hanging_stop_exits_at_once(how, grace, message):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", SIGNALS_SCRIPT, how, str(grace)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 130, result.stderr
    assert result.stdout == "stopping\n"
    assert f"lfme: {message}; exiting now" in result.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_an_error_is_one_line_naming_the_log_with_its_traceback(tmp_path, debug):
    run_dir = tmp_path / "empty"
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--stage", "distill", *(["--debug"] if debug else []), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    (log,) = (run_dir / "logs").glob("lfme-run-*.log")
    assert lines[-1].startswith("lfme: error: MissingInputsError: stage 'distill' reads the outputs of 'split'")
    assert lines[-1].endswith(f" (full traceback: {log})")
    assert "Traceback (most recent call last)" in log.read_text() and "MissingInputsError" in log.read_text()
    if debug:
        assert "Traceback (most recent call last)" in result.stderr and 'pipeline/runner.py", line' in result.stderr
    else:
        assert len(lines) == 1, result.stderr


# ------------------------------------------------------- the pipeline, with Ray


def start(run_dir: Path, sets: list[str], out: Path, *extra: str) -> subprocess.Popen:
    """`lfme run` in its own process group, stdout and stderr to separate files."""
    with open(out.with_suffix(".out"), "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
        return subprocess.Popen(
            lfme_command("run", "ray_config.yaml", "--run-dir", str(run_dir), *extra, sets=sets),
            cwd=REPO, stdout=stdout, stderr=stderr, text=True, start_new_session=True,
        )


def start_until(run_dir: Path, sets: list[str], out: Path, ready, what: str, *extra: str) -> subprocess.Popen:
    """`start`, then wait until `ready(stdout)` holds; the driver is killed if it never does."""
    driver = start(run_dir, sets, out, *extra)
    try:
        wait_for(lambda: ready(console(out)[0]), timeout=400, what=what)
    except BaseException:
        kill_group(driver)
        raise
    return driver


def console(out: Path) -> tuple[str, str]:
    return out.with_suffix(".out").read_text(), out.with_suffix(".err").read_text()


def interrupt(driver: subprocess.Popen, group: bool = False) -> float:
    """SIGINT to the driver (or, like a terminal's Ctrl-C, to its whole process group); seconds until it exited."""
    sent = time.monotonic()
    if group:
        os.killpg(driver.pid, signal.SIGINT)
    else:
        os.kill(driver.pid, signal.SIGINT)
    try:
        driver.wait(timeout=60)
    finally:
        kill_group(driver)  # anything left of its Ray
    return time.monotonic() - sent


def interrupted_last_of_ours(text: str) -> bool:
    """The interrupt is the last of our lines in `text` (a log, or a --verbose console's stderr).

    Ray's own lines may follow it: the log stays open while Ray stops
    (`pipeline.cli.finish`), and on a loaded machine a worker's traceback from
    the abort is forwarded after the driver's last line.
    """
    lines = text.splitlines()
    if INTERRUPTED not in lines:
        return False
    after = lines[len(lines) - lines[::-1].index(INTERRUPTED):]
    return not [line for line in after if line.startswith(("== ", "lfme: ", "[student]", "[expert"))]


def latest_log(run_dir: Path) -> str:
    return max((run_dir / "logs").glob("lfme-run-*.log"), key=lambda p: p.stat().st_mtime).read_text()


def checkpoint_epochs(run_dir: Path) -> dict[str, int]:
    import torch

    return {
        path.parent.name: torch.load(path, map_location="cpu", weights_only=False)["epoch"]
        for path in (run_dir / "experts").glob("*/checkpoint.pt")
    }


def test_ctrl_c_in_the_experts_stage_stops_every_expert_and_the_same_command_resumes(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    sets = FAST + ["experts.epochs=200"]  # new expert settings: all three train again, for longer than the test waits
    names = [s["name"] for s in json.loads((run_dir / "split" / "split.json").read_text())["subsets"]]
    # The most populous expert has the slowest epochs: once it has checkpointed, all of them are training.
    driver = start_until(run_dir, sets, tmp_path / "first", lambda _: (run_dir / "experts" / names[0] / "checkpoint.pt").exists(),
                         "a checkpoint of the first expert")
    took = interrupt(driver)
    out, err = console(tmp_path / "first")
    assert driver.returncode == 130 and took < EXIT_WITHIN_S, (driver.returncode, took, err[-2000:])
    assert err == INTERRUPTED + "\n"
    assert not [line for line in out.splitlines() if any(c in line for c in RAY_CHATTER)]
    record = manifest(run_dir)["stages"]["experts"]
    assert record["status"] == "interrupted"
    saved = checkpoint_epochs(run_dir)
    assert names[0] in saved and saved[names[0]] >= 1

    # The same command resumes each expert after its checkpointed epoch. Stopped
    # again by a terminal's Ctrl-C, which reaches every process of the group.
    driver = start_until(run_dir, sets, tmp_path / "second", lambda out: all(f"[expert {n}] resuming after epoch" in out for n in saved),
                         "every checkpointed expert resuming")
    took = interrupt(driver, group=True)
    out, err = console(tmp_path / "second")
    assert driver.returncode == 130 and took < EXIT_WITHIN_S, (driver.returncode, took, err[-2000:])
    assert "== experts: resuming" in out
    for name, epoch in saved.items():
        assert f"[expert {name}] resuming after epoch {epoch}" in out
    assert manifest(run_dir)["stages"]["experts"]["status"] == "interrupted"
    assert manifest(run_dir)["stages"]["experts"]["attempts"] == 2


def test_ctrl_c_in_the_distill_stage_under_ray_train_and_a_quiet_console(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    sets = FAST + ["distill.epochs=200"]
    driver = start_until(run_dir, sets, tmp_path / "first", lambda out: "[student] epoch 2/200" in out, "the student's second epoch")
    took = interrupt(driver)
    out, err = console(tmp_path / "first")
    assert driver.returncode == 130 and took < EXIT_WITHIN_S, (driver.returncode, took, err[-2000:])
    assert manifest(run_dir)["stages"]["distill"]["status"] == "interrupted"
    assert list((run_dir / "ray").glob("distill-student-*/checkpoint_*"))  # Ray Train's checkpoints are kept

    # The console: our lines only, the interrupt on stderr; Ray's lines are in the log file.
    assert err == INTERRUPTED + "\n"
    assert "[student] epoch 1/200" in out
    assert not [line for line in out.splitlines() if any(c in line for c in RAY_CHATTER)]
    log = latest_log(run_dir)
    assert "[student] epoch 1/200" in log and interrupted_last_of_ours(log), log[-2000:]
    assert "core_worker.cc" in log  # Ray Train's controller logs one at start (Ray 2.60): it went here

    # As a kill while Ray Train rewrote its record of the run leaves it (Ray 2.60 writes it in place; a killed
    # sweep's resume failed on it in CI): `stages.workers.repair_record` rebuilds it and the student resumes.
    record = max((run_dir / "ray").glob("distill-student-*/checkpoint_manager_snapshot.json"), key=lambda p: p.stat().st_mtime)
    record.write_text(record.read_text()[:40])  # the interrupted run's (the finished run's 3-epoch student is beside it)
    # With --verbose, Ray prints as it does by default; a group-wide Ctrl-C after the resume.
    driver = start_until(run_dir, sets, tmp_path / "second", lambda out: "[student] resuming after epoch" in out, "the student resuming",
                         "--verbose")
    took = interrupt(driver, group=True)
    out, err = console(tmp_path / "second")
    assert driver.returncode == 130 and took < EXIT_WITHIN_S, (driver.returncode, took, err[-2000:])
    assert "== distill: resuming" in out and interrupted_last_of_ours(err), err[-2000:]
    assert "record of its checkpoints" in out and "was cut short" in out and "rebuilt, resuming from checkpoint_" in out
    assert re.search(r"\b(WARNING|ERROR)\b|core_worker\.cc", out + err), "no Ray line on the verbose console"


@pytest.mark.usefixtures("on_shared_ray")
def test_a_student_stopped_after_its_last_checkpoint_reports_that_epoch_again_on_resume(finished_run, tmp_path):
    """Ray Train resumes a finished run too; the loop then reports its last epoch again, so a restored Tune trial
    (which keeps the result it had before the kill) gets the final val_acc and a checkpoint that is not pruned."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    [snapshot] = (run_dir / "ray").glob("distill-student-*/checkpoint_manager_snapshot.json")
    before = json.loads(snapshot.read_text())
    # As a Ctrl-C between the last epoch's checkpoint and the stage's end leaves it.
    record = json.loads((run_dir / "manifest.json").read_text())
    record["stages"]["distill"]["status"] = "interrupted"
    (run_dir / "manifest.json").write_text(json.dumps(record))

    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== distill: resuming" in result.stdout and "[student] resuming after epoch 3" in result.stdout
    assert "[student] epoch" not in result.stdout  # no epoch trained again
    after = json.loads(snapshot.read_text())
    assert after["current_report_index"] == before["current_report_index"] + 1
    latest = after["latest_checkpoint_result"]
    assert latest["metrics"]["epoch"] == 3 and latest["metrics"]["val_acc"] == before["latest_checkpoint_result"]["metrics"]["val_acc"]
    assert latest["checkpoint_dir_name"] != before["latest_checkpoint_result"]["checkpoint_dir_name"]
    assert (snapshot.parent / latest["checkpoint_dir_name"]).is_dir()
    assert manifest(run_dir)["stages"]["distill"]["status"] == "done"


@pytest.mark.usefixtures("on_shared_ray")  # not about the driver's own Ray: its error path, read from a task's failure
def test_a_damaged_expert_read_in_a_ray_task_is_one_line_naming_the_file(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    name = json.loads((run_dir / "split" / "split.json").read_text())["subsets"][-1]["name"]
    weights = run_dir / "experts" / name / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    data = manifest(run_dir)
    data["stages"]["cache"]["status"] = "failed"  # the cache stage runs again, reading every expert in a task
    (run_dir / "manifest.json").write_text(json.dumps(data))
    cache_manifest = (run_dir / "cache" / "manifest.json").read_bytes()

    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--stage", "cache", sets=FAST, timeout=400)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"lfme: error: UnreadableFileError: {weights}: cannot read the weights of expert '{name}' (RuntimeError: ")
    log = Path(re.fullmatch(r".* \(full traceback: (\S+)\)", lines[0]).group(1))
    assert log.parent == run_dir / "logs" and log.name.startswith("lfme-run-")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "PytorchStreamReader" in text and "ray::cache_shard" in text
    assert manifest(run_dir)["stages"]["cache"]["status"] == "failed"
    # The last good cache stays, and nothing of the failed write is left.
    assert (run_dir / "cache" / "manifest.json").read_bytes() == cache_manifest
    assert [p.name for p in (run_dir / "cache").iterdir() if p.name.startswith("data-")] == [json.loads(cache_manifest)["data_dir"]]
