"""The commands that need no model start without torch: `lfme status`, `lfme verify`, a refused second driver.

Each runs in a fresh interpreter (the test process has torch imported
already) and reports which heavy modules it imported. torch with torchvision
costs seconds to import on an idle machine and tens under load, so a refusal
or a status check that imported it made the user wait for nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.lease import Holder
from rundir.layout import LEASE_FILE
from pipeline.manifest import FORMAT
from rundir.config import dump_config, load_config
from tests.pipeline_helpers import REPO

pytestmark = pytest.mark.integration  # each test runs the CLI in a new interpreter

HEAVY = ("torch", "torchvision", "ray")

PROBE = """
import sys
from pipeline.cli import main
code = main(sys.argv[1:])
heavy = [name for name in {heavy!r} if name in sys.modules]
print("HEAVY=" + ",".join(heavy), flush=True)
sys.exit(code)
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def heavy_imports(result: subprocess.CompletedProcess) -> list[str]:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    return [name for name in line.removeprefix("HEAVY=").split(",") if name]


def make_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "split").mkdir(parents=True)
    (run_dir / "split" / "split.json").write_text("{}")
    digest = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # SHA-256 of "{}"
    stages = {
        "split": {
            "status": "done", "fingerprint": "f" * 16, "inputs": {}, "started_at": "2026-12-06T00:00:00+00:00",
            "outputs": {"split.json": {"bytes": 2, "sha256": digest}},
        }
    }
    (run_dir / "manifest.json").write_text(json.dumps({"format": FORMAT, "stages": stages}))
    # The resolved config a run keeps, every section written out (`lfme verify` loads it to check the data).
    (run_dir / "config.yaml").write_text(dump_config(load_config(REPO / "ray_config.yaml")))
    return run_dir


def test_status_and_verify_import_no_torch(tmp_path):
    run_dir = make_run_dir(tmp_path)
    status = run_cli("status", str(run_dir))
    assert status.returncode == 0, status.stderr
    assert "split" in status.stdout and heavy_imports(status) == []
    verify = run_cli("verify", str(run_dir))
    assert verify.returncode == 0, verify.stderr
    assert "split: ok (1 files, sizes and SHA-256 as written)" in verify.stdout and heavy_imports(verify) == []


def test_a_refused_second_driver_imports_no_torch(tmp_path):
    run_dir = make_run_dir(tmp_path)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    holder = Holder(socket.gethostname(), os.getpid(), "lfme run", now, now, "t")  # this live process holds it
    (run_dir / LEASE_FILE).write_bytes(holder.to_bytes())
    refused = run_cli("run", "ray_config.yaml", "--run-dir", str(run_dir))
    assert refused.returncode == 1
    assert refused.stderr.startswith("lfme: error: LeaseHeldError: ") and f"pid {os.getpid()}" in refused.stderr
    assert heavy_imports(refused) == []


def test_status_watch_refreshes_with_the_latest_epoch_line_until_ctrl_c(tmp_path):
    import signal
    import time

    run_dir = make_run_dir(tmp_path)
    logs = run_dir / "logs"
    logs.mkdir()
    (logs / "lfme-run-20261206-040000-1.log").write_text("(train_expert pid=3 stdout) [expert few] epoch 9/9  loss 0.1\n")
    (logs / "lfme-run-20261206-050000-2.log").write_text(
        "== distill: running\n(RayTrainWorker pid=7 stdout) [student] epoch 2/20  loss 4.1  val acc 40.0%\n== distill: done\n"
    )
    (logs / "lfme-tune-20261206-060000-3.log").write_text("== split: up to date\n")  # newest, but no epoch line in it
    watch = subprocess.Popen(
        # pyarrow too: `lfme status` reads JSON only (a Ctrl-C landing in pyarrow's import once hung it under load).
        [sys.executable, "-c", PROBE.format(heavy=(*HEAVY, "pyarrow")), "status", str(run_dir), "--watch", "0.2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert out.count("latest: [student] epoch 2/20  loss 4.1  val acc 40.0%") >= 2  # refreshed, newest epoch line
    assert out.count("driver: none") >= 2 and heavy_imports(subprocess.CompletedProcess([], 0, out, err)) == []
