"""pipeline.lease: one driver per run directory, on the local disk (on S3: tests/integration/test_s3_lease.py)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from lfme import storage
from pipeline.lease import Holder, Lease, LeaseHeldError, LeaseLostError, read_holder


def quiet(_line: str) -> None:
    pass


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def foreign_holder(run_dir: str, host: str, pid: int, heartbeat_age_s: float) -> None:
    then = time.time() - heartbeat_age_s
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(then))
    holder = Holder(host=host, pid=pid, command="lfme run elsewhere", since=iso, heartbeat=iso, token="theirs")
    storage.write_bytes_atomic(storage.join(run_dir, "lease.json"), holder.to_bytes())


@pytest.fixture
def run_dir(tmp_path) -> str:
    """A run directory on the local disk (tests/integration/test_s3_lease.py runs these tests on S3)."""
    return str(tmp_path / "run")


def test_a_second_driver_is_refused_with_the_holders_name(run_dir):
    first = Lease(run_dir, command="lfme run first", log=quiet)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError) as refused:
            Lease(run_dir, command="lfme run second", log=quiet).acquire()
        message = str(refused.value)
        assert f"pid {first.me.pid} on {socket.gethostname()} (`lfme run first`)" in message and "since " in message
        assert read_holder(run_dir).token == first.me.token  # the refused driver changed nothing
    finally:
        first.release()
    assert read_holder(run_dir) is None
    with Lease(run_dir, log=quiet) as second:  # free again
        assert read_holder(run_dir).token == second.me.token


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(run_dir):
    pid = dead_pid()
    foreign_holder(run_dir, socket.gethostname(), pid, heartbeat_age_s=1)
    said = []
    with Lease(run_dir, log=said.append) as lease:
        assert read_holder(run_dir).token == lease.me.token
    assert len(said) == 1 and f"its process {pid} no longer exists" in said[0] and "lfme run elsewhere" in said[0]


def test_a_lease_from_another_host_is_stale_only_without_heartbeat(run_dir):
    foreign_holder(run_dir, "other-host", 1, heartbeat_age_s=5)
    with pytest.raises(LeaseHeldError, match="in use by pid 1 on other-host"):
        Lease(run_dir, log=quiet, timeout_s=60).acquire()
    foreign_holder(run_dir, "other-host", 1, heartbeat_age_s=120)
    said = []
    with Lease(run_dir, log=said.append, timeout_s=60):
        assert re.search(r"no heartbeat for 12\d s \(more than 60 s\)", said[0]), said


def test_the_heartbeat_advances_and_a_lost_lease_is_noticed(run_dir):
    lease = Lease(run_dir, log=quiet, heartbeat_s=0.2)
    lease.acquire()
    try:
        first = json.loads(storage.read_text(storage.join(run_dir, "lease.json")))["heartbeat"]
        deadline = time.monotonic() + 10
        while json.loads(storage.read_text(storage.join(run_dir, "lease.json")))["heartbeat"] == first:
            assert time.monotonic() < deadline, "no heartbeat written in 10 s"
            time.sleep(0.1)
        lease.check()  # still ours
        foreign_holder(run_dir, "other-host", 7, heartbeat_age_s=0)  # someone took it over (wrongly, or after a pause)
        deadline = time.monotonic() + 10
        while lease.lost is None:
            assert time.monotonic() < deadline, "the lost lease went unnoticed for 10 s"
            time.sleep(0.1)
        with pytest.raises(LeaseLostError, match="pid 7 on other-host .* took it over"):
            lease.check()
    finally:
        lease.release()
    assert read_holder(run_dir).host == "other-host"  # release leaves another driver's lease alone
