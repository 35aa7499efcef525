"""Stage 3, cache: every expert over the training and validation sets, once, to Parquet.

Each part is cut into ranges of samples in sample-id order. One Ray task per
range loads every expert, runs them over its images, computes p_i from the
expert of each sample's own subset on the un-augmented image (the test
transform, as the official code computes p_i), and writes its rows as one
shard straight into the cache's new data directory
(`lfme.teacher_cache.write_shard`). The KD signal of a training image is the
experts on that un-augmented image (`cache.views: 1`), or on `cache.views`
augmented views drawn here and stored with their parameters, which the
student replays (`lfme.data.views`; the official code runs its experts on the
augmented batch the student sees). With `cache.allot: draws` the K x N
training views are shared by how often the student draws each image
(`part_rows`): a row per view, p_i computed once per image, and a task's
range of rows may end inside an image's views (the next shard continues
them). Validation rows are one un-augmented view.
Every expert runs over every sample, not only its subset's: every expert's KD
term applies to every instance (paper 4.5).

The driver only names the data directory, hands out the ranges and, once
every shard is written, commits the manifest (`commit_cache`) with the
SHA-256 of every expert checkpoint, so the student refuses a cache built from
other experts. It never holds logits: its memory does not grow with the data
or the label space (iNaturalist 2018's 437,513 x 8,142 logits are 7.1 GB in
float16), and a task holds one shard. A failed or interrupted stage discards
the new data directory; the last good cache stays. (A failure waits for the
tasks in flight to end first, `tasks.drained_on_failure`; after Ctrl-C a
killed task's last shard may still land in the discarded folder, which the
next commit removes as unreferenced.) The driver keeps as many tasks in flight
as the cluster runs at once and hands out the next range as one ends.

Shard size: `cache.shard_rows` rows, or by default as many as make
`SHARD_BYTES` of float16 logits (over all views); and at least as many shards as the cluster
runs tasks at once, so a data set still uses every worker, but by default no
shard under `MIN_SHARD_ROWS` images: a task starts a worker process and loads
every expert before it scores anything.
"""

from __future__ import annotations

import numpy as np
import ray

from lfme.data import ImageList
from lfme.data.views import allot_views
from lfme.sampling import draw_weights
from lfme.subsets import Subset
from lfme.teacher_cache import TeacherRows, commit_cache, discard_data_dir, new_data_dir, write_shard
from lfme.teachers import LiveTeachers, score_batches
from rundir.config import Config
from rundir.context import StageContext
from rundir.data import make_loader, views_loader
from rundir.layout import EXPERT_MODEL, cache_dir, expert_dir, expert_hashes, load_expert, load_split, read_split
from lfme import storage
from stages import tasks

PARTS = ("train", "val")
# A shard's float16 logits: small enough that a task holds a shard, its Arrow
# table and its Parquet bytes at once in well under a GB, large enough that
# loading the experts is a small part of a task.
SHARD_BYTES = 128 << 20
# A task's start-up is about 2.5 CPU-seconds (a Ray worker process importing
# torch and this stage, `python -X importtime -c "import stages.cache"`, then
# loading the experts). Scoring 1,024 images with three experts on one thread
# took 9 s with ResNet-32 at 32x32 and 0.2 s with the default run's small CNN
# (AMD EPYC, 2026-12-06): from this size on, start-up is at most a quarter of a
# real model's task; below it, fewer tasks (the default run: 2, not 8).
MIN_SHARD_ROWS = 1024


def shard_ranges(num_rows: int, num_classes: int, shard_rows: int | None, slots: int, views: int = 1) -> list[tuple[int, int]]:
    """[start, stop) positions of each shard of a part (an empty part gets one empty shard)."""
    per_slot = max(1, -(-num_rows // max(1, slots)))
    if shard_rows:
        rows = min(shard_rows, per_slot)
    else:
        rows = min(max(1, SHARD_BYTES // (2 * num_classes * views)), max(per_slot, MIN_SHARD_ROWS))
    return [(start, min(start + rows, num_rows)) for start in range(0, max(num_rows, 1), rows)]


def task_slots(cfg: Config) -> int:
    """How many cache tasks the cluster runs at once."""
    resources = cfg.cache.resources
    cluster = ray.cluster_resources()
    if resources.gpus_per_worker:
        return max(1, int(cluster.get("GPU", 0) // resources.gpus_per_worker))
    return max(1, int(cluster.get("CPU", 1) // max(resources.cpus_per_worker, 1e-9)))


@ray.remote
def cache_shard(
    cfg: Config, run_dir: str, data_dir: str, fingerprint: str, part: str, index: int, positions: np.ndarray, blocks: np.ndarray | None
) -> dict:
    """Every expert over the images at `positions` of `part` (`part_rows`), written as shard `index`; returns `write_shard`'s record."""
    device, precision = tasks.task_setup(cfg.cache.resources.cpus_per_worker, cfg.precision, f"cache {part} shard {index}")
    split = load_split(run_dir, cfg.data)
    experts = []
    for s in split.subsets:
        with tasks.reading(storage.join(expert_dir(run_dir, s.name), EXPERT_MODEL), f"weights of expert '{s.name}'"):
            experts.append(precision.prepare(load_expert(run_dir, s, split.channels, device)))
    teachers = LiveTeachers(experts, split.subsets, split.num_classes, precision).to(device)
    source = split.train if part == "train" else split.val
    rows = score_rows(cfg, teachers, source, positions, blocks, part_views(cfg, part), split.subsets, device)
    return write_shard(cache_dir(run_dir), data_dir, part, index, rows, fingerprint=fingerprint, subsets=split.subsets)


def score_rows(
    cfg: Config, teachers: LiveTeachers, source: ImageList, positions: np.ndarray, blocks: np.ndarray | None, views: int, subsets: list[Subset], device
) -> TeacherRows:
    """The cache's rows of the images at `positions` of `source` (`part_rows`): `views` views each, or
    with blocks (`cache.allot: draws`) row r block blocks[r] of image positions[r].

    With blocks each image is taken once however many rows it has (not
    copied per row), p_i is computed once per image, on its un-augmented
    view, and the experts then run on the views only.
    """
    bs = cfg.cache.batch_size
    if blocks is not None:
        unique, image = np.unique(positions, return_inverse=True)
        images, blocks = source.subset(unique), np.stack([image, blocks], axis=1)
        once = score_batches(teachers, make_loader(images, cfg.data, False, bs), subsets, None, device)
        return score_batches(teachers, views_loader(images, cfg.data, bs, cfg.seed, views, blocks), subsets, cfg.cache.top_k, device, views, once)
    images = source.subset(positions)
    if views > 1:
        return score_batches(teachers, views_loader(images, cfg.data, bs, cfg.seed, views), subsets, cfg.cache.top_k, device, views)
    return score_batches(teachers, make_loader(images, cfg.data, False, bs), subsets, cfg.cache.top_k, device)


def part_views(cfg: Config, part: str) -> int:
    """Views per row of `part`: `cache.views` for the training images (one a row with `cache.allot: draws`), one un-augmented view for validation."""
    return cfg.cache.views if part == "train" and cfg.cache.allot == "uniform" else 1


def part_rows(cfg: Config, part: str, sample_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of `part` in the order they are written (by sample id): each row's image (its position in
    the part) and, with `cache.allot: draws`, its view (None: one row per image).

    With draws, image i gets V_i rows of one view each, V_i allotted by the
    student's sampler (`lfme.data.views.allot_views`, `cache.views` x N in all).
    """
    order = np.argsort(sample_ids, kind="stable")
    if part != "train" or cfg.cache.allot == "uniform":
        return order, None
    views = allot_views(draw_weights(labels[order], cfg.distill.sampling), cfg.cache.views * len(order))
    return np.repeat(order, views), np.arange(views.sum()) - np.repeat(np.cumsum(views) - views, views)


def shard_plan(cfg: Config, sample_ids: dict, labels: dict, num_classes: int, slots: int) -> list[tuple[str, int, np.ndarray, np.ndarray | None]]:
    """One cache task per shard: (part, shard index, each row's image position in the part, each row's view or None).

    Rows go by sample id (`part_rows`), so shards cover increasing ranges of
    ids; with allot draws an image's views may straddle two shards.
    """
    todo = []
    for part in PARTS:
        positions, blocks = part_rows(cfg, part, sample_ids[part], labels[part])
        ranges = shard_ranges(len(positions), num_classes, cfg.cache.shard_rows, slots, part_views(cfg, part))
        todo += [(part, index, positions[a:b], None if blocks is None else blocks[a:b]) for index, (a, b) in enumerate(ranges)]
    return todo


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    split = read_split(ctx.run_dir)
    hashes = expert_hashes(ctx.run_dir, split.subsets)
    resources = cfg.cache.resources
    data_dir = new_data_dir(ctx.fingerprint)
    slots = task_slots(cfg)
    todo = shard_plan(cfg, split.sample_ids, split.labels, split.num_classes, slots)
    views = ""
    if cfg.cache.views > 1:
        allotted = f"per training image on average, allotted by the student's {cfg.distill.sampling} sampling"
        views = f", {cfg.cache.views} augmented views {allotted if cfg.cache.allot == 'draws' else 'of each training image'}"
    ctx.log(f"cache: {len(todo)} shard tasks over {' and '.join(PARTS)}, each running all {len(split.subsets)} experts{views}, {slots} at a time")
    task = cache_shard.options(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)
    pending: dict = {}  # at most `slots` tasks in flight: on a failure the stage waits for those only
    shards = []
    try:
        with tasks.cancelled_on_interrupt(pending), tasks.drained_on_failure(pending):
            while todo or pending:
                while todo and len(pending) < slots:
                    part, index, positions, blocks = todo.pop(0)
                    pending[task.remote(cfg, ctx.run_dir, data_dir, ctx.fingerprint, part, index, positions, blocks)] = index
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                del pending[ref]
                shards.append(ray.get(ref))
        manifest = commit_cache(
            cache_dir(ctx.run_dir),
            data_dir,
            shards,
            fingerprint=ctx.fingerprint,
            subsets=split.subsets,
            experts={name: {"sha256": digest} for name, digest in hashes.items()},
        )
    except BaseException:
        discard_data_dir(cache_dir(ctx.run_dir), data_dir)
        raise
    for entry in manifest["parts"].values():
        ctx.hashed.update({f"{data_dir}/{name}": digest for name, digest in zip(entry["shards"], entry["shard_sha256"])})
    rows = {part: manifest["parts"][part]["rows"] for part in PARTS}
    ctx.log(f"cache: wrote {rows['train']} train and {rows['val']} val rows in {len(shards)} shards")
    return rows
