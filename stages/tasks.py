"""How stage code runs in plain Ray tasks (experts, cache, evaluate, predict).

`task_setup` gives a task its torch threads (its CPU share), its device (the
GPU Ray assigned it, else the CPU) and its precision; `rank_seed` its random
stream. Around the tasks, in the driver: `cancelled_on_interrupt` cancels a
stage's running tasks on Ctrl-C and `drained_on_failure` lets the others end
when one fails. In the tasks, `reading` names a file of the run that exists but
cannot be read (`UnreadableFileError`), so the one line the CLI prints says
which, `say` prints a progress line once, and `FileCheckpoints` keeps a
training task's epoch checkpoints (an expert's, a one-worker student's) in one
file of the run, so a task Ray reruns after its worker died resumes there.

Nothing here imports Ray Train (`stages.workers`): each task runs in a new
worker process, and ray.train (with ray.data and pandas behind it) would add
about 0.8 CPU-seconds to every one of them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

import ray

from lfme import storage
from lfme.loop import LoopState, load_process_state, process_state_dict
from lfme.precision import Precision, resolve
from rundir.sections import Resources

# How long a failed stage waits for its other running tasks to end before it discards what they were writing.
DRAIN_WAIT_S = 300.0


REBUILD_HINT = "`lfme verify` lists damaged outputs, `lfme run` rebuilds them"


class UnreadableFileError(ValueError):
    """A file of the run that exists but cannot be read: the message names it and says why."""


def task_device() -> torch.device:
    """The device of a plain Ray task or actor: its GPU when Ray assigned it one, else the CPU."""
    return torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")


def task_setup(cpus: float, requested_precision: str, tag: str) -> tuple[torch.device, Precision]:
    """A plain Ray task's torch threads (its CPU share), device and precision; says so where the precision fell back."""
    torch.set_num_threads(max(1, int(cpus)))
    device = task_device()
    precision, fallback = resolve(requested_precision, device)
    if fallback:
        say(f"[{tag}] {fallback}")
    return device, precision


def rank_seed(seed: int, rank: int) -> int:
    """Each rank its own random stream (augmentation must not repeat across ranks).

    Model initialisation may differ across ranks: DistributedDataParallel
    broadcasts rank 0's parameters when it wraps the model.
    """
    return seed * 1000 + rank


def training_task(fn, resources: Resources, max_failures: int):
    """`fn` as a Ray task that trains on `resources` (one worker's share) and resumes from its checkpoint when retried.

    A worker process that dies (killed, OOM, node lost) reruns the task, which
    continues from its last epoch checkpoint (`FileCheckpoints`), up to
    `max_failures` times; an exception in our code is not retried: it would
    fail the same way again.
    """
    return ray.remote(fn).options(
        num_cpus=resources.cpus_per_worker,
        num_gpus=resources.gpus_per_worker,
        max_retries=max_failures,
        retry_exceptions=False,
    )


@contextlib.contextmanager
def reading(location: str, what: str, hint: str = REBUILD_HINT) -> Iterator[None]:
    """Around reading one file of the run: a failure names the file (`UnreadableFileError`).

    In a worker, torch's "PytorchStreamReader failed reading zip archive" on a
    truncated checkpoint says neither which file nor which run; this says both,
    on the one line the CLI prints. A missing file is left as it is (its
    FileNotFoundError names it already).
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as err:
        message = f"{location}: cannot read the {what} ({type(err).__name__}: {first_line(err)})"
        raise UnreadableFileError(f"{message}; {hint}" if hint else message) from err


def first_line(err: BaseException) -> str:
    """The first line of an exception's message; of a long one, its first sentence (torch's run on for 400 characters)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    end = line.find(". ", 40)
    return line[: end + 1] if len(line) > 120 and end > 0 else line


@contextlib.contextmanager
def cancelled_on_interrupt(refs: Iterable[ray.ObjectRef]) -> Iterator[None]:
    """Around waiting for tasks: on KeyboardInterrupt, cancel those of `refs` still running, then re-raise.

    `refs` is read when the interrupt comes (a dict of pending tasks may
    change meanwhile). Force: the worker process is killed mid-epoch, which
    loses nothing a task wrote (every write is atomic, and a training task
    resumes from its last checkpoint). Without it the tasks would run on after
    Ctrl-C (on a cluster, until the driver's job ends).
    """
    try:
        yield
    except KeyboardInterrupt:
        _cancel(refs)
        raise


@contextlib.contextmanager
def drained_on_failure(pending: Iterable[ray.ObjectRef]) -> Iterator[None]:
    """Around waiting for tasks that write into a shared folder: when one fails, let the others end, then re-raise.

    The stage discards that folder (the cache stage's new data directory)
    after a failure, so the tasks still running must have ended first, or one
    could write its file after the folder was discarded. They are not
    cancelled: cancelling a task whose result is on its way to the driver
    crashes the driver inside Ray 2.60 (task_manager.cc "Check failed: Tried
    to complete task that was not pending", forced or not; seen twice in 20
    runs when every shard task failed at once on a damaged expert), and the
    process ended with status 1 before the CLI could print its line. So the
    stage keeps few tasks in flight (as many as run at once) and waits for
    those, at most `DRAIN_WAIT_S` seconds. `pending` is read when the failure comes.
    """
    try:
        yield
    except Exception:
        refs = list(pending)
        if refs:
            try:
                ray.wait(refs, num_returns=len(refs), timeout=DRAIN_WAIT_S)
            except Exception:  # Ray going away: the task's own error is the one to raise
                pass
        raise


def _cancel(refs: Iterable[ray.ObjectRef]) -> None:
    """Force-cancel each of `refs` (read now: a dict of pending tasks may have changed) that still runs."""
    for ref in list(refs):
        try:
            ray.cancel(ref, force=True)
        except Exception:  # finished, or Ray is going away: nothing to cancel
            pass


@dataclass(frozen=True)
class FileCheckpoints:
    """A training task's epoch checkpoint (`lfme.loop`): one file, with the RNG state and the stage fingerprint it belongs to."""

    path: str
    fingerprint: str
    tag: str

    def restore(self, model, optimizer, scheduler) -> LoopState | None:
        """The checkpoint of an interrupted run with these settings, else None.

        An unreadable checkpoint (written atomically, so damaged after the fact)
        only costs the epochs it held: the task says so and starts over.
        """
        if not storage.exists(self.path):
            return None
        try:
            with reading(self.path, "checkpoint", hint=""):
                saved = storage.load_torch(self.path)
        except UnreadableFileError as err:
            say(f"[{self.tag}] {err}; training from epoch 1")
            return None
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            return None
        return load_process_state(saved, model, optimizer, scheduler)

    def save(self, state: LoopState, model, optimizer, scheduler) -> None:
        saved = {"fingerprint": self.fingerprint, **process_state_dict(state, model, optimizer, scheduler)}
        storage.save_torch_atomic(self.path, saved)


def say(line: str) -> None:
    """Print a progress line once.

    Ray Train patches `print` in its workers to log *and* echo, which the
    driver shows twice; writing to the stream directly shows it once.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
