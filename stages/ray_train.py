"""The Ray Train plumbing the experts and distill stages share.

Driver side: `fit` builds a TorchTrainer whose run name is tied to the stage
fingerprint, so calling it again after a killed driver resumes from the last
checkpoint (Ray Train's snapshot under `run_dir/ray/<name>`, on whatever
storage the run directory is: `lfme.storage.arrow_filesystem`), and returns the
state saved in the final checkpoint.

Worker side: rank/world/device, a sum over workers, and the per-epoch
checkpoint: rank 0 writes the whole training state, every rank reports (the
report is a barrier).

`fit` with `num_workers=0` is Ray Train's local mode: the loop runs in the
calling process, without Ray actors (no `ray.init()` needed), through the same
`ray.train` calls. It is the plain-PyTorch reference of
benchmarks/speed.py; nothing is persisted to storage and nothing resumes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.execution import context as ray_train_context

from lfme import storage
from lfme.engine import rng_state, set_rng_state
from lfme.precision import Precision, resolve
from pipeline.config import Resources

STATE_FILE = "state.pt"

# Ray Train's controller takes a worker's report only when it polls the worker
# group, every 2 s by default, and the worker's next report waits for that (its
# result queue holds one): every epoch shorter than the interval is stretched
# to it (the default run's 0.3 s student epochs took 1.8 s). Polling every
# 0.2 s costs the controller a few remote calls per second. Ray Train reads the
# variable in the driver and passes it on to its controller; a value set in
# the environment is kept.
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = "0.2"

# Local mode only: the directory `report_epoch` writes each checkpoint into.
# Ray Train's local mode keeps a reported checkpoint as a reference to the
# caller's directory (distributed mode copies it to storage during the report),
# so the directory must outlive the report for `fit` to read the final state.
# `fit` sets it to a directory of its own for the duration of a local run. One
# module-wide value suffices: Ray's local mode is itself one run per process.
_local_checkpoint_dir: Optional[str] = None


def fit(
    loop: Callable[[dict], None],
    loop_config: dict,
    resources: Resources,
    name: str,
    storage_path: str,
    max_failures: int,
    callbacks: Optional[list] = None,
) -> dict[str, Any]:
    """Run `loop` on `resources.num_workers` Ray Train workers; return the last checkpoint's state.

    `callbacks`: Ray Train user callbacks, e.g. the one a Tune trial needs to
    pass each epoch's report on to Tune (`pipeline/tune.py`).

    `resources.num_workers == 0` (not a config value: the config asks for at
    least one worker) runs `loop` here, in Ray Train's local mode: one process,
    no actors, no checkpoint in `storage_path`, no restart on failure.
    """
    os.environ.setdefault(POLL_INTERVAL_ENV, POLL_INTERVAL_S)
    storage_filesystem, storage_path = storage.arrow_filesystem(storage_path)
    worker_resources = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        worker_resources["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        # gloo on CPU, NCCL when the workers hold GPUs.
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.use_gpu, resources_per_worker=worker_resources
        ),
        run_config=RunConfig(
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
        return final_state(trainer.fit(), name)
    global _local_checkpoint_dir
    threads = torch.get_num_threads()  # `worker_setup` sizes them for the loop, in this process
    with tempfile.TemporaryDirectory() as directory:
        _local_checkpoint_dir = directory
        try:
            return final_state(trainer.fit(), name)
        finally:
            _local_checkpoint_dir = None
            torch.set_num_threads(threads)


def final_state(result, name: str) -> dict[str, Any]:
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run '{name}' finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def worker_setup(cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this worker; torch threads sized to its CPU share."""
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    # Ray 2.60 logs every report at INFO under a logger named by its file path
    # (`getLogger(__file__)` in the Train context module), which
    # LoggingConfig(WARNING) does not reach; our progress line says the same.
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


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


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor (on the worker's device: NCCL reduces only CUDA tensors) over the workers."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def restore_training(model, optimizer, scheduler) -> Optional[dict[str, Any]]:
    """Load the last checkpoint into model, optimiser and scheduler, and this rank's RNG state.

    Returns the checkpoint's state (epoch, history, ...) when the run is
    resuming (after a killed driver or a failed worker), None on a fresh start.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    rank = ray.train.get_context().get_world_rank()
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
        rng = Path(directory) / rng_file(rank)
        if rng.exists():  # absent when the worker group grew since the checkpoint
            set_rng_state(torch.load(rng, weights_only=False))
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


def report_epoch(metrics: dict[str, Any], model, optimizer, scheduler, rank: int, **extra: Any) -> None:
    """Checkpoint the epoch and report it (a barrier over all ranks).

    Rank 0 writes the training state; every rank writes its own RNG state
    (augmentation and sampling streams differ per rank), and Ray Train merges
    the ranks' files into one checkpoint directory.
    """
    if _local_checkpoint_dir is not None:  # local mode: overwritten each epoch, read by `fit` at the end
        write_and_report(_local_checkpoint_dir, metrics, model, optimizer, scheduler, rank, **extra)
    else:  # Ray Train copies the directory into the run's storage during the report
        with tempfile.TemporaryDirectory() as directory:
            write_and_report(directory, metrics, model, optimizer, scheduler, rank, **extra)


def write_and_report(directory: str, metrics: dict[str, Any], model, optimizer, scheduler, rank: int, **extra: Any) -> None:
    torch.save(rng_state(), Path(directory) / rng_file(rank))
    if rank == 0:
        state = {
            "epoch": metrics["epoch"],
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **extra,
        }
        torch.save(state, Path(directory) / STATE_FILE)
    ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))


def say(line: str) -> None:
    """Print a progress line once.

    Ray Train patches `print` in its workers to log *and* echo, which the
    driver shows twice; writing to the stream directly shows it once.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under a DistributedDataParallel wrapper, whose state_dict keys have no `module.`."""
    return model.module if hasattr(model, "module") else model
