"""Running the `lfme` CLI as a user would: a separate process, in its own process group.

Each run starts (and stops) its own local Ray in-process; the process group lets
a test kill the driver together with the Ray processes it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Short schedules: the tests check behaviour, not accuracy. Images decoded once, transformed in batches
# (`data.decode_once`, what the CIFAR presets do): no Ray worker of a test run imports torchvision, which
# costs each about 2 CPU-seconds. The per-image PIL path runs in the Ray Job test and the unit tests.
FAST = ["experts.epochs=2", "distill.epochs=3", "data.decode_once=true"]
# ray_config.yaml's student has two Ray Train workers; one worker is a plain Ray task (stages.distill), which
# starts about 9 s sooner on 2 cores. The tests whose subject is not Ray Train train their students so.
ONE_WORKER = "distill.resources.num_workers=1"


def lfme_command(*args: str, sets: list[str] = ()) -> list[str]:
    command = [sys.executable, "-m", "pipeline.cli", *args]
    for s in sets:
        command += ["--set", s]
    return command


def run_lfme(*args: str, sets: list[str] = (), timeout: float = 900) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        lfme_command(*args, sets=sets),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def start_lfme(*args: str, sets: list[str] = (), log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen(
        lfme_command(*args, sets=sets), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a finished run directory to change without touching the shared one."""
    shutil.copytree(run_dir, dest)
    return dest
