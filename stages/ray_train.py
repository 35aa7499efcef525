"""The Ray Train plumbing the experts and distill stages share.

Driver side: `fit` builds a TorchTrainer whose run name is tied to the stage
fingerprint, so calling it again after a killed driver resumes from the last
checkpoint (Ray Train's snapshot under `run_dir/ray/<name>`), and returns the
state saved in the final checkpoint.

Worker side: rank/world/device, a sum over workers, and the per-epoch
checkpoint: rank 0 writes the whole training state, every rank reports (the
report is a barrier).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline.config import Resources

STATE_FILE = "state.pt"


def fit(
    loop: Callable[[dict], None],
    loop_config: dict,
    resources: Resources,
    name: str,
    storage_path: str,
    max_failures: int,
) -> dict[str, Any]:
    """Run `loop` on `resources.num_workers` Ray Train workers; return the last checkpoint's state."""
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
            failure_config=FailureConfig(max_failures=max_failures),
            # The newest two: the last is what we resume from, the one before it
            # survives a kill in the middle of writing the last.
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Our workers print one progress line per epoch; Ray Train's own
            # per-report INFO lines would drown them.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run '{name}' finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def worker_setup(cpus_per_worker: float) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this worker; torch threads sized to its CPU share."""
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor (on the worker's device: NCCL reduces only CUDA tensors) over the workers."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


def resume_state() -> Optional[dict[str, Any]]:
    """The state of the last checkpoint, if this run is resuming (after a kill or a worker failure)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def report_epoch(metrics: dict[str, Any], state: dict[str, Any], rank: int) -> None:
    """Checkpoint the epoch: rank 0 writes the state, all ranks report."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            torch.save(state, Path(directory) / STATE_FILE)
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


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
