"""The one epoch loop of every model the pipeline trains, and what its checkpoints hold.

An expert (a Ray task, `stages.experts`) and the student (a Ray Train worker,
`stages.distill`) run the same loop: restore the last epoch checkpoint if
there is one (else start `fresh`), then per epoch train, step the scheduler
and validate (the caller's `one_epoch`), append the epoch's record to the history, keep the best validation epoch (when
asked), print the progress line, write the scalars, and checkpoint.

An epoch checkpoint holds the model, optimiser and scheduler state and the
`LoopState`:

    history   one record per finished epoch: epoch, loss, train_acc, val_acc,
              the caller's fields, seconds
    best      {"epoch", "val_acc", "model"} of the best validation epoch so far
              (`keep_best`), else None
    carry     what the caller passes from one epoch to the next (the student's
              expert weights w_l, computed from this epoch's validation)

A loop resumes at epoch len(history) + 1. Where checkpoints live is the
caller's (`Checkpoints`): one file per expert, Ray Train's reported
checkpoints for the student; both lay the state out with `state_dict` and read
it back with `load_state`. Restoring the RNG state is theirs too (one stream
per process): a loop that is one process (an expert's task, a one-worker
sweep trial) saves `process_state_dict`, which holds it, and reads it back
with `load_process_state`; each Ray Train rank writes its own beside rank 0's
state.

An epoch's `seconds` run from the previous epoch's checkpoint to its own: its
training and validation, and the previous checkpoint (written, and for the
student reported to Ray Train). Its own checkpoint holds the history, so it
cannot time itself; the first epoch after a (re)start counts no checkpoint.

A non-finite training loss is the caller's to detect (`one_epoch` raises
`lfme.engine.NonFiniteLossError`): the loop then ends without checkpointing
that epoch, so the last good checkpoint stays the latest.

Plain PyTorch, no Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lfme.engine import EpochStats, progress_line, rng_state, set_rng_state
from lfme.scalars import ScalarLog


@dataclass
class LoopState:
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    carry: dict = field(default_factory=dict)


@dataclass
class EpochResult:
    """What `one_epoch` returns: its training pass, its validation accuracy, and the record's other fields."""

    stats: EpochStats
    val_acc: float
    record: dict = field(default_factory=dict)


class Checkpoints(Protocol):
    def restore(self, model: torch.nn.Module, optimizer, scheduler) -> LoopState | None:
        """Load the last checkpoint into model, optimiser and scheduler (and the RNG); None on a fresh start."""

    def save(self, state: LoopState, model: torch.nn.Module, optimizer, scheduler) -> None:
        """Checkpoint the state after its last epoch."""


def bare(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DistributedDataParallel wrapper, whose state_dict keys have no `module.`."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def state_dict(state: LoopState, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """An epoch checkpoint's contents (everything but the RNG state)."""
    return {
        "epoch": len(state.history),
        "model": bare(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": state.history,
        "best": state.best,
        "carry": state.carry,
    }


def process_state_dict(state: LoopState, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """The epoch checkpoint of a loop that is one process (an expert's task, a one-worker trial): `state_dict` and the RNG."""
    return {"rng": rng_state(), **state_dict(state, model, optimizer, scheduler)}


def load_process_state(saved: dict[str, Any], model: torch.nn.Module, optimizer, scheduler) -> LoopState:
    """`process_state_dict`'s inverse: this process's RNG streams set, then `load_state`."""
    set_rng_state(saved["rng"])
    return load_state(saved, model, optimizer, scheduler)


def report_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """What an epoch's report to Ray Train or Tune carries, from its history record (what a sweep's ASHA reads)."""
    return {key: record[key] for key in ("epoch", "loss", "val_acc")}


def load_state(saved: dict[str, Any], model: torch.nn.Module, optimizer, scheduler) -> LoopState:
    """`state_dict`'s inverse: model, optimiser and scheduler loaded; the loop's state returned."""
    bare(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return LoopState(saved["history"], saved["best"], saved["carry"])


def run_epochs(
    epochs: int,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    checkpoints: Checkpoints,
    one_epoch: Callable[[int, LoopState], EpochResult],
    *,
    tag: str,
    fresh: Callable[[], LoopState],
    keep_best: bool,
    say: Callable[[str], None] | None = None,
    scalars: ScalarLog | None = None,
    scalars_of: Callable[[dict], dict] = lambda record: {},
) -> LoopState:
    """Train epochs len(history) + 1 .. `epochs` from the last checkpoint, else from `fresh()`; return the final state.

    `fresh` is called only when there is no checkpoint (an expert loads the
    joint model's weights there, the student sets its first w_l). `say` and
    `scalars` are None in a process that does not report (the student's ranks
    other than 0). A loop resumed after its last epoch saves that epoch again:
    Ray Train resumes a finished run too, and a restored Tune trial otherwise
    keeps the result it had before the kill, whose val_acc is older and whose
    checkpoint may have been pruned since.
    """
    state = checkpoints.restore(model, optimizer, scheduler)
    if state is None:
        state = fresh()
    elif say is not None:
        say(f"[{tag}] resuming after epoch {len(state.history)}")
    start, first_epoch = time.perf_counter(), len(state.history) + 1
    epoch_start = start
    for epoch in range(first_epoch, epochs + 1):
        result = one_epoch(epoch, state)
        state.history.append(
            {
                "epoch": epoch,
                "loss": result.stats.loss,
                "train_acc": result.stats.accuracy,
                "val_acc": result.val_acc,
                **result.record,
                "seconds": time.perf_counter() - epoch_start,
            }
        )
        if keep_best and (state.best is None or result.val_acc > state.best["val_acc"]):
            weights = {k: v.detach().cpu().clone() for k, v in bare(model).state_dict().items()}
            state.best = {"epoch": epoch, "val_acc": result.val_acc, "model": weights}
        if say is not None:
            eta = (time.perf_counter() - start) / (epoch - first_epoch + 1) * (epochs - epoch)
            say(progress_line(tag, epoch, epochs, result.stats, result.val_acc, eta))
        if scalars is not None:
            scalars.write(epoch, scalars_of(state.history[-1]))
        epoch_start = time.perf_counter()
        checkpoints.save(state, model, optimizer, scheduler)
    if first_epoch > epochs and state.history:
        checkpoints.save(state, model, optimizer, scheduler)
    return state
