"""How the student runs on Ray Train: a TorchTrainer with per-epoch checkpoints.

`fit` builds a TorchTrainer whose run name is tied to the stage fingerprint,
so calling it again after a killed driver resumes from the last checkpoint
(Ray Train's snapshot under `run_dir/ray/<name>`, on whatever storage the run
directory is: `lfme.storage.arrow_filesystem`), and returns the state saved in
the final checkpoint. Used by the distill stage for a student of several
workers and by each sweep trial of several workers. In the workers: rank/world/device
(`worker_setup`) and the per-epoch checkpoint (`EpochCheckpoints`, which `fit`
hands the loop in its config): rank 0 writes the whole training state, every
rank reports (the report is a barrier). On Ctrl-C `fit` aborts its Ray Train
run.

`fit` with `num_workers=0` is Ray Train's local mode: the loop runs in the
calling process, without Ray actors (no `ray.init()` needed), through the same
`ray.train` calls. It is the plain-PyTorch reference of
benchmarks/speed/ (part (c)); nothing is persisted to storage and nothing resumes.

Plain Ray tasks use `stages.tasks`, which does not import Ray Train; so does
the distill stage's one-worker student (`stages.distill` says why).
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import torch

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from lfme import storage
from lfme.engine import NonFiniteLossError, rng_state, set_rng_state
from lfme.loop import LoopState, load_state, report_metrics, state_dict
from rundir.layout import STATE_FILE
from rundir.sections import Resources
from stages import ray_compat
from stages.tasks import say

RNG_PREFIX = "rng-rank"  # a rank's RNG state in a checkpoint folder: `rng_file`
CHECKPOINTS_KEY = "checkpoints"  # where `fit` puts the loop's EpochCheckpoints in its config
DIVERGED_NOTE = "diverged.txt"  # beside a run's checkpoints: why its loop stopped (`EpochCheckpoints.stop_diverged`)

# On Ctrl-C: how long `fit` waits for Ray Train to stop its workers before the
# driver goes on stopping (the CLI promises an exit within 10 s of Ctrl-C).
ABORT_WAIT_S = 3.0


@dataclass(frozen=True)
class EpochCheckpoints:
    """A Ray Train loop's epoch checkpoints (`lfme.loop.Checkpoints`): restored at the start, reported after each epoch.

    `local_dir` is set in Ray Train's local mode only. There a reported
    checkpoint stays a reference to the caller's directory (distributed mode
    copies it to storage during the report), so it must outlive the report for
    `fit` to read the final state: `fit` owns that directory and every epoch
    overwrites it.
    """

    local_dir: str | None = None
    divergence_note: str | None = None  # where `stop_diverged` leaves its message for `fit`

    def restore(self, model, optimizer, scheduler) -> LoopState | None:
        """Load the last checkpoint into model, optimiser and scheduler, and this rank's RNG state.

        None on a fresh start; after a killed driver or a failed worker, the state to resume from.
        """
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        rank = ray.train.get_context().get_world_rank()
        with checkpoint.as_directory() as directory:
            saved = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
            rng = Path(directory) / rng_file(rank)
            if rng.exists():  # absent when the worker group grew since the checkpoint
                set_rng_state(torch.load(rng, weights_only=False))
        return load_state(saved, model, optimizer, scheduler)

    def stop_diverged(self, rank: int, message: str) -> None:
        """Instead of `save`, for an epoch whose loss went non-finite: no checkpoint; `fit` then raises `message`.

        Every rank calls it and then ends its loop, so the run finishes with
        the last good checkpoint as its latest. Raising in the workers instead
        would make Ray Train restart them from that checkpoint, `max_failures`
        times, into the same divergence. Ray Train's result carries only the
        metrics of checkpointed reports, so the message goes by a file.
        """
        if rank == 0 and self.divergence_note is not None:
            storage.write_text_atomic(self.divergence_note, message)

    def save(self, state: LoopState, model, optimizer, scheduler) -> None:
        """Checkpoint the epoch and report it with its epoch, loss and val_acc (a barrier over all ranks).

        Rank 0 writes the training state; every rank writes its own RNG state
        (augmentation and sampling streams differ per rank), and Ray Train merges
        the ranks' files into one checkpoint directory.
        """
        rank = ray.train.get_context().get_world_rank()
        if self.local_dir is not None:
            _write_and_report(self.local_dir, state, model, optimizer, scheduler, rank)
        else:  # Ray Train copies the directory into the run's storage during the report
            with tempfile.TemporaryDirectory() as directory:
                _write_and_report(directory, state, model, optimizer, scheduler, rank)


def fit(
    loop: Callable[[dict], None],
    loop_config: dict,
    resources: Resources,
    name: str,
    storage_path: str,
    max_failures: int,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Run `loop` on `resources.num_workers` Ray Train workers; return the last checkpoint's state.

    `callbacks`: Ray Train user callbacks, e.g. the one a Tune trial needs to
    pass each epoch's report on to Tune (`pipeline/tune.py`).

    `resources.num_workers == 0` (not a config value: the config asks for at
    least one worker) runs `loop` here, in Ray Train's local mode: one process,
    no actors, no checkpoint in `storage_path`, no restart on failure.
    """
    run = storage.join(storage_path, name)
    note = storage.join(run, DIVERGED_NOTE)
    storage_filesystem, storage_path = storage.arrow_filesystem(storage_path)
    worker_resources = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        worker_resources["GPU"] = resources.gpus_per_worker

    def trainer(local_dir: str | None) -> TorchTrainer:
        return TorchTrainer(
            loop,
            train_loop_config={**loop_config, CHECKPOINTS_KEY: EpochCheckpoints(local_dir, note)},
            # gloo on CPU, NCCL when the workers hold GPUs.
            torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=resources.num_workers, use_gpu=resources.use_gpu, resources_per_worker=worker_resources
            ),
            # ray.train's RunConfig is Ray Train v2's when it runs; the type checker sees the v1 class, which has no logging_config.
            run_config=RunConfig(  # type: ignore[call-arg]
                name=name,
                storage_path=storage_path,
                storage_filesystem=storage_filesystem,
                failure_config=FailureConfig(max_failures=max_failures),
                # The newest two: the last is what we resume from, the one before it
                # survives a kill in the middle of writing the last.
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                # Our workers print one progress line per epoch; Ray Train's own
                # per-report INFO lines would drown them.
                logging_config=LoggingConfig(log_level="WARNING"),
                callbacks=callbacks,
            ),
        )

    if resources.num_workers > 0:
        repair_record(run)
        return _fit_on_workers(trainer(None), name, note)
    threads = torch.get_num_threads()  # `worker_setup` sizes them for the loop, in this process
    with tempfile.TemporaryDirectory() as directory:
        try:
            return final_state(trainer(directory).fit(), name, note)
        finally:
            torch.set_num_threads(threads)


def repair_record(run: str) -> None:
    """Where a kill cut short Ray Train's record of run folder `run`: rebuild it from the newest whole checkpoint.

    The run then resumes from that checkpoint as from an intact record. The
    checkpoint folders the new record does not name are removed (Ray Train
    never prunes folders its record does not list); without a whole one the
    record goes too and the run starts from epoch 1. `stages.ray_compat` says
    why records break.
    """
    if not ray_compat.train_record_is_damaged(run):
        return
    folders = [n for n in storage.list_names(run) if n.startswith("checkpoint_") and n != ray_compat.TRAIN_RECORD]
    histories = {folder: history for folder in folders if (history := whole_checkpoint(storage.join(run, folder)))}
    # The furthest epoch; of equals (a finished run's repeated last report), the later folder (named by its time).
    newest = max(histories, key=lambda folder: (len(histories[folder]), folder), default=None)
    for folder in folders:
        if folder != newest:
            storage.remove(storage.join(run, folder))
    if newest is None:
        storage.remove(storage.join(run, ray_compat.TRAIN_RECORD))
        say(f"Ray Train's record of its checkpoints in {run} was cut short and no checkpoint there is whole: training from epoch 1")
        return
    history = histories[newest]
    ray_compat.write_train_record(run, newest, report_metrics(history[-1]), reports=len(history))
    say(f"Ray Train's record of its checkpoints in {run} was cut short (a kill while Ray rewrote it); "
        f"rebuilt, resuming from {newest} (epoch {history[-1]['epoch']})")


def whole_checkpoint(folder: str) -> list[dict] | None:
    """The epoch history of a checkpoint folder whose files all load (training state, every rank's RNG state), else None.

    Each rank copies its own files into the folder, so a kill can leave any of
    them missing or cut short. Only such damage counts: another error reading
    the storage (permissions, the network) is raised, never taken for it.
    """
    try:
        for name in storage.list_names(folder):
            if name.startswith(RNG_PREFIX):
                storage.load_torch(storage.join(folder, name))
        return storage.load_torch(storage.join(folder, STATE_FILE))["history"]
    except (FileNotFoundError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError):  # torch.load of a cut-short file
        return None


def _fit_on_workers(trainer: TorchTrainer, name: str, note: str) -> dict[str, Any]:
    with ray_compat.fast_train_polling(), ray_compat.driver_keeps_sigint() as controllers:
        try:
            result = trainer.fit()
        except KeyboardInterrupt:
            # Ctrl-C in the driver: stop the workers now. The last committed
            # checkpoint stays in storage, and the same run name resumes from it.
            ray_compat.abort_train_runs(controllers, timeout_s=ABORT_WAIT_S)
            raise
    return final_state(result, name, note)


def final_state(result, name: str, divergence_note: str) -> dict[str, Any]:
    """The state in the run's last checkpoint; NonFiniteLossError if the loop stopped on a diverged epoch."""
    if storage.exists(divergence_note):
        message = storage.read_text(divergence_note)
        storage.remove(divergence_note)  # the next attempt (after the user's fix) starts without it
        raise NonFiniteLossError(message)
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run '{name}' finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def worker_setup(cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this worker; torch threads sized to its CPU share."""
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    ray_compat.quiet_train_reports()
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def rng_file(rank: int) -> str:
    return f"{RNG_PREFIX}{rank}.pt"


def _write_and_report(directory: str, state: LoopState, model, optimizer, scheduler, rank: int) -> None:
    torch.save(rng_state(), Path(directory) / rng_file(rank))
    if rank == 0:
        torch.save(state_dict(state, model, optimizer, scheduler), Path(directory) / STATE_FILE)
    ray.train.report(report_metrics(state.history[-1]), checkpoint=Checkpoint.from_directory(directory))



