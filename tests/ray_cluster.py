"""Real Ray clusters on loopback for the integration tests: `ray start` daemons, stopped by session id.

A driver that starts a local Ray of its own pays for it at every `lfme`
command: the GCS, a raylet and the dashboard start and stop again (about 6 s
at idle on this 2-core machine, 12 s under load, against 0.1-1.7 s to join a
running cluster; measured with `ray.init` side by side). Tests whose subject is
not the driver's own Ray therefore join one head started once per session
(`shared_ray` in conftest.py), the way a user's driver joins a cluster.

The processes are stopped by session id, never with `ray stop`, which would
also stop every other Ray on this machine (a benchmark running beside the
tests, another checkout's suite).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(*args: str, cwd: Path | None = None) -> int:
    """Run `ray start` in a new session; returns the session id its daemons keep after it exits."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    process = subprocess.Popen(
        [RAY, "start", "--disable-usage-stats", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out, _ = process.communicate(timeout=180)
    if process.returncode != 0:
        kill_sessions([process.pid])
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out[-3000:]}")
    return process.pid


def kill_sessions(session_ids: list[int]) -> None:
    """SIGKILL every process of these sessions: the daemons, workers and job drivers of our cluster only."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) in session_ids:
                os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def temp_dir() -> str:
    """A Ray temp dir under /tmp: short, because Unix socket paths are limited to 107 bytes."""
    return tempfile.mkdtemp(prefix="lfmeray", dir="/tmp")


def head_args(gcs_port: int, dashboard_port: int, num_cpus: int, temp: str) -> list[str]:
    """`ray start --head` on loopback with every port chosen free (two raylets on one host need distinct agent ports)."""
    return [
        "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp}",
    ]


@dataclass
class Head:
    gcs: str  # host:port, what a driver's RAY_ADDRESS names
    dashboard: str  # http://host:port, what the Jobs and state APIs take
    sessions: list[int] = field(default_factory=list)  # every `ray start` of the cluster, stopped together


@contextmanager
def head(num_cpus: int, cwd: Path | None = None, num_gpus: int = 0) -> Iterator[Head]:
    """A head node on loopback; more nodes may join it (add their `ray_start` to `sessions`). Stopped on the way out.

    `num_gpus`: logical GPUs Ray schedules by, whether or not CUDA is there.
    """
    temp = temp_dir()
    gcs_port, dashboard_port = free_port(), free_port()
    cluster = Head(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}")
    try:
        args = head_args(gcs_port, dashboard_port, num_cpus=num_cpus, temp=temp) + [f"--num-gpus={num_gpus}"]
        cluster.sessions.append(ray_start(*args, cwd=cwd))
        yield cluster
    finally:
        kill_sessions(cluster.sessions)
        shutil.rmtree(temp, ignore_errors=True)
