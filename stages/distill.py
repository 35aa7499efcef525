"""Stage 4, distill: the student learns from the data and from the cached experts.

Ray Train with `distill.resources.num_workers` data-parallel workers (gloo on
CPU, NCCL on GPU). The workers of a node share one memory-mapped copy of the
teacher cache (`lfme.teacher_cache.map_cache`) and join it to their images by
`sample_id`, reading only the rows of their batches: no teacher runs.

One worker (`num_workers: 1`) is a plain Ray task instead, like an expert:
with no collective to set up, Ray Train would only add its start-up, a
controller and five helper actors, each a new process importing Ray Train
(measured on 2 cores: the default run's 3-epoch student, 0.3 s of training,
took the stage 12.9 s on one Ray Train worker, 5.8 s as a task). The task
runs the same loop (`train_student`), checkpoints each epoch to `distill/checkpoint.pt` (`stages.tasks.FileCheckpoints`: with
the stage fingerprint and the RNG state), and Ray retries it from there when
its worker dies (`distill.max_failures` times), as a new `lfme run` resumes
after a killed driver. A sweep's one-worker trial runs the same loop in its
own process (`train_alone`, with Tune's checkpoints: `pipeline.tune`). A run resumes only under the worker count it started
with: Ray Train's checkpoints and the task's file are not each other's.
Nothing here imports Ray Train at module level, so the task's process does not.

Loss per batch: mean_i v_i CE_i + sum_l w_l KD_l (`lfme.losses.DistillationLoss`,
built once; the schedules set its w_l and v_i each epoch).
After each epoch the validation set is scored over all workers; SpES sets the
next epoch's w_l from the student's accuracy on each subset against the
expert's (both read from the cache's validation rows); SpIS moves v_i one step
along its schedule. The checkpoint holds model, optimiser, scheduler, the w_l
history and the RNG state, so a killed or failed run continues where it was.

Every ablation of the paper's Table 3 is a switch: `sampling`, `kd`, `spes`,
`spis`, `schedule`. `teachers: live` runs the experts on each augmented batch
instead of reading their logits from the cache (the cache's accuracy cost).
A cache of augmented views (`cache.views`, `cache.allot`) replaces the
student's random augmentation when the student reads its KD targets from
it: each draw of an image replays one of its stored views and the teachers'
logits are read for that view (`lfme.data.views`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
import torch
from torch.utils.data.distributed import DistributedSampler

from lfme import storage
from lfme.engine import NonFiniteLossError, divergence_message, make_optimizer, make_scheduler, predict, seed_everything, train_epoch
from lfme.data.views import StoredViews
from lfme.evaluation import subset_accuracy
from lfme.loop import Checkpoints, EpochResult, LoopState, run_epochs
from lfme.losses import DistillationLoss, base_loss_offsets
from lfme.models import build_model
from lfme.precision import resolve
from lfme.scalars import ScalarLog
from lfme.sampling import DistributedClassBalancedSampler
from lfme.selfpaced import expert_weights, initial_instance_weights, scheduled_instance_weights
from lfme.subsets import Subset
from lfme.teachers import CachedTeachers, LiveTeachers
from lfme.teacher_cache import CacheMismatchError, TeacherRows, map_cache
from rundir.config import Config
from rundir.sections import DistillConfig
from rundir.context import StageContext
from rundir.data import make_loader
from rundir.layout import (
    cache_dir,
    history_file,
    load_expert,
    load_split,
    read_split,
    ray_storage,
    save_student,
    student_checkpoint,
    student_file,
    tensorboard_dir,
    verified_cache,
)
from stages import tasks


def expert_accuracies(val_rows: TeacherRows, subsets: list[Subset], chunk: int = 4096) -> list[float]:
    """Acc_E of each expert: its accuracy on its subset's validation samples, among its classes.

    A chunk of rows at a time: a float32 copy of the whole validation part
    would be the largest array a worker holds (iNaturalist 2018: 24,426 x 8,142).
    """
    correct, total = np.zeros(len(subsets)), np.zeros(len(subsets))
    for start in range(0, len(val_rows), chunk):
        positions = np.arange(start, min(start + chunk, len(val_rows)))
        logits, labels = val_rows.dense(positions), val_rows.labels[positions]
        for l, s in enumerate(subsets):
            n = int(np.isin(labels, s.classes).sum())
            if n:
                correct[l] += subset_accuracy(logits, labels, s.classes, restrict=True) * n
                total[l] += n
    return [c / t for c, t in zip(correct, total)]  # every subset has validation images (stages.split)


def epoch_length(cfg: DistillConfig, class_counts: np.ndarray) -> int:
    """Samples drawn per epoch (see `DistillConfig.epoch_length`).

    official: the official loop's int(N / batch) steps of a full batch, about
    N samples (its sampler's nominal max_count x C is never reached).
    """
    n = int(class_counts.sum())
    if cfg.epoch_length == "official":
        return max(1, n // cfg.batch_size) * cfg.batch_size
    return n


def make_sampler(cfg: DistillConfig, labels: np.ndarray, class_counts: np.ndarray, world: int, rank: int, seed: int):
    if cfg.sampling == "class":
        return DistributedClassBalancedSampler(
            labels, world, rank, cfg.samples_per_class, num_samples=epoch_length(cfg, class_counts), seed=seed,
            draw=cfg.class_draw,
        )
    # torch annotates a Dataset; the sampler takes only len() of it.
    return DistributedSampler(range(len(labels)), num_replicas=world, rank=rank, shuffle=True, seed=seed)  # type: ignore[arg-type]


def validation_counts(model, loader, num_classes: int, device, precision) -> torch.Tensor:
    """Per-class [correct, total] of this worker's share of the validation set (student among all C)."""
    pred = predict(model, loader, device, precision)
    counts = torch.zeros(2, num_classes, dtype=torch.float64)
    if len(pred.labels):
        hits = pred.logits.argmax(1) == pred.labels
        counts[0] = torch.from_numpy(np.bincount(pred.labels, weights=hits, minlength=num_classes))
        counts[1] = torch.from_numpy(np.bincount(pred.labels, minlength=num_classes).astype(np.float64))
    return counts.to(device)


def accuracy_of(counts: torch.Tensor, classes) -> float:
    """The student's accuracy on the validation images of `classes` (a subset: the split gives it some)."""
    return counts[0, list(classes)].sum().item() / counts[1, list(classes)].sum().item()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor (on the worker's device: NCCL reduces only CUDA tensors) over the workers; itself on one worker."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every worker when `flag` is True on any one of them."""
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def student_accuracies(model, val_loader, split, device, precision) -> tuple[float, list[float]]:
    """The student's validation accuracy over all ranks' shares, overall and on each subset's classes (SpES)."""
    counts = all_reduce_sum(validation_counts(model, val_loader, split.num_classes, device, precision)).cpu()
    return counts[0].sum().item() / max(counts[1].sum().item(), 1), [accuracy_of(counts, s.classes) for s in split.subsets]


def teacher_signal(cfg: Config, run_dir: str, split, train_rows: TeacherRows, device, precision):
    """The KD targets (`lfme.teachers`: the same call for cached rows and live experts; None without KD),
    and the stored views the student's loader replays when the targets are a views cache's (else None)."""
    if not cfg.distill.kd:
        return None, None
    if cfg.distill.teachers == "live":
        experts = [precision.prepare(load_expert(run_dir, s, split.channels, device)) for s in split.subsets]
        return LiveTeachers(experts, split.subsets, split.num_classes, precision).to(device), None
    views = StoredViews.of_rows(train_rows, cfg.seed) if train_rows.augmented else None
    return CachedTeachers(train_rows), views


def distillation_targets(cfg: Config, run_dir: str, split, expected: dict, device, precision):
    """What the student learns from, read from the teacher cache on this worker's node.

    Returns the loss (cross-entropy plus KD on the experts' targets), the
    experts' validation accuracies (SpES's reference), the initial instance
    weights v1 (SpIS; per cache row, like everything the loss looks up by
    sample id; None without SpIS) and the stored views the loader replays
    (None unless the targets are a views cache's).
    """
    dcfg = cfg.distill
    # Mapped from the node's one copy of the cache, not read into each worker.
    train_rows = map_cache(cache_dir(run_dir), "train", local_dir=cfg.cache.local_dir, **expected)
    val_rows = map_cache(cache_dir(run_dir), "val", local_dir=cfg.cache.local_dir, **expected)
    try:
        train_rows.rows_for(split.train.sample_ids)  # every training image must have its row
    except KeyError as err:
        raise CacheMismatchError(f"the teacher cache has no row for training {err}: it was built from other data") from err
    teachers, views = teacher_signal(cfg, run_dir, split, train_rows, device, precision)
    loss_fn = DistillationLoss(
        teachers,
        train_rows,
        [torch.tensor(s.classes, dtype=torch.long) for s in split.subsets],
        dcfg.temperature,
        dcfg.t_squared,
        dcfg.spis_on,
        base_loss_offsets(dcfg.base_loss, split.class_counts, dcfg.logit_tau),
    )
    v1 = None
    if dcfg.spis:
        v1 = initial_instance_weights(train_rows.confidence, train_rows.labels, split.subsets, split.class_counts, variant=dcfg.spis_init)
    return loss_fn, expert_accuracies(val_rows, split.subsets), v1, views


def student_loaders(cfg: Config, split, views: StoredViews | None, world: int, rank: int, device):
    """This rank's sampler, its training loader (its share of each batch) and its share of the validation set."""
    dcfg = cfg.distill
    sampler = make_sampler(dcfg, split.train.labels, split.class_counts, world, rank, cfg.seed)
    train_loader = make_loader(
        split.train, cfg.data, True, dcfg.batch_size // world, sampler=sampler, device=device, views=views
    )
    val_rank = split.val.subset(np.arange(rank, len(split.val), world))
    return sampler, train_loader, make_loader(val_rank, cfg.data, False, cfg.evaluate.batch_size, device=device)


@dataclass(frozen=True)
class Share:
    """Where one data-parallel share of the student trains: its rank among `world` ranks and its device.

    `prepare` puts the model there: Ray Train's `prepare_model` on its workers
    (DistributedDataParallel over several), a move to the device in a task.
    """

    rank: int
    world: int
    device: torch.device
    prepare: Callable[[torch.nn.Module], torch.nn.Module]


# Where the stage's student logs its per-epoch scalars (`rundir.layout.tensorboard_dir`); a sweep's trial logs under its own name.
STAGE_SCALARS = ("distill", "student")


def train_student(
    cfg: Config, run_dir: str, expected: dict, share: Share, checkpoints: Checkpoints, scalars_as: tuple[str, str] = STAGE_SCALARS
) -> None:
    """One share of the student's training, from the last checkpoint; raises NonFiniteLossError on every rank at once."""
    dcfg = cfg.distill
    rank, world, device = share.rank, share.world, share.device
    precision, fallback = resolve(cfg.precision, device)
    if fallback and rank == 0:
        tasks.say(f"[student] {fallback}")
    seed_everything(tasks.rank_seed(cfg.seed, rank))

    split = load_split(run_dir, cfg.data)
    loss_fn, acc_experts, v1, views = distillation_targets(cfg, run_dir, split, expected, device, precision)
    sampler, train_loader, val_loader = student_loaders(cfg, split, views, world, rank, device)

    model = build_model(cfg.model.arch, split.num_classes, in_channels=split.channels, pretrained=cfg.model.pretrained)
    model = share.prepare(precision.prepare(model))
    scaler = precision.grad_scaler()
    optimizer = make_optimizer(model, dcfg.lr, dcfg.momentum, dcfg.weight_decay)
    scheduler = make_scheduler(optimizer, dcfg.lr_schedule, dcfg.epochs, dcfg.milestones, dcfg.gamma)
    names = [s.name for s in split.subsets]

    def one_epoch(epoch: int, state: LoopState) -> EpochResult:
        weights = state.carry["weights"]
        sampler.set_epoch(epoch)
        v = scheduled_instance_weights(v1, epoch, dcfg.epochs, dcfg.schedule, dcfg.spis_horizon, dcfg.spis_clip) if dcfg.spis else None
        loss_fn.expert_weights = torch.tensor(weights) if dcfg.kd else None
        loss_fn.instance_weights = v
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, precision=precision, scaler=scaler)
        if any_rank(not math.isfinite(stats.loss), device):  # every rank stops at the same epoch
            loss = stats.loss if not math.isfinite(stats.loss) else float("nan")  # another rank's went non-finite
            raise NonFiniteLossError(divergence_message("distill", epoch, loss, "distill.lr"))
        scheduler.step()
        val_acc, acc_student = student_accuracies(model, val_loader, split, device, precision)
        if dcfg.kd and dcfg.spes:
            state.carry = {"weights": expert_weights(acc_student, acc_experts, dcfg.alpha)}
        record = {
            **{part: stats.parts.get(part) for part in ("ce", "kd")},  # the loss's two terms
            "lr": optimizer.param_groups[0]["lr"],
            "student_subset_acc": dict(zip(names, acc_student)),
            "expert_subset_acc": dict(zip(names, acc_experts)),
            "weights_used": dict(zip(names, weights)) if dcfg.kd else {},
            "weights_next": dict(zip(names, state.carry["weights"])) if dcfg.kd else {},
            "mean_instance_weight": float(v.mean()) if v is not None else 1.0,
            "precision": precision.name,
        }
        return EpochResult(stats, val_acc, record)

    scalars = ScalarLog(tensorboard_dir(run_dir, *scalars_as), storage.name(run_dir), "/".join(scalars_as)) if rank == 0 else None
    try:
        run_epochs(
            dcfg.epochs, model, optimizer, scheduler, checkpoints, one_epoch,
            tag="student", fresh=lambda: LoopState(carry={"weights": [1.0] * len(names)}),  # plain KD until the student is measured
            keep_best=dcfg.keep == "best", say=tasks.say if rank == 0 else None, scalars=scalars, scalars_of=epoch_scalars,
        )
    finally:
        if scalars is not None:
            scalars.close()


def distill_loop(loop_config: dict) -> None:
    """Ray Train worker: one data-parallel share of the student's training (`train_student`)."""
    import ray.train.torch  # here, not at the top: the one-worker student's task never imports Ray Train

    from stages import workers

    cfg = loop_config["config"]
    rank, world, device = workers.worker_setup(cfg.distill.resources.cpus_per_worker)
    checkpoints: workers.EpochCheckpoints = loop_config[workers.CHECKPOINTS_KEY]
    try:
        share = Share(rank, world, device, ray.train.torch.prepare_model)
        train_student(cfg, loop_config["run_dir"], loop_config["expected"], share, checkpoints, loop_config.get("scalars_as", STAGE_SCALARS))
    except NonFiniteLossError as err:  # raised on every rank: stop them all, keep the last good checkpoint
        checkpoints.stop_diverged(rank, str(err))


def student_task(cfg: Config, run_dir: str, expected: dict, fingerprint: str) -> None:
    """Ray task: the whole training of a one-worker student, checkpointed to `distill/checkpoint.pt` each epoch.

    A diverged epoch raises NonFiniteLossError out of the task, as an expert's does (not retried).
    """
    train_alone(cfg, run_dir, expected, tasks.FileCheckpoints(student_checkpoint(run_dir), fingerprint, "student"))


def train_alone(cfg: Config, run_dir: str, expected: dict, checkpoints: Checkpoints, scalars_as: tuple[str, str] = STAGE_SCALARS) -> None:
    """A one-worker student trained in this process (a Ray task, or a sweep's trial): no collective, no Ray Train."""
    torch.set_num_threads(max(1, int(cfg.distill.resources.cpus_per_worker)))
    device = tasks.task_device()
    train_student(cfg, run_dir, expected, Share(0, 1, device, lambda model: model.to(device)), checkpoints, scalars_as)


def kept_student(state: dict, keep: str) -> tuple[dict, dict]:
    """The weights the stage keeps (`DistillConfig.keep`) and what the result says of both candidates."""
    last = state["history"][-1]
    summary = {"kept": keep, "last_epoch": last["epoch"], "last_val_acc": last["val_acc"]}
    if keep == "last":
        return state["model"], summary
    best = state["best"]
    return best["model"], {**summary, "best_epoch": best["epoch"], "best_val_acc": best["val_acc"]}


def epoch_scalars(record: dict) -> dict:
    """What TensorBoard shows of a history record: loss and its parts, accuracies, lr, w_l per expert, mean v_i, seconds."""
    keys = ("loss", "ce", "kd", "train_acc", "val_acc", "lr", "mean_instance_weight", "seconds")
    return {**{key: record[key] for key in keys}, **{f"w/{name}": w for name, w in record["weights_used"].items()}}


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    split = read_split(ctx.run_dir)
    # Refuse a foreign cache before starting any worker; the workers check again as they read.
    expected = verified_cache(ctx.run_dir, ctx.fingerprints["cache"], split.subsets)
    state = trained_in_task(ctx, expected) if cfg.distill.resources.num_workers == 1 else trained_on_ray_train(ctx, expected)
    weights, kept = kept_student(state, cfg.distill.keep)
    save_student(student_file(ctx.run_dir), cfg.model.arch, split, weights)
    storage.write_json_atomic(history_file(ctx.run_dir), state["history"])
    last = state["history"][-1]
    val_acc = kept.get("best_val_acc", last["val_acc"])
    return {"epochs": state["epoch"], "val_acc": val_acc, "final_weights": last["weights_next"], **kept}


def trained_in_task(ctx: StageContext, expected: dict) -> dict:
    """The final state of a one-worker student trained in a Ray task (`student_task`): its last checkpoint."""
    cfg = ctx.config
    task = tasks.training_task(student_task, cfg.distill.resources, cfg.distill.max_failures)
    ref = task.remote(cfg, ctx.run_dir, expected, ctx.fingerprint)
    with tasks.cancelled_on_interrupt([ref]):  # Ctrl-C stops the student; its last epoch's checkpoint stays
        ray.get(ref)
    return storage.load_torch(student_checkpoint(ctx.run_dir))


def trained_on_ray_train(ctx: StageContext, expected: dict) -> dict:
    """The final state of a student trained by `distill.resources.num_workers` Ray Train workers (`distill_loop`)."""
    from stages import workers  # imports Ray Train: only the driver of a several-worker student pays for it

    cfg = ctx.config
    return workers.fit(
        distill_loop,
        {"config": cfg, "run_dir": ctx.run_dir, "expected": expected},
        cfg.distill.resources,
        name=ctx.train_run_name("student"),
        storage_path=ray_storage(ctx.run_dir),
        max_failures=cfg.distill.max_failures,
    )
