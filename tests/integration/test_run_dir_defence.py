"""A run directory defends itself: one driver at a time, outputs verified before a stage is skipped.

Each case starts from a copy of the session's finished default run, as a user
would meet it: a second `lfme run` on a busy directory, then on one whose
driver was killed; a truncated cache shard, then a deleted expert.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from lfme.storage import read_json
from tests.pipeline_helpers import FAST, ONE_WORKER, copy_run, kill_group, manifest, run_lfme, start_lfme, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("on_shared_ray")]


def stage_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("== ")]


def test_a_second_driver_refuses_at_once_and_takes_over_from_a_killed_first_whose_student_resumes(finished_run, tmp_path):
    """One driver at a time, from start to end: refused while the first runs, taken over once it is SIGKILLed.

    The first driver trains a new student (new distill settings: distill starts
    fresh) for enough epochs (0.2-0.5 s each) that the second driver's refusal
    and the kill, at most 0.5 s after the third epoch is logged, land mid-stage.
    """
    run_dir = copy_run(finished_run, tmp_path / "run")
    epochs = 12
    sets = FAST + [ONE_WORKER, f"distill.epochs={epochs}", "distill.lr=0.03"]
    log = tmp_path / "first.log"

    def epochs_logged() -> list[int]:
        return [int(e) for e in re.findall(rf"\[student\] epoch (\d+)/{epochs}", log.read_text())] if log.exists() else []

    first = start_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=sets, log=log)
    try:
        wait_for(lambda: (run_dir / "lease.json").exists(), timeout=120, what="the first driver's lease")
        holder = json.loads((run_dir / "lease.json").read_text())
        started = time.monotonic()
        second = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=sets, timeout=120)
        took = time.monotonic() - started
        assert second.returncode == 1
        message = second.stderr.strip().splitlines()[-1]
        assert message.startswith("lfme: error: LeaseHeldError: ") and f"pid {holder['pid']} on {holder['host']}" in message
        assert "since " in message and "==" not in second.stdout  # no stage started, nothing resumed
        assert took < 30, f"the refusal took {took:.0f} s"
        status = run_lfme("status", str(run_dir))
        assert f"driver: pid {holder['pid']} on {holder['host']}" in status.stdout

        # The refused driver left the first alone: it trains on, and is then killed mid-stage.
        wait_for(lambda: 3 in epochs_logged(), timeout=600, what="the third distill epoch")
    finally:
        kill_group(first)  # SIGKILL: no clean-up code of ours runs
    assert manifest(run_dir)["stages"]["distill"]["status"] == "running"
    assert json.loads((run_dir / "lease.json").read_text())["pid"] == holder["pid"]  # a SIGKILLed driver leaves its lease
    status = run_lfme("status", str(run_dir))
    assert f"driver: gone (its process {holder['pid']} no longer exists" in status.stdout
    assert re.search(r"distill\s+interrupted", status.stdout), status.stdout
    last_logged = max(epochs_logged())

    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=sets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"lease: took over {run_dir} from pid {holder['pid']}" in result.stdout
    assert "== distill: interrupted (its driver is gone)" in result.stdout
    assert "== distill: resuming" in result.stdout
    resumed_after = int(re.search(r"\[student\] resuming after epoch (\d+)", result.stdout).group(1))
    # Each epoch logs, then checkpoints: the kill may land between the two, so
    # the last logged epoch may be trained again, never an earlier one.
    assert resumed_after >= last_logged - 1 >= 2
    retrained = [int(e) for e in re.findall(rf"\[student\] epoch (\d+)/{epochs}", result.stdout)]
    assert min(retrained) == resumed_after + 1
    history = read_json(run_dir / "distill" / "history.json")
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    record = manifest(run_dir)["stages"]["distill"]
    assert record["status"] == "done" and record["attempts"] == 2 and len(record["resumes"]) == 1
    assert not (run_dir / "lease.json").exists()  # given back at the end


def test_a_truncated_shard_then_a_deleted_expert_are_found_before_the_skip_and_rebuilt_with_what_reads_them(finished_run, tmp_path):
    """Two damaged outputs of one run directory, one after the other (each alone would cost a student's run)."""
    run_dir = copy_run(finished_run, tmp_path / "run")

    # A truncated cache shard: `lfme verify` names it, and the run finds it before skipping the cache.
    cache = json.loads((run_dir / "cache" / "manifest.json").read_text())
    shard = f"{cache['data_dir']}/{cache['parts']['train']['shards'][0]}"
    (run_dir / "cache" / shard).write_bytes((run_dir / "cache" / shard).read_bytes()[:100])
    verify = run_lfme("verify", str(run_dir))
    assert verify.returncode == 1 and f"cache: DAMAGED: cache/{shard} has 100 bytes" in verify.stdout
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--through", "cache", sets=FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = stage_lines(result.stdout)
    assert f"== cache: cache/{shard} has 100 bytes" in "\n".join(lines)
    assert any(line.startswith("== split: up to date") for line in lines)
    assert any(line.startswith("== experts: up to date") for line in lines)
    assert run_lfme("verify", str(run_dir)).returncode == 0

    # A deleted expert: retrained alone, and every stage after it runs again.
    kept = {p.parent.name: p.read_bytes() for p in (run_dir / "experts").glob("*/model.pt") if p.parent.name != "few"}
    (run_dir / "experts" / "few" / "model.pt").unlink()
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST + [ONE_WORKER])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== experts: experts/few/model.pt is missing; running it again" in result.stdout
    assert re.search(r"experts: training 1 experts", result.stdout)
    assert "[expert few] epoch 1/" in result.stdout and "[expert many]" not in result.stdout
    for name, weights in kept.items():  # the other experts were kept, byte for byte
        assert (run_dir / "experts" / name / "model.pt").read_bytes() == weights
    lines = stage_lines(result.stdout)
    assert "== split: up to date" in result.stdout
    assert "== cache: its input experts ran again; running it again" in lines
    assert "== distill: its input cache ran again; running it again" in lines
    assert "== evaluate: its input experts ran again; running it again" in lines
    assert run_lfme("verify", str(run_dir)).returncode == 0
