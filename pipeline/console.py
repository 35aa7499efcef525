"""The console of `lfme run` and `lfme tune`: our lines on it, everything in the run's log file; Ctrl-C.

`Console` keeps one log file per command in the run directory,
`<run_dir>/logs/lfme-<command>-<time>-<pid>.log`: the console shows our own
lines (each stage's progress, the workers' progress lines) and, at the end,
one line for an error (naming the log file) or an interrupt; the log file
holds the same lines, everything Ray prints (its warnings, its internal error
lines, the workers' stderr) and an error's full traceback.

`interrupts`: the first Ctrl-C raises KeyboardInterrupt, so the running stage
stops and is recorded `interrupted`; a second Ctrl-C, or a stop that takes
more than `GRACE_S` seconds, ends the process at once with 130.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TextIO
from collections.abc import Iterator

from rundir.layout import logs_dir
from stages import ray_compat

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended

# After the first Ctrl-C: the most seconds the driver spends stopping (cancel,
# abort, record, shut Ray down) before it exits regardless; Ctrl-C promises an
# exit within 10 s.
GRACE_S = 8.0


class Console:
    """Where `lfme run` and `lfme tune` write: our lines on the console, all of it in the run's log file.

    `open` (once the config names the run directory) starts the log file. From
    then on, without `verbose`, the driver's stderr (file descriptor 2, so
    Python's and Ray's C++ output alike) is the log file, and the CLI's own
    last line goes to the real stderr, kept aside as `err_fd`; Ray's forwarded
    worker output is split by `stages.ray_compat.route_worker_output`. A run
    directory on remote storage gets a local log file (in the temp folder),
    written to the run directory when the command ends (`close`).
    """

    def __init__(self, verbose: bool = False, debug: bool = False):
        self.verbose = verbose
        self.debug = debug
        self.log: TextIO | None = None
        self.location: str | None = None  # the log file in the run directory
        self.local: str | None = None  # the file written while the command runs (the same when local)
        self.err_fd = 2  # the console's stderr, whatever fd 2 is meanwhile
        self._saved_stderr: int | None = None

    def open(self, run_dir: str, command: str) -> None:
        from lfme import storage

        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"lfme-{command}-{stamp}-{os.getpid()}.log"
        self.location = storage.join(logs_dir(storage.absolute(run_dir)), name)
        self.local = storage.local_path(self.location) or os.path.join(tempfile.gettempdir(), "lfme-logs", name)
        Path(self.local).parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.local, "a", buffering=1, encoding="utf-8")
        self.log.write(f"lfme {' '.join(sys.argv[1:])}\n(pid {os.getpid()} on {socket.gethostname()}, {dt.datetime.now().isoformat(timespec='seconds')})\n")
        ray_compat.send_ray_output(self.log, self.verbose)
        warnings.showwarning = self.show_warning
        if not self.verbose:
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved_stderr = os.dup(2)
            self.err_fd = self._saved_stderr
            os.dup2(self.log.fileno(), 2)

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        """`warnings.showwarning` while the command runs: all in the log; ours (raised from this project's code) on the console too."""
        self.write_log(warnings.formatwarning(message, category, filename, lineno, line))
        if is_project_file(filename) or self.verbose:
            self.error(f"lfme: warning: {message}")

    def say(self, line: str) -> None:
        """One of our lines: on the console (stdout) and in the log."""
        print(line, flush=True)
        self.write_log(line)

    def write_log(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text if text.endswith("\n") else text + "\n")
            self.log.flush()

    def error(self, text: str) -> None:
        """On the console's stderr (the real one while fd 2 is the log)."""
        sys.stdout.flush()
        if self._saved_stderr is None:
            print(text, file=sys.stderr, end="" if text.endswith("\n") else "\n", flush=True)
        else:
            os.write(self._saved_stderr, (text if text.endswith("\n") else text + "\n").encode())

    def close(self) -> str | None:
        """Give fd 2 back, close the log, copy it to a remote run directory; returns where the log is (None: no log)."""
        if self._saved_stderr is not None:
            sys.stderr.flush()
            os.dup2(self._saved_stderr, 2)
            os.close(self._saved_stderr)
            self._saved_stderr, self.err_fd = None, 2
        warnings.showwarning = SHOW_WARNING
        if self.log is None:
            return None
        self.log.close()
        self.log = None
        location, local = self.location, self.local
        assert location is not None and local is not None, "open() names the log's files as it opens it"
        if local == location:
            return location
        from lfme import storage

        try:
            storage.write_text_atomic(location, Path(local).read_text(encoding="utf-8"))
            Path(local).unlink()
            return location
        except Exception as err:  # the log stays on this machine; say where
            return f"{local} (not copied to {location}: {type(err).__name__}: {err})"


SHOW_WARNING = warnings.showwarning
PROJECT = Path(__file__).resolve().parents[1]


def is_project_file(filename: str) -> bool:
    """A source file of this project (not of an installed package, even one in a venv inside it)."""
    path = Path(filename).resolve()
    return path.is_relative_to(PROJECT) and "site-packages" not in path.parts


@contextlib.contextmanager
def interrupts(console: Console, grace_s: float = GRACE_S) -> Iterator[None]:
    """Ctrl-C while a command runs: the first raises KeyboardInterrupt (the stage stops and is recorded
    `interrupted`); a second one, or `grace_s` seconds of stopping, ends the process at once."""

    def exit_now(why: str) -> None:
        line = f"lfme: {why}; exiting now (run the same command again to resume)\n".encode()
        for fd in {console.err_fd, 2}:
            try:
                os.write(fd, line)
            except OSError:
                pass
        os._exit(EXIT_INTERRUPTED)

    def second(signum, frame) -> None:
        exit_now("interrupted again")

    def first(signum, frame) -> None:
        signal.signal(signal.SIGINT, second)
        watchdog = threading.Timer(grace_s, exit_now, args=(f"still stopping {grace_s:.0f} s after Ctrl-C",))
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is first:  # not interrupted: as it was (after Ctrl-C the second one stays)
            signal.signal(signal.SIGINT, previous)
