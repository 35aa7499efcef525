"""Stage 2, experts: one model per cardinality-adjacent subset, all trained at once.

Each expert is its own Ray Train run (its own workers and resources from
`experts.resources`), launched concurrently from driver threads. An expert sees
only its subset's classes, labels re-indexed within the subset, plain
cross-entropy with instance sampling (the paper's "no bells and whistles").
Every epoch is checkpointed; the weights with the best validation accuracy on
the subset (predicting among the subset's classes, which SpES compares the
student against) are kept and saved as `experts/<name>/model.pt`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray.train.torch
import torch
from torch.utils.data.distributed import DistributedSampler

from lfme.engine import (
    cross_entropy_loss,
    make_optimizer,
    make_scheduler,
    predict,
    progress_line,
    seed_everything,
    train_epoch,
)
from lfme import storage
from lfme.models import build_model
from lfme.subsets import Subset
from pipeline.config import Config
from pipeline.context import StageContext
from stages import ray_train
from stages.data import load_split, make_loader, restrict_to_subset

MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"


def count_correct(model, loader, device) -> torch.Tensor:
    """[correct, total] of this worker's share, as a tensor to sum over workers."""
    pred = predict(model, loader, device)
    correct = int((pred.logits.argmax(1) == pred.labels).sum()) if len(pred.labels) else 0
    return torch.tensor([correct, len(pred.labels)], dtype=torch.float64, device=device)


def expert_loop(loop_config: dict) -> None:
    """Ray Train worker: train the expert of one subset."""
    cfg: Config = loop_config["config"]
    subset: Subset = loop_config["subset"]
    train_cfg = cfg.experts
    rank, world, device = ray_train.worker_setup(train_cfg.resources.cpus_per_worker)
    seed_everything(ray_train.rank_seed(cfg.seed, rank))

    split = load_split(loop_config["run_dir"], cfg.data)
    train = restrict_to_subset(split.train, subset.classes)
    val = restrict_to_subset(split.val, subset.classes)
    sampler = DistributedSampler(range(len(train)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    train_loader = make_loader(train, cfg.data, True, train_cfg.batch_size // world, sampler=sampler, every_epoch=True)
    val_loader = make_loader(val.subset(np.arange(rank, len(val), world)), cfg.data, False, cfg.evaluate.batch_size, every_epoch=True)

    model = build_model(cfg.model.arch, len(subset.classes), in_channels=split.channels, pretrained=cfg.model.pretrained)
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.momentum, train_cfg.weight_decay)
    scheduler = make_scheduler(optimizer, train_cfg.lr_schedule, train_cfg.epochs, train_cfg.milestones, train_cfg.gamma)

    state = ray_train.restore_training(model, optimizer, scheduler)
    if state is not None:
        history, best = state["history"], state["best"]
        ray_train.say(f"[expert {subset.name}] resuming after epoch {state['epoch']}")
    else:
        history, best = [], {"accuracy": -1.0, "epoch": 0, "model": None}

    start = time.perf_counter()
    first_epoch = len(history) + 1
    epoch_start = start  # `seconds` as in the distill loop: from the previous checkpoint to this one
    for epoch in range(first_epoch, train_cfg.epochs + 1):
        sampler.set_epoch(epoch)
        stats = train_epoch(model, train_loader, optimizer, cross_entropy_loss, device)
        scheduler.step()
        correct, total = ray_train.all_reduce_sum(count_correct(model, val_loader, device)).tolist()
        val_acc = correct / max(total, 1)
        history.append(
            {"epoch": epoch, "loss": stats.loss, "train_acc": stats.accuracy, "val_acc": val_acc, "seconds": time.perf_counter() - epoch_start}
        )
        if val_acc > best["accuracy"]:
            bare = ray_train.unwrap(model)
            best = {"accuracy": val_acc, "epoch": epoch, "model": {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}}
        if rank == 0:
            eta = (time.perf_counter() - start) / (epoch - first_epoch + 1) * (train_cfg.epochs - epoch)
            ray_train.say(progress_line(f"expert {subset.name}", epoch, train_cfg.epochs, stats, val_acc, eta))
        metrics = {"epoch": epoch, "loss": stats.loss, "val_acc": val_acc}
        epoch_start = time.perf_counter()
        ray_train.report_epoch(metrics, model, optimizer, scheduler, rank, history=history, best=best)


def expert_dir(run_dir: str, name: str) -> str:
    return storage.join(run_dir, "experts", name)


def expert_is_done(run_dir: str, name: str, fingerprint: str) -> bool:
    result = storage.join(expert_dir(run_dir, name), RESULT_FILE)
    return storage.exists(result) and storage.read_json(result).get("fingerprint") == fingerprint


def train_expert(ctx: StageContext, subset: Subset) -> dict:
    cfg = ctx.config
    out = expert_dir(ctx.run_dir, subset.name)
    if expert_is_done(ctx.run_dir, subset.name, ctx.fingerprint):
        ctx.log(f"experts: {subset.name} already trained with these settings, kept")
        return storage.read_json(storage.join(out, RESULT_FILE))
    state = ray_train.fit(
        expert_loop,
        {"config": cfg, "subset": subset, "run_dir": ctx.run_dir},
        cfg.experts.resources,
        name=ctx.train_run_name(subset.name),
        storage_path=ctx.ray_storage,
        max_failures=cfg.experts.max_failures,
    )
    best = state["best"]
    storage.save_torch_atomic(
        storage.join(out, MODEL_FILE),
        {"arch": cfg.model.arch, "subset": subset.name, "classes": list(subset.classes), "model": best["model"]},
    )
    result = {
        "fingerprint": ctx.fingerprint,
        "subset": subset.name,
        "classes": list(subset.classes),
        "val_accuracy": best["accuracy"],
        "best_epoch": best["epoch"],
        "epochs": state["epoch"],
        "history": state["history"],
    }
    storage.write_json_atomic(storage.join(out, RESULT_FILE), result)
    ctx.log(f"experts: {subset.name} done, best val acc {100 * best['accuracy']:.1f}% at epoch {best['epoch']}")
    return result


def run(ctx: StageContext) -> dict:
    subsets = load_split(ctx.run_dir, ctx.config.data).subsets
    concurrency = ctx.config.experts.max_concurrent or len(subsets)
    ctx.log(f"experts: training {len(subsets)} experts, {concurrency} at a time")
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {s.name: pool.submit(train_expert, ctx, s) for s in subsets}
        errors = {}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as err:  # every expert finishes or fails before the stage reports
                errors[name] = err
    if errors:
        name, err = next(iter(errors.items()))
        raise RuntimeError(f"experts: expert '{name}' failed: {err}") from err
    return {f"{name}_val_acc": r["val_accuracy"] for name, r in results.items()}
