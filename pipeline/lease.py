"""One driver per run directory: the lease in `<run_dir>/lease.json`.

Two drivers on one run directory would run the same stages at once, the
second taking the first's running stage for an interrupted one and both
writing the same Ray Train run. So `lfme run` (with or without `--stage`) and
`lfme tune` hold a lease while they work:

    {"host", "pid", "command", "since", "heartbeat", "token"}

- Taking it: the file is created only if absent (`lfme.storage.create_exclusive`:
  atomic on a local disk and on S3 with If-None-Match). Another driver finds
  it there and refuses with one line naming the holder.
- Holding it: a thread rewrites the heartbeat every `HEARTBEAT_S` seconds, each
  time only if the file is still the one it wrote last
  (`replace_if_version`: S3 If-Match on the ETag). A driver that finds its
  lease taken or gone stops at the next stage boundary (`LeaseLostError`).
- A holder that is gone: its lease is stale when its pid no longer exists on
  this same host, or when its heartbeat is older than `TIMEOUT_S` seconds
  (any host: a killed driver, a lost machine). A new driver takes a stale
  lease over by the same compare-and-replace, and says whose it took.
- Giving it back: the driver deletes the file when it ends (also on Ctrl-C or
  an error); a SIGKILLed driver leaves it behind, stale.

What is guaranteed where: see the conditional writes in `lfme.storage`. On a
backend without conditional writes (GCS through gcsfs here) two drivers
starting within one round trip of each other can both take the lease.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from collections.abc import Callable

from lfme import storage
from rundir.layout import lease_file

HEARTBEAT_S = 10.0
TIMEOUT_S = 60.0


class LeaseHeldError(RuntimeError):
    """Another driver holds the run directory."""


class LeaseLostError(RuntimeError):
    """This driver's lease was taken over or removed while it ran."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Holder:
    host: str
    pid: int
    command: str
    since: str  # ISO time the lease was taken
    heartbeat: str  # ISO time of the last heartbeat
    token: str  # tells this holder's file from a later one

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    def seconds_since_heartbeat(self) -> float:
        return (_now() - dt.datetime.fromisoformat(self.heartbeat)).total_seconds()

    def describe(self) -> str:
        return (
            f"pid {self.pid} on {self.host} (`{self.command}`), since {self.since}, "
            f"last heartbeat {self.seconds_since_heartbeat():.0f} s ago"
        )

    def stale_because(self, timeout_s: float) -> str | None:
        """Why this holder is gone, or None while it may still be working."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"its process {self.pid} no longer exists on {self.host}"
        if self.seconds_since_heartbeat() > timeout_s:
            return f"no heartbeat for {self.seconds_since_heartbeat():.0f} s (more than {timeout_s:.0f} s)"
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_holder(run_dir: str) -> Holder | None:
    """The holder named in the run's lease file, or None when there is none (or it is being replaced)."""
    try:
        return Holder(**json.loads(storage.read_text(lease_file(run_dir))))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{lease_file(run_dir)} is not a lease file ({err}); delete it if no driver is running") from None


class Lease:
    """The lease of one driver on one run directory: `acquire`, `check` between steps, `release`."""

    def __init__(
        self,
        run_dir: str,
        command: str = " ".join(["lfme", *sys.argv[1:]]),
        log: Callable[[str], None] = print,
        heartbeat_s: float = HEARTBEAT_S,
        timeout_s: float = TIMEOUT_S,
    ):
        self.run_dir = run_dir
        self.path = lease_file(run_dir)
        self.log = log
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        now = _now().isoformat(timespec="seconds")
        self.me = Holder(socket.gethostname(), os.getpid(), command, now, now, uuid.uuid4().hex)
        self.version: str | None = None  # of the file as we last wrote it
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if storage.create_exclusive(self.path, self.me.to_bytes()):
            self.version = storage.version(self.path)
        else:
            self._take_over()
        self._thread = threading.Thread(target=self._beat, name="lfme-lease-heartbeat", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        version = storage.version(self.path)
        holder = read_holder(self.run_dir)
        if holder is None or version is None:  # released between our two reads: try once more from the start
            if not storage.create_exclusive(self.path, self.me.to_bytes()):
                raise LeaseHeldError(f"{self.run_dir} was taken by another driver just now; see `lfme status {self.run_dir}`")
            self.version = storage.version(self.path)
            return
        why = holder.stale_because(self.timeout_s)
        if why is None:
            raise LeaseHeldError(
                f"{self.run_dir} is in use by {holder.describe()}; wait for it to finish or stop it "
                f"(a killed driver's lease is taken over once it is stale: after {self.timeout_s:.0f} s without heartbeat)"
            )
        self.version = storage.replace_if_version(self.path, self.me.to_bytes(), version)
        if self.version is None:
            raise LeaseHeldError(f"{self.run_dir}: another driver took over the stale lease first; see `lfme status {self.run_dir}`")
        self.log(f"lease: took over {self.run_dir} from {holder.describe()}: {why}")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.me.heartbeat = _now().isoformat(timespec="seconds")
            # No version: the file was gone already when we read it back after writing it.
            written = None if self.version is None else storage.replace_if_version(self.path, self.me.to_bytes(), self.version)
            if written is None:
                holder = read_holder(self.run_dir)
                self.lost = "it was removed" if holder is None else f"{holder.describe()} took it over"
                return
            self.version = written

    def check(self) -> None:
        """Raise LeaseLostError if another driver took the run over (called between stages)."""
        if self.lost is not None:
            raise LeaseLostError(f"{self.run_dir}: this driver's lease was lost ({self.lost}); stopping")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_holder(self.run_dir)
        if self.lost is None and holder is not None and holder.token == self.me.token:
            storage.remove(self.path)
