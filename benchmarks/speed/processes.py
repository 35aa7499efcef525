"""CPU seconds of this process and of the processes it starts (Ray's daemons, workers and actors), by name."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ray  # noqa: F401  (Ray ships psutil: importable once ray is)
import psutil

class ProcessCPU:
    """CPU seconds of this process and of every process it started (Ray's, when Ray runs here), by name.

    A thread samples them every `interval` seconds between `start()` and
    `stop()`, so processes that exit in between still count (up to their last
    sample). Names are each process's last title: the driver is "driver", Ray
    workers and actors go by theirs (ray::RayTrainWorker, ray::TrainController,
    ...; a worker still starting shows as default_worker.py), other processes
    by their program or script (raylet, gcs_server, dashboard.py, ...).
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.root = psutil.Process()
        self.first: dict[tuple, float] = {}
        self.names: dict[tuple, str] = {}
        self.samples: list[tuple[float, dict[tuple, float]]] = []  # (time, CPU seconds per process)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def name_of(self, process) -> str:
        if process.pid == self.root.pid:
            return "driver"
        command = process.cmdline() or [process.name()]
        if command[0].startswith("ray::"):
            return command[0].split()[0].split(".")[0]
        scripts = [Path(part).name for part in command[1:] if part.endswith(".py")]
        return scripts[0] if scripts else Path(command[0]).name

    def sample(self, initial: bool = False) -> None:
        cpu = dict(self.samples[-1][1]) if self.samples else {}  # the dead keep their last value
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                self.names[key] = self.name_of(process)  # a Ray worker's title changes when it becomes an actor
            except psutil.Error:  # exited since listed
                continue
            cpu[key] = times.user + times.system
            # A process born during the run counts from 0, one alive at the start from then.
            self.first.setdefault(key, cpu[key] if initial else 0.0)
        self.samples.append((time.perf_counter(), cpu))

    def poll(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def start(self) -> ProcessCPU:
        self.sample(initial=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sample()

    def started(self) -> int:
        """How many processes were born during the run."""
        return sum(1 for key in self.names if key not in self.samples[0][1])

    def used(self, since: float | None = None, exclude: tuple[str, ...] = ()) -> dict[str, float]:
        """CPU seconds per name from `since` (a perf_counter time; default: the start) to the end, largest first."""
        before = next((cpu for t, cpu in reversed(self.samples) if t <= since), self.samples[0][1]) if since else {}
        end = self.samples[-1][1]
        by_name: dict[str, float] = {}
        for key, name in self.names.items():
            if name not in exclude:
                by_name[name] = by_name.get(name, 0.0) + end[key] - before.get(key, self.first[key])
        return dict(sorted(by_name.items(), key=lambda item: -item[1]))
