"""Where Ray 2.60 needs a nudge, each with its reason; nothing else here.

- speed: Ray Train's controller polls its workers every 0.2 s, not 2 s;
- sweeps: Tune adds no logger the config does not name;
- quiet workers: Ray Train's per-report INFO line is dropped;
- Ctrl-C: Ray Train and Tune leave SIGINT to the driver (`driver_keeps_sigint`,
  `tune_leaves_sigint_alone`), which aborts the Ray Train run itself;
- errors: the exception a worker raised, out of Ray's wrappers (`user_error`, `one_line`);
- console: what Ray forwards from its workers is split between the console
  (our progress lines) and the run's log file (the rest), `route_worker_output`;
- resume: a Ray Train run whose checkpoint record a kill cut short gets the
  record rebuilt (`train_record_is_damaged`, `write_train_record`); Tune
  writes its sweep's state into place atomically (`atomic_tune_uploads`).

Every workaround is scoped: the environment variables are set, and the class
patched, only around the call that reads them and restored after, so importing
this project changes nothing in the caller's process. The one exception is the
console routing, which patches Ray's printing of worker output for the rest of
the process once the project starts Ray there (`pipeline.ray_session.init_ray`):
routed to the console and a log where the process asked for it
(`send_ray_output`: the `lfme` CLI), else only without colour codes on a
stream that is not a terminal. When Ray changes, this is the file to check.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import posixpath
import re
import shutil
from typing import TextIO
from collections.abc import Iterator

from lfme import storage

# Ray Train's controller takes a worker's report only when it polls the worker
# group, every 2 s by default, and the worker's next report waits for that (its
# result queue holds one): every epoch shorter than the interval is stretched
# to it (the default run's 0.3 s student epochs took 1.8 s). Polling every
# 0.2 s costs the controller a few remote calls per second (measured in
# docs/RESULTS.md, "Speed"). `TrainController` reads the variable, which
# `DataParallelTrainer.fit` passes on from the driver's environment.
TRAIN_POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_INTERVAL_S = "0.2"

# Tune adds CSV, JSON and TensorBoard loggers of its own unless this is "1"
# (`ray.tune.utils.callback._create_default_callbacks`), read when a Tuner
# fits; a sweep's loggers are then exactly the configured ones.
TUNE_AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"

# Ray Train logs every report at INFO under a logger named after its context
# module's file (`logging.getLogger(__file__)`), which
# `LoggingConfig(log_level="WARNING")` does not reach.
TRAIN_CONTEXT_MODULE = "ray.train.v2._internal.execution.context"


@contextlib.contextmanager
def environment(name: str, value: str, keep_user_value: bool = True) -> Iterator[None]:
    """`name=value` in this process for the duration (a value the user set is kept when `keep_user_value`)."""
    previous = os.environ.get(name)
    if previous is None or not keep_user_value:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def fast_train_polling() -> contextlib.AbstractContextManager:
    """Around `TorchTrainer.fit`: the controller polls its workers every 0.2 s, not 2 s."""
    return environment(TRAIN_POLL_INTERVAL_ENV, TRAIN_POLL_INTERVAL_S)


def only_configured_tune_loggers() -> contextlib.AbstractContextManager:
    """Around `Tuner.fit`: no logger the config does not name."""
    return environment(TUNE_AUTO_LOGGERS_ENV, "1", keep_user_value=False)


def quiet_train_reports() -> None:
    """In a Ray Train worker: drop the per-report INFO line (our progress line says the same)."""
    spec = importlib.util.find_spec(TRAIN_CONTEXT_MODULE)
    if spec is not None and spec.origin is not None:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)


# ----------------------------------------------------------------- Ctrl-C

# Ray Train's `DataParallelTrainer.fit`, called in a driver's main thread,
# installs its own SIGINT handler and never restores the previous one. On
# Ctrl-C it asks the controller to abort and then calls `sys.exit(0)` from the
# handler, which the driver sees as a `SystemExit` out of `fit` (the stage was
# recorded as failed with "SystemExit: 1" and the CLI exited 1, silently), and
# every later Ctrl-C in the process goes to that handler. The driver keeps
# SIGINT instead: `fit` raises KeyboardInterrupt like any other stage, and the
# caller aborts the run with the controller handle kept here.
TRAINER_MODULE = "ray.train.v2.api.data_parallel_trainer"

# Tune's `Tuner.fit` in the main thread installs a SIGINT handler that ends the
# sweep "gracefully" (a last snapshot of every trial, the loop ends, `fit`
# returns the unfinished results as if the sweep were done) unless this is "1".
# With it, Ctrl-C raises KeyboardInterrupt out of `fit`; `lfme tune --resume`
# continues from Tune's periodic snapshot and each trial's last checkpoint.
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@contextlib.contextmanager
def driver_keeps_sigint() -> Iterator[list]:
    """Around `TorchTrainer.fit`: Ray Train installs no SIGINT handler; yields the controllers it started.

    The list is filled as `fit` starts its controller actor (one per call), so
    that the caller can abort the run on KeyboardInterrupt (`abort_train_runs`).
    """
    trainer = importlib.import_module(TRAINER_MODULE).DataParallelTrainer
    original = trainer.__dict__["_register_sigint_handler"]
    controllers: list = []

    def keep_controller(self, controller) -> None:
        controllers.append(controller)

    trainer._register_sigint_handler = keep_controller
    try:
        yield controllers
    finally:
        trainer._register_sigint_handler = original


def abort_train_runs(controllers: list, timeout_s: float) -> None:
    """Ask Ray Train controllers to abort their runs (stop the workers, record the run aborted), waiting at most `timeout_s`.

    What Ray Train's own SIGINT handler does, less its `sys.exit`. The last
    committed checkpoint stays in storage; the same run name resumes from it.
    Best effort: a controller that is gone already is what we wanted.
    """
    import ray

    refs = []
    for controller in controllers:
        try:
            refs.append(controller.abort.remote())
        except Exception:  # the actor or the connection is gone: nothing left to abort
            pass
    if refs:
        try:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        except Exception:
            pass


def tune_leaves_sigint_alone() -> contextlib.AbstractContextManager:
    """Around `Tuner.fit`: Ctrl-C raises KeyboardInterrupt instead of ending the sweep as if it were done."""
    return environment(TUNE_SIGINT_ENV, "1", keep_user_value=False)


# ------------------------------------------------- a Ray Train run's record

# Ray Train 2.60 keeps the list of a run's checkpoints in one JSON file beside
# them and rewrites it in place after every report
# (`CheckpointManager._write_state_to_storage`: an output stream over the old
# file, not a new file renamed). A kill during that write leaves it empty or
# cut short, and every later `fit` of the run fails in the controller's
# `__init__` with "Expecting value: line 1 column 1" (seen in a killed sweep's
# resume). A checkpoint folder the record names is whole (Ray Train records one
# after its ranks have copied their files into it); a newer folder it does not
# name yet may not be (`stages.workers.repair_record` checks).
TRAIN_RECORD = "checkpoint_manager_snapshot.json"


def train_record_is_damaged(run: str) -> bool:
    """True when Ray Train's record of run folder `run` exists but is not JSON."""
    location = storage.join(run, TRAIN_RECORD)
    if not storage.is_file(location):
        return False
    try:
        json.loads(storage.read_text(location))
    except ValueError:  # UnicodeDecodeError included
        return True
    return False


def write_train_record(run: str, checkpoint_dir: str, metrics: dict, reports: int) -> None:
    """Ray Train's record of run folder `run` naming one checkpoint, `checkpoint_dir`, as its latest, written atomically.

    `metrics`: what that checkpoint's report carried; `reports`: its report's
    index plus one (the run's next report continues from there). Built with
    Ray's own model, so that the controller loads it as one it wrote.
    """
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (
        _CheckpointManagerState,
        _TrainingResultState,
    )

    latest = _TrainingResultState(checkpoint_dir_name=checkpoint_dir, metrics=metrics)
    record = _CheckpointManagerState(
        checkpoint_results=[latest],
        checkpoint_report_indices=[reports - 1],
        latest_checkpoint_result=latest,
        pending_training_results=[],
        pending_validation_specs=[],
        current_report_index=reports,
        validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[],
        failed_validation_checkpoint_dir_names=[],
    )
    storage.write_text_atomic(storage.join(run, TRAIN_RECORD), record.model_dump_json())


# Tune keeps a sweep's state (the experiment's, the search algorithm's, each
# trial's params and results) in the driver's staging folder and copies that
# folder into the sweep's storage every few seconds with pyarrow's copy_files,
# over the files already there (`_FilesystemSyncer._sync_up_command` ->
# `ray.train._internal.storage._upload_to_fs_path`). A kill during a copy left
# them empty and the sweep could not resume (the killed-sweep test, 1 run in 6
# under load). Around `Tuner.fit` each file is written beside its target under
# a temporary name and moved over it: a rename on a local disk; on S3 an object
# appears whole when its upload completes either way.


@contextlib.contextmanager
def atomic_tune_uploads() -> Iterator[None]:
    """Around `Tuner.fit`: Tune's copies of the sweep's state replace each file whole (see above)."""
    from ray.train._internal.storage import _FilesystemSyncer

    original = _FilesystemSyncer._sync_up_command

    def sync_up_command(self, local_path: str, uri: str, exclude: list | None = None):
        if exclude:  # Tune passes none; anything else keeps Ray's own copy
            return original(self, local_path, uri, exclude)
        return upload_atomically, {"local_path": local_path, "fs": self.storage_filesystem, "fs_path": uri}

    _FilesystemSyncer._sync_up_command = sync_up_command  # type: ignore[method-assign]
    try:
        yield
    finally:
        _FilesystemSyncer._sync_up_command = original  # type: ignore[method-assign]


def upload_atomically(local_path: str, fs, fs_path: str) -> None:
    """Copy a local file or folder to `fs_path` on pyarrow filesystem `fs` (None: the local disk), each file moved into place."""
    import uuid

    import pyarrow.fs

    fs = fs or pyarrow.fs.LocalFileSystem()
    if os.path.isfile(local_path):
        files = [(local_path, fs_path)]
    else:
        files = [
            (os.path.join(folder, name), posixpath.join(fs_path, os.path.relpath(os.path.join(folder, name), local_path)))
            for folder, _, names in os.walk(local_path)
            for name in names
        ]
    for source, target in files:
        fs.create_dir(posixpath.dirname(target), recursive=True)
        temporary = posixpath.join(posixpath.dirname(target), f".{uuid.uuid4().hex}-{posixpath.basename(target)}")
        with open(source, "rb") as f, fs.open_output_stream(temporary) as out:
            shutil.copyfileobj(f, out, 1 << 20)
        fs.move(temporary, target)


# ------------------------------------------------------- errors from workers

def user_error(err: BaseException) -> BaseException:
    """The exception a worker raised, out of Ray's wrappers around it.

    Ray 2.60 hands a worker's exception to the driver as
    - `RayTaskError` (a plain task or an actor call; `ray.get` raises an
      instance that also subclasses the cause's class): the original is `.cause`;
    - `WorkerGroupError` (Ray Train, a training worker failed): one exception per
      rank in `.worker_failures` (rank 0's is taken, else the lowest rank's);
    - `ControllerError` (Ray Train's controller failed): `.controller_failure`;
    - `UserExceptionWithTraceback` (Ray Train, internal): `._base_exc`.
    Exceptions from Ray itself are followed through `__cause__` too. An
    exception of ours that names its cause (`raise FileError(...) from err`)
    is kept: its message is the one written for the user. Duck-typed: nothing
    here imports Ray, so the CLI can call it for any error.
    """
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = _wrapped(err)
        if inner is None and _from_ray(err):
            inner = err.__cause__
        if not isinstance(inner, BaseException):
            return err
        err = inner
    return err


def _wrapped(err: BaseException) -> BaseException | None:
    failures = getattr(err, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        return failures[min(failures)]
    for attribute in ("cause", "controller_failure", "_base_exc"):
        inner = getattr(err, attribute, None)
        if isinstance(inner, BaseException) and _from_ray(err):
            return inner
    return None


def _from_ray(err: BaseException) -> bool:
    """Raised by Ray (a RayTaskError instance has the cause's class too, and Ray's class first)."""
    return any(cls.__module__.split(".")[0] == "ray" for cls in type(err).__mro__[:2])


def one_line(err: BaseException) -> str:
    """`Type: message` of the worker's exception (`user_error`), on one line.

    A message that holds a traceback (Ray's wrappers without their cause)
    gives its last line, the original exception's `Type: message`; any other
    message has its lines joined.
    """
    err = user_error(err)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any(line.startswith(("Traceback (most recent call last)", 'File "')) for line in lines):
        if re.match(r"[\w.]+: ", lines[-1]):  # "ValueError: ...", as a traceback ends
            return lines[-1]
        text = lines[-1]
    else:
        text = " ".join(lines)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ----------------------------------------------------------- console output

# The driver prints every batch of lines Ray's log monitor forwards through
# `ray._private.worker.print_worker_logs(data, print_file, ignore_prefix)`
# (looked up by name at each call, by `print_to_stdstream`): each worker's
# stdout and stderr (`data["is_err"]`), and the raylet's messages to the
# driver, such as "N PYTHON worker processes have been started on node ...",
# which arrive on the error channel with `data["pid"] == "raylet"` and go to
# stdout. `ray.init(log_to_driver=False)` would drop the workers' stdout with
# the rest, and no setting moves the raylet's messages. So, when the CLI asks
# (`send_ray_output`), a wrapper decides per batch: every line goes to the run's
# log file, and the console keeps what a worker wrote to its stdout, which
# holds our progress lines (`stages.tasks.say`) and nothing of Ray's (Ray's
# own lines in a worker, the C++ core worker's `core_worker.cc` ERROR lines
# and Python tracebacks included, are on its stderr). The autoscaler's lines are
# its whole monitor log; like Ray, the log and the console keep only its events
# (`filter_autoscaler_events`). With `verbose` the console shows everything,
# as Ray prints it. On a stream that is not a terminal the "(task pid=N)"
# prefixes come without colour codes, whether or not the CLI asked (a
# benchmark's output piped to a file too).
COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"
_ray_output: tuple[TextIO, bool] | None = None  # (log file, verbose), set by `send_ray_output`


def send_ray_output(log: TextIO, verbose: bool) -> None:
    """In this process from now on: what Ray forwards from its workers is written to `log` (see above).

    Takes effect at the next `route_worker_output` (which `pipeline.ray_session.init_ray`
    calls after `ray.init`): importing Ray here would cost a command that needs no Ray seconds.
    """
    global _ray_output
    _ray_output = (log, verbose)


def route_worker_output() -> None:
    """In the driver, once Ray is imported: route the workers' lines as `send_ray_output` asked.

    Nothing asked (a benchmark, a notebook): Ray prints everything as it does,
    only without colour codes where the stream is not a terminal.
    """
    log, verbose = _ray_output or (None, True)
    from ray._private import worker as ray_worker  # an import statement, not importlib: the type checker then holds the wrapper to Ray's signature

    original = getattr(ray_worker.print_worker_logs, "__wrapped__", ray_worker.print_worker_logs)

    @functools.wraps(original)
    def print_worker_logs(data: dict, print_file, ignore_prefix: bool = False) -> None:
        lines = data.get("lines", [])
        # The autoscaler's whole monitor log arrives; Ray prints only the events in it. Filtering
        # here uses up Ray's one "Tip:" line, so only where this wrapper reads the events.
        if data.get("pid") == "autoscaler" and (log is not None or not verbose):
            lines = [line for line in ray_worker.filter_autoscaler_events(lines) if not line.startswith("Tip: ")]
        if log is not None and not log.closed:  # Ray's printing thread can outlive the command's log (closed after its last line)
            origin = worker_origin(data)
            log.write("".join(f"{origin} {line}\n" for line in lines))
            log.flush()
        # The autoscaler's events (nodes added, requests no node type can fulfil)
        # are what a driver waiting for resources on a cluster waits on: the
        # console shows them too (Ray's printer filters the events again itself).
        if verbose or is_worker_stdout(data) or (data.get("pid") == "autoscaler" and lines):
            # Ray colours the "(task pid=N)" prefix unless RAY_COLOR_PREFIX=0, which it
            # reads at each call: escape codes are for a terminal, not a file or a pipe.
            plain = contextlib.nullcontext() if is_terminal(print_file) else environment(COLOR_PREFIX_ENV, "0", keep_user_value=False)
            with plain:
                original(data, print_file, ignore_prefix)

    ray_worker.print_worker_logs = print_worker_logs


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


def is_worker_stdout(data: dict) -> bool:
    """A batch a worker process wrote to its stdout (not its stderr, not the raylet's or the autoscaler's messages)."""
    return not data.get("is_err") and data.get("pid") not in ("raylet", "autoscaler")


def worker_origin(data: dict) -> str:
    """`(task_or_actor pid=N)` as Ray prefixes a forwarded line, without its colours."""
    name = data.get("actor_name") or data.get("task_name")
    pid = data.get("pid")
    stream = "stderr" if data.get("is_err") else "stdout"
    return f"({name} pid={pid} {stream})" if name else f"({pid} {stream})"
