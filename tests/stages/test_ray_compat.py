"""stages.ray_compat without a Ray cluster: a worker's error as one line, Ray's output between console and log, SIGINT."""

from __future__ import annotations

import os
import signal
import sys

from stages import ray_compat


def test_a_worker_error_is_named_by_the_exception_the_worker_raised():
    from ray.exceptions import RayTaskError

    from stages.ray_compat import one_line, user_error

    cause = ValueError("experts/few/model.pt: truncated")
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: experts/few/model.pt: truncated'
    wrapped = RayTaskError("expert_logits", trace, cause).as_instanceof_cause()
    assert isinstance(wrapped, ValueError) and user_error(wrapped) is cause
    assert one_line(wrapped) == "ValueError: experts/few/model.pt: truncated"
    # Ray's own exceptions are followed through `__cause__` to the worker's.
    from ray.exceptions import RaySystemError

    chained = RaySystemError("lost")
    chained.__cause__ = wrapped
    assert user_error(chained) is cause
    # Ray's wrapper with no cause left: the last line of its traceback text.
    assert one_line(RayTaskError("f", trace, None)) == "ValueError: experts/few/model.pt: truncated"


def test_ray_train_errors_are_unwrapped_to_the_failing_rank():
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    from stages.ray_compat import one_line

    failures = {1: KeyError("sample 7"), 0: FileNotFoundError("cache/manifest.json not found")}
    assert one_line(WorkerGroupError("rank 0: ...\nrank 1: ...", failures)) == "FileNotFoundError: cache/manifest.json not found"
    assert one_line(ControllerError(RuntimeError("placement group removed"))) == "RuntimeError: placement group removed"


def test_our_error_that_names_its_cause_is_kept():
    from stages.ray_compat import one_line
    from stages.tasks import UnreadableFileError

    try:
        try:
            raise RuntimeError("PytorchStreamReader failed reading zip archive")
        except RuntimeError as err:
            raise UnreadableFileError("run/experts/few/model.pt: cannot read the weights") from err
    except UnreadableFileError as err:
        assert one_line(err) == "UnreadableFileError: run/experts/few/model.pt: cannot read the weights"
    assert one_line(ValueError("two\nlines")) == "ValueError: two lines"


def test_worker_output_split_between_console_and_log(tmp_path, monkeypatch):
    import ray._private.worker as ray_worker

    from stages import ray_compat

    printed = []
    monkeypatch.setattr(ray_worker, "print_worker_logs", lambda data, print_file, ignore_prefix=False: printed.append(data))
    batches = [
        {"lines": ["[expert few] epoch 1/2  loss 1.0"], "pid": 11, "task_name": "train_expert", "is_err": False},
        {"lines": ["[2026-12-02 06:07:53,323 E 8617 8695] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'"],
         "pid": 12, "actor_name": "TrainController", "is_err": True},
        {"lines": ["2 PYTHON worker processes have been started on node ..."], "pid": "raylet", "is_err": False},
    ]
    monkeypatch.setattr(ray_compat, "_ray_output", None)
    ray_compat.route_worker_output()  # nothing asked (a benchmark's Ray): everything printed, as Ray prints it
    assert hasattr(ray_worker.print_worker_logs, "__wrapped__")
    for data in batches:
        ray_worker.print_worker_logs(data, sys.stdout)
    assert printed == batches

    for verbose, shown in ((False, batches[:1]), (True, batches)):
        printed.clear()
        log = tmp_path / f"verbose-{verbose}.log"
        with open(log, "w") as stream:
            monkeypatch.setattr(ray_compat, "_ray_output", None)
            ray_compat.send_ray_output(stream, verbose)
            ray_compat.route_worker_output()
            ray_compat.route_worker_output()  # again (a second ray.init): one wrapper, not two
            for data in batches:
                ray_worker.print_worker_logs(data, sys.stdout)
        assert printed == shown
        text = log.read_text()
        assert "(train_expert pid=11 stdout) [expert few] epoch 1/2" in text
        assert "(TrainController pid=12 stderr) [" in text and "core_worker.cc" in text
        assert "(raylet stdout) 2 PYTHON worker processes" in text


def test_worker_prefixes_are_plain_text_on_a_stream_that_is_not_a_terminal(tmp_path, monkeypatch):
    import io

    import ray._private.worker as ray_worker

    from stages import ray_compat

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # Ray's own printer (an earlier test's Ray in this process may have wrapped it), restored after.
    monkeypatch.setattr(ray_worker, "print_worker_logs", getattr(ray_worker.print_worker_logs, "__wrapped__", ray_worker.print_worker_logs))
    monkeypatch.delenv(ray_compat.COLOR_PREFIX_ENV, raising=False)
    monkeypatch.setattr(ray_compat, "_ray_output", None)
    batch = {"lines": ["[expert few] epoch 1/2"], "pid": 11, "task_name": "train_expert", "is_err": False, "ip": "a", "localhost": "a"}
    rays_own = io.StringIO()
    ray_worker.print_worker_logs(batch, rays_own)
    assert rays_own.getvalue().startswith("\x1b[36m(train_expert")  # Ray colours whatever the stream

    ray_compat.route_worker_output()  # nothing asked (a benchmark piped to a file): plain too
    piped, terminal = io.StringIO(), Terminal()
    ray_worker.print_worker_logs(batch, piped)
    ray_worker.print_worker_logs(batch, terminal)
    assert piped.getvalue() == "(train_expert pid=11) [expert few] epoch 1/2\n"
    assert terminal.getvalue() == "\x1b[36m(train_expert pid=11)\x1b[0m [expert few] epoch 1/2\n"

    with open(tmp_path / "run.log", "w") as log:
        ray_compat.send_ray_output(log, verbose=False)
        ray_compat.route_worker_output()
        piped, terminal = io.StringIO(), Terminal()
        ray_worker.print_worker_logs(batch, piped)
        ray_worker.print_worker_logs(batch, terminal)
    assert piped.getvalue() == "(train_expert pid=11) [expert few] epoch 1/2\n"
    assert terminal.getvalue() == "\x1b[36m(train_expert pid=11)\x1b[0m [expert few] epoch 1/2\n"  # a terminal keeps Ray's colour
    assert ray_compat.COLOR_PREFIX_ENV not in os.environ



def test_ray_train_leaves_sigint_to_the_driver():
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from stages import ray_compat

    original = DataParallelTrainer.__dict__["_register_sigint_handler"]
    handler = signal.getsignal(signal.SIGINT)
    with ray_compat.driver_keeps_sigint() as controllers:
        DataParallelTrainer._register_sigint_handler(object(), "controller-handle")
        assert controllers == ["controller-handle"]
        assert signal.getsignal(signal.SIGINT) is handler
    assert DataParallelTrainer.__dict__["_register_sigint_handler"] is original


def test_an_upload_moves_each_file_whole_over_its_target(tmp_path):
    import pyarrow.fs

    staging = tmp_path / "staging"
    (staging / "trial_1").mkdir(parents=True)
    (staging / "experiment_state-1.json").write_text('{"trial_data": [1, 2]}')
    (staging / "trial_1" / "params.pkl").write_bytes(b"\x80\x05new")
    target = tmp_path / "trials"
    (target / "trial_1").mkdir(parents=True)
    (target / "experiment_state-1.json").write_text('{"trial_data": [1]}')
    reader = open(target / "experiment_state-1.json")  # a reader of the old file, as a resuming driver might be

    ray_compat.upload_atomically(str(staging), pyarrow.fs.LocalFileSystem(), str(target))

    assert reader.read() == '{"trial_data": [1]}'  # the old file was replaced by a rename, not rewritten in place
    reader.close()
    assert (target / "experiment_state-1.json").read_text() == '{"trial_data": [1, 2]}'
    assert (target / "trial_1" / "params.pkl").read_bytes() == b"\x80\x05new"
    assert sorted(p.name for p in target.rglob("*")) == ["experiment_state-1.json", "params.pkl", "trial_1"]  # no temporary left
    ray_compat.upload_atomically(str(staging / "trial_1" / "params.pkl"), None, str(tmp_path / "one" / "params.pkl"))
    assert (tmp_path / "one" / "params.pkl").read_bytes() == b"\x80\x05new"


def test_tune_uploads_are_atomic_only_inside_the_block():
    from ray.train._internal.storage import _FilesystemSyncer, _upload_to_fs_path

    syncer = _FilesystemSyncer(storage_filesystem=None)
    assert syncer._sync_up_command("/staging", "/trials")[0] is _upload_to_fs_path
    with ray_compat.atomic_tune_uploads():
        command, kwargs = syncer._sync_up_command("/staging", "/trials")
        assert command is ray_compat.upload_atomically and kwargs == {"local_path": "/staging", "fs": None, "fs_path": "/trials"}
        assert syncer._sync_up_command("/staging", "/trials", exclude=["*.png"])[0] is _upload_to_fs_path  # Ray's, with its exclusions
    assert syncer._sync_up_command("/staging", "/trials")[0] is _upload_to_fs_path
