"""One epoch of training, prediction, optimiser and schedule: plain PyTorch.

The stages run these inside Ray Train workers; tests and notebooks run them in a
plain process. Nothing here knows about Ray or about distribution beyond taking
a model that may be wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from lfme.precision import FP32, Precision


@dataclass
class Batch:
    """One training batch as the loss sees it."""

    images: torch.Tensor  # on the device, as the model got them (live teachers run on them)
    labels: torch.Tensor  # on the device
    sample_ids: torch.Tensor  # int64, on the CPU (a cached teacher signal is looked up by them)
    views: torch.Tensor | None = None  # int64, on the CPU: the stored view each image replays (lfme.data.views)


# (float32 logits, batch) -> (scalar loss, dict of detached 0-d tensors for the log)
LossFn = Callable[[torch.Tensor, Batch], tuple[torch.Tensor, dict]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Everything random a resumed epoch must continue from."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, epochs: int, milestones: Iterable[int] = (), gamma: float = 0.1
) -> torch.optim.lr_scheduler.LRScheduler:
    """An epoch-wise schedule, stepped after each epoch's optimiser steps.

    The official LFME code steps its scheduler before the optimiser (one epoch
    early); stepping after is the PyTorch contract and the paper's recipe.
    """
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown lr schedule '{schedule}' (cosine, step, constant)")


def epochs_for_budget(num_images: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Epochs that give at least `min_steps` SGD steps, and never fewer than `epochs`.

    An epoch over n images at batch size b takes ceil(n / b) steps, so a
    fixed epoch count starves small training sets: at 8 epochs the CIFAR-10-LT
    few-shot expert (about 300 images, batch 128) takes 24 steps while the
    many-shot one takes 300. KD only helps where the expert is ahead of the
    student, so each expert gets max(epochs, ceil(min_steps / steps per
    epoch)) epochs; `min_steps: 0` keeps `epochs` for every expert.
    """
    steps_per_epoch = max(1, -(-num_images // batch_size))
    return max(epochs, -(-min_steps // steps_per_epoch))


def cross_entropy_loss(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict]:
    loss = nn.functional.cross_entropy(logits, batch.labels)
    return loss, {"ce": loss.detach()}


class NonFiniteLossError(FloatingPointError):
    """An epoch's training loss is NaN or infinite: the run diverged, and more epochs would train on garbage."""


def divergence_message(tag: str, epoch: int, loss: float, lr_key: str) -> str:
    """The one line a diverged run stops with: which stage, which epoch, what value, and what was kept."""
    kept = f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "nothing of this run was kept"
    return f"{tag}: epoch {epoch}: the training loss is {loss}; stopped before saving it ({kept}); try a lower {lr_key}"


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    samples: int
    seconds: float
    parts: dict  # mean of each scalar the loss function logged


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    device: torch.device,
    *,
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
) -> EpochStats:
    """One pass over `loader`, whose batches are (images, labels, sample_ids), or with replayed views
    (images, labels, sample_ids, views) (`lfme.data.views`).

    The model's forward runs under `precision` (lfme.precision);
    the loss sees its logits in float32, so softmaxes and KL terms keep full
    precision whatever the convolutions ran in. `scaler`: fp16's loss scaler.

    Nothing here waits for the device between steps: the loss, the correct
    count and the logged scalars are summed as tensors where they were
    computed and read (`.item()`) once, after the last batch, so a GPU runs
    ahead of the Python loop instead of stopping at every step.
    """
    model.train()
    start = time.perf_counter()
    total_loss, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long), 0
    parts_sum: dict[str, torch.Tensor] = {}
    for images, labels, sample_ids, *views in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images = precision.inputs(images)
        with precision.autocast():
            logits = model(images).float()
        loss, parts = loss_fn(logits, Batch(images, labels, sample_ids, views[0] if views else None))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = labels.shape[0]
        total_loss += loss.detach().float() * n
        correct += (logits.argmax(1) == labels).sum()
        seen += n
        for key, value in parts.items():
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                parts_sum[key] = parts_sum.get(key, 0.0) + value.detach().float() * n
    seen = max(seen, 1)
    return EpochStats(
        loss=total_loss.item() / seen,
        accuracy=correct.item() / seen,
        samples=seen,
        seconds=time.perf_counter() - start,
        parts={k: v.item() / seen for k, v in parts_sum.items()},
    )


@dataclass
class Predictions:
    logits: np.ndarray  # float32 (n, classes)
    labels: np.ndarray  # int64
    sample_ids: np.ndarray  # int64


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device, precision: Precision = FP32) -> Predictions:
    """The model's float32 logits over `loader`, its forward run under `precision`."""
    model.eval()
    logits, labels, ids = [], [], []
    for images, y, sample_ids in loader:
        with precision.autocast():
            out = model(precision.inputs(images.to(device, non_blocking=True)))
        logits.append(out.float().cpu())
        labels.append(y)
        ids.append(sample_ids)
    if not logits:
        return Predictions(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Predictions(
        torch.cat(logits).numpy(),
        torch.cat(labels).numpy().astype(np.int64),
        torch.cat(ids).numpy().astype(np.int64),
    )


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(tag: str, epoch: int, epochs: int, stats: EpochStats, val_acc: float, eta: float) -> str:
    """The per-epoch line every training stage prints: epoch, loss, accuracy, ETA."""
    return (
        f"[{tag}] epoch {epoch}/{epochs}  loss {stats.loss:.4f}  train acc {100 * stats.accuracy:.1f}%  "
        f"val acc {100 * val_acc:.1f}%  {stats.seconds:.1f}s/epoch  ETA {format_eta(eta)}"
    )
