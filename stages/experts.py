"""Stage 2, experts: one model per cardinality-adjacent subset, all trained at once.

Each expert is one Ray task (`experts.resources` says what it reserves: one
GPU per expert on a GPU cluster), all launched at once. An expert sees only
its subset's classes, labels re-indexed within the subset, plain
cross-entropy with instance sampling (the paper's "no bells and whistles").
The weights with the best validation accuracy on the subset (predicting among
the subset's classes, which SpES compares the student against) are saved as
`experts/<name>/model.pt`.

`experts.init: joint` (not the paper: Hinton et al.'s specialists, 2015)
first trains one model on the whole long-tailed training set with
class-balanced sampling (the official class cycle, 4 instances a group), with
the experts' recipe, as `experts/_joint/` (a task like an expert's:
checkpointed every epoch, resumed, kept while the stage's settings hold).
Each expert then starts from its weights, the classifier cut to the expert's
classes (`lfme.models.specialist_weights`), and fine-tunes on its subset,
keeping its best validation epoch as above.

Why a plain task and not a Ray Train run: an expert is one worker with no
collective to set up, and a Ray Train fit starts a controller and four helper
actors beside it, each a new process importing Ray Train (about 20 s of
start-up per expert on 2 cores, 3x that for three experts at once, against
seconds of training on the default run). A task runs on a pooled Ray worker
that the cache and evaluate stages' tasks then reuse with torch already
imported. What Ray Train gave is kept: every epoch writes a checkpoint
(`experts/<name>/checkpoint.pt`: model, optimiser, scheduler, history, best
weights, RNG state, and the stage fingerprint it belongs to); a worker that
dies makes Ray retry the task (`experts.max_failures` times), and the retry,
like a new `lfme run` after a killed driver, continues from that checkpoint.
Ctrl-C in the driver cancels every running expert task at once; each keeps its
last epoch's checkpoint, and the same command continues from there. A failed
expert is named on its own line; the stage then raises the first failure as
the worker raised it.
"""

from __future__ import annotations

import math
import time

import ray
from torch.utils.data.distributed import DistributedSampler

from lfme import storage
from lfme.engine import (
    NonFiniteLossError,
    cross_entropy_loss,
    divergence_message,
    epochs_for_budget,
    make_optimizer,
    make_scheduler,
    predict,
    seed_everything,
    train_epoch,
)
from lfme.loop import EpochResult, LoopState, run_epochs
from lfme.models import build_model, specialist_weights
from lfme.sampling import DistributedClassBalancedSampler
from lfme.scalars import ScalarLog
from lfme.subsets import Subset
from rundir.config import Config
from rundir.context import StageContext
from rundir.data import make_loader, restrict_to_subset
from rundir.layout import EXPERT_MODEL, expert_checkpoint, expert_dir, expert_result, load_split, read_split, save_expert, tensorboard_dir
from stages import ray_compat, tasks

# The joint model of `experts.init: joint`, trained like an expert on every class; not a subset name
# (the split names subsets by shot group or s<k>).
JOINT = "_joint"


def validation_accuracy(model, loader, device, precision) -> float:
    """Top-1 on the subset's validation images (the split gives every subset some: stages.split.check_validation_covers)."""
    pred = predict(model, loader, device, precision)
    return float((pred.logits.argmax(1) == pred.labels).mean())


def expert_scalars(record: dict) -> dict:
    """What TensorBoard shows of an expert's history record."""
    return {key: record[key] for key in ("loss", "train_acc", "val_acc", "lr", "seconds")}


def expert_record(
    fingerprint: str, subset: Subset, history: list[dict], best: dict, steps_per_epoch: int, precision: str, device, started_at: float
) -> dict:
    """`experts/<name>/result.json`: the best epoch, the history, and where and when this attempt ran."""
    return {
        "fingerprint": fingerprint,
        "subset": subset.name,
        "classes": list(subset.classes),
        "val_accuracy": best["val_acc"],
        "best_epoch": best["epoch"],
        "epochs": len(history),
        "steps": len(history) * steps_per_epoch,  # SGD steps taken: what experts.min_steps budgets
        "precision": precision,
        # The GPU ids Ray gave the task (a fractional share shows as the same id
        # in several experts) and the device torch used, which is the CPU when
        # no CUDA device is visible.
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "device": str(device),
        "started_at": started_at,
        "finished_at": time.time(),
        "history": history,
    }


def training_sampler(subset: Subset, labels, seed: int):
    """An expert's instance sampling, or the joint model's class-balanced one (the generalist of every class).

    One replica: the sampler is here for its epoch-seeded order, which a resumed run repeats exactly.
    """
    if subset.name == JOINT:
        return DistributedClassBalancedSampler(labels, 1, 0, samples_per_class=4, seed=seed, draw="cycle")
    # torch annotates a Dataset; the sampler takes only len() of it.
    return DistributedSampler(range(len(labels)), num_replicas=1, rank=0, shuffle=True, seed=seed)  # type: ignore[arg-type]


def train_expert(cfg: Config, run_dir: str, subset: Subset, fingerprint: str) -> dict:
    """Train (or finish training) the expert of one subset; write its model and result; return the result."""
    train_cfg = cfg.experts
    tag = f"expert {subset.name}"
    started_at = time.time()
    device, precision = tasks.task_setup(train_cfg.resources.cpus_per_worker, cfg.precision, tag)
    seed_everything(tasks.rank_seed(cfg.seed, 0))

    split = load_split(run_dir, cfg.data)
    train = restrict_to_subset(split.train, subset.classes)
    val = restrict_to_subset(split.val, subset.classes)
    sampler = training_sampler(subset, train.labels, cfg.seed)
    train_loader = make_loader(train, cfg.data, True, train_cfg.batch_size, sampler=sampler, device=device)
    val_loader = make_loader(val, cfg.data, False, cfg.evaluate.batch_size, device=device)

    epochs = epochs_for_budget(len(train), train_cfg.batch_size, train_cfg.epochs, train_cfg.min_steps)
    model = build_model(cfg.model.arch, len(subset.classes), in_channels=split.channels, pretrained=cfg.model.pretrained)
    model = precision.prepare(model.to(device))
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.momentum, train_cfg.weight_decay)
    scheduler = make_scheduler(optimizer, train_cfg.lr_schedule, epochs, train_cfg.milestones, train_cfg.gamma)
    scaler = precision.grad_scaler()

    def fresh() -> LoopState:
        if train_cfg.init == "joint" and subset.name != JOINT:  # a specialist starts from the joint model
            joint = storage.load_torch(storage.join(expert_dir(run_dir, JOINT), EXPERT_MODEL))
            model.load_state_dict(specialist_weights(joint["model"], model, subset.classes))
        return LoopState()

    def one_epoch(epoch: int, state: LoopState) -> EpochResult:
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_epoch(model, train_loader, optimizer, cross_entropy_loss, device, precision=precision, scaler=scaler)
        if not math.isfinite(stats.loss):  # not retried: the same epoch would diverge again
            raise NonFiniteLossError(divergence_message(f"experts: {subset.name}", epoch, stats.loss, "experts.lr"))
        scheduler.step()
        return EpochResult(stats, validation_accuracy(model, val_loader, device, precision), {"lr": lr})

    checkpoints = tasks.FileCheckpoints(expert_checkpoint(run_dir, subset.name), fingerprint, tag)
    with ScalarLog(tensorboard_dir(run_dir, "experts", subset.name), storage.name(run_dir), f"experts/{subset.name}") as scalars:
        state = run_epochs(
            epochs, model, optimizer, scheduler, checkpoints, one_epoch,
            tag=tag, fresh=fresh, keep_best=True, say=tasks.say, scalars=scalars, scalars_of=expert_scalars,
        )
    best = state.best
    assert best is not None  # keep_best, and at least one epoch trained
    result = expert_record(fingerprint, subset, state.history, best, len(train_loader), precision.name, device, started_at)
    return save_expert(run_dir, subset, cfg.model.arch, best["model"], result)


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    split = read_split(ctx.run_dir)
    if cfg.experts.init == "joint":  # the specialists' common start, before any of them
        train_all(ctx, [Subset(JOINT, tuple(range(split.num_classes)))])
    results = train_all(ctx, split.subsets)
    return {f"{s.name}_val_acc": results[s.name]["val_accuracy"] for s in split.subsets}


def train_all(ctx: StageContext, subsets: list[Subset]) -> dict[str, dict]:
    """Each subset's expert, trained at once (`experts.max_concurrent`), or kept where trained with these settings."""
    cfg = ctx.config
    results: dict[str, dict] = {}
    pending: dict[ray.ObjectRef, str] = {}  # task -> the expert it trains
    for subset in subsets:
        result = expert_result(ctx.run_dir, subset.name, ctx.fingerprint)
        if result is not None:
            ctx.log(f"experts: {subset.name} already trained with these settings, kept")
            results[subset.name] = result
    todo = [s for s in subsets if s.name not in results]
    if not todo:
        return results
    concurrency = cfg.experts.max_concurrent or len(todo)
    ctx.log(f"experts: training {len(todo)} experts, {min(concurrency, len(todo))} at a time")
    task = tasks.training_task(train_expert, cfg.experts.resources, cfg.experts.max_failures)
    errors = {}
    with tasks.cancelled_on_interrupt(pending):  # Ctrl-C stops every expert at once; each keeps its last epoch's checkpoint
        while todo or pending:
            while todo and len(pending) < concurrency:
                subset = todo.pop(0)
                pending[task.remote(cfg, ctx.run_dir, subset, ctx.fingerprint)] = subset.name
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ref)
            try:  # every expert finishes or fails before the stage reports
                results[name] = ray.get(ref)
                ctx.log(f"experts: {name} done, best val acc {100 * results[name]['val_accuracy']:.1f}% at epoch {results[name]['best_epoch']}")
            except Exception as err:
                errors[name] = err
                ctx.log(f"experts: {name} failed: {ray_compat.one_line(err)}")
    if errors:
        # The first failure as the worker raised it (Ray's wrapper around it:
        # the CLI prints its cause on one line); the others were logged above.
        raise next(iter(errors.values()))
    return results
