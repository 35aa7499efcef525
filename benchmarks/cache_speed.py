"""What the teacher cache buys: student training with cached versus live teachers.

Run, from the repository root:

    .venv/bin/python -m benchmarks.cache_speed [--quick] [--precision bf16] [--profile STEPS] [--out result.json]

benchmarks.speed runs this (`measure`) beside its Ray Train and experts
figures; this command runs (a) and (b) alone.

(a) Training throughput. One student (`--arch`, default resnet8) trains on
    CIFAR-10-LT (the ImageFolder copy in /work/shared/data/cifar10, LDAM-DRW
    imbalance factor `--imbalance-factor`) with the distill stage's loss
    (lfme.losses.DistillationLoss, all three experts weighted 1, no SpIS) in
    two modes that differ only in the teacher signal (lfme.teachers) it gets
    its KD targets from:
      cached: rows looked up by sample id in a teacher cache read with
              lfme.teacher_cache.read_cache (lfme.teachers.CachedTeachers), as
              the distill stage does;
      live:   three experts of the student's architecture, one per subset of a
              3-way split_balanced split, run on the batch (lfme.teachers.LiveTeachers).
    The images are decoded once, before any measurement, and augmented a
    whole batch at a time (lfme.data.PixelDataset collates uint8 pixels,
    BatchTransform crops, flips and normalises the batch): what the distill
    stage's loader does with the preset's `data.decode_once` (speed.py's (e)
    and (g) measure what that saves).
    `--precision` (default fp32) is what the student and the experts run in
    (lfme.precision: bf16 autocast and channels-last, the distill stage's
    way): the student's forward, the live teachers' forward (under the same
    autocast, as the distill stage runs `teachers: live`) and the experts'
    pass that builds the cache. On a CPU without native bf16 it falls back
    to fp32 and the report says so.
    Both run lfme.engine.train_epoch on the same `--batches` batches (same
    sample order, same augmentation draws: seeded before every measurement)
    from the same initial weights and a fresh SGD optimiser. One warm-up pass
    per mode is discarded, then `--repeats` rounds measure both modes,
    alternating which goes first (AB, BA, ...) so that drift on a noisy
    machine hits both alike.
    With `--views K` (K > 1) a third mode runs beside them:
      views:  a cache of K augmented views per image (`cache.views`,
              lfme.data.views): the loader replays each image's stored view
              (lfme.data.views.DrawPixels and DeviceBatches, the crop and
              flip applied by BatchTransform.apply on the batch) and the rows are
              read for that view, as the distill stage does with such a cache;
              `--allot draws` shares the K x N views by the student's
              class-balanced draws instead (`cache.allot`).
    and "ratio views/live" is reported against the issue's goal of 1.4x.
    The experts are untrained (seeded random weights): speed does not depend
    on their values. The cache is built from them anyway, as the cache stage
    does (un-augmented images, test transform, rows by lfme.teachers.teacher_rows),
    to time that one-off cost.

(b) The teacher cache itself, on synthetic rows for C = 10, 100, 1000 with
    three subsets, written with write_cache and read with read_cache in a
    temporary directory (`--tmp`), `--cache-repeats` times each.

Reading the output
- Table (a), medians over the rounds: images/s; per-step milliseconds split
  into data (waiting for the loader: collating the pixels, then the batch
  transform), teacher (the teacher signal's `targets(batch)`: the cache
  lookup, or the experts' forward) and
  student (the rest: student forward, loss, backward, optimiser step). The
  cached mode costs data + student, the live mode adds the experts' forward,
  so cached/live can be at most (data + teacher + student) / (data + student)
  with these numbers; "ratio without data loading" is what it would be with
  free loading.
- "ratio cached/live": median of the per-round ratios, against the goal of 2x.
  A WARNING marks a noisy run (load on the machine came and went within a
  round, which interleaving cannot undo): the rounds' ratios, or the
  student's times in the two modes (the same work), more than 15% apart.
  Rerun such a run on an idle machine.
- "cache build": the one-off cost of the cache (teachers on every image,
  plus the write) and after how many epochs the live teachers' extra time
  per epoch has exceeded it.
- Table (b): bytes per sample on disk (Parquet shards only; the manifest is
  about 1 kB per cache) next to the raw payload of the columns
  (8 + 8 + 4 + 2C + 4 bytes); write and read rates in rows/s (medians; the
  read follows the write, so it comes from the page cache); and the read
  rate over the cached mode's training rate in images/s from (a): how many
  times faster the whole cache is read than the student consumes it. It
  must be >> 1 for the cache never to be the bottleneck (the distill stage
  reads it once per worker, before training).
- With --profile STEPS: torch.profiler over STEPS more steps of each mode,
  the ops with the most self time per step, so what limits each mode's step
  is visible.

Output: both tables on stdout (progress on stderr) and, with --out, all the
numbers (per-round values included) as JSON, written atomically.
--quick (30 batches, 3 rounds, 20k synthetic rows) takes about 2-3 minutes
on 2 otherwise idle CPU cores; other load slows it and adds noise to every figure.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lfme.data import (
    BatchTransform,
    DeviceBatches,
    ImageDataset,
    PixelDataset,
    build_transform,
    class_counts,
    fixed_size_step,
    imagefolder,
    make_long_tailed,
)
from lfme.data.views import DrawPixels, DrawTagged, StoredViews
from lfme.engine import Batch, make_optimizer, predict, seed_everything, train_epoch
from lfme.losses import DistillationLoss
from lfme.models import build_model
from lfme.precision import PRECISIONS, resolve
from lfme.storage import write_json_atomic
from lfme.subsets import Subset, split_balanced, subset_of_class
from lfme.teacher_cache import TeacherRows, read_cache, read_manifest, write_cache
from lfme.teachers import CachedTeachers, LiveTeachers, TeacherSignal, teacher_rows
from rundir.config import Config
from rundir.sections import CacheConfig, DataConfig
from stages.cache import part_rows, part_views, score_rows


def modes(args) -> tuple[str, ...]:
    """The modes measured: cached and live, and views with `--views` > 1."""
    return ("cached", "live") + (("views",) if args.views > 1 else ())


class FixedOrder(torch.utils.data.Sampler):
    """The same sample order every pass, as epoch 0 (DrawTagged reads `epoch`)."""

    def __init__(self, indices: list[int]):
        self.indices, self.epoch = indices, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)

# Per-round ratios, or times of the same work, further apart than this (max/min):
# the machine's load changed during the run.
NOISY_SPREAD = 1.15


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done, not when it is queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- cache helpers


def three_subsets(num_classes: int) -> list[Subset]:
    """Classes 0..C-1 cut into three contiguous subsets (for synthetic caches)."""
    return [Subset(f"s{k}", tuple(c.tolist())) for k, c in enumerate(np.array_split(np.arange(num_classes), 3))]


def synthetic_rows(n: int, num_classes: int, subsets: list[Subset], seed: int = 0) -> TeacherRows:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    owner = subset_of_class(subsets, num_classes)
    logits = (rng.standard_normal((n, num_classes)) * 4).astype(np.float16)
    return TeacherRows(
        sample_ids=np.arange(n, dtype=np.int64),
        labels=labels,
        subsets=owner[labels].astype(np.int32),
        logits=logits,
        confidence=rng.random(n).astype(np.float32),
    )


def write(directory, rows: TeacherRows, subsets: list[Subset]) -> dict:
    experts = {s.name: "0" * 64 for s in subsets}  # no checkpoints here; the hash is only recorded
    return write_cache(directory, {"train": rows}, fingerprint="benchmark", subsets=subsets, experts=experts)


def cache_bytes_per_sample(directory, part: str = "train") -> float:
    """Bytes on disk per row of `part`: its Parquet shards' sizes over its row count."""
    manifest = read_manifest(directory)
    entry = manifest["parts"][part]
    data_dir = Path(directory) / manifest["data_dir"]
    return sum((data_dir / name).stat().st_size for name in entry["shards"]) / entry["rows"]


# ----------------------------------------------------------------------------- (a) training


@dataclass
class Measurement:
    mode: str
    images: int
    seconds: float
    data_s: float
    teacher_s: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    def per_step_ms(self, batches: int) -> dict:
        student = self.seconds - self.data_s - self.teacher_s
        return {
            "step": 1000 * self.seconds / batches,
            "data": 1000 * self.data_s / batches,
            "teacher": 1000 * self.teacher_s / batches,
            "student": 1000 * student / batches,
        }


class TimedLoader:
    """Iterates a loader, adding the time spent waiting for each batch to `seconds`."""

    def __init__(self, loader):
        self.loader = loader
        self.seconds = 0.0

    def __iter__(self):
        start = time.perf_counter()
        batches = iter(self.loader)  # worker start-up, if any, is data time too
        self.seconds += time.perf_counter() - start
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield batch


class TimedTeachers:
    """A teacher signal whose `targets(batch)` adds the time it takes to `seconds`: a step's teacher part."""

    def __init__(self, signal: TeacherSignal, device: torch.device):
        self.signal, self.device = signal, device
        self.seconds = 0.0

    def targets(self, batch: Batch) -> torch.Tensor:
        sync(self.device)  # the student's forward is not teacher time
        start = time.perf_counter()
        targets = self.signal.targets(batch)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return targets


class Bench:
    """The student, the data and both teacher signals; `run(mode, batches)` times one pass."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.precision, self.precision_fallback = resolve(args.precision, device)
        if self.precision_fallback:
            log(self.precision_fallback)
        source = imagefolder(args.data)
        train_idx, _ = make_long_tailed(source.train.labels, args.imbalance_factor)
        # Decoded once, as the distill stage keeps them with the preset's data.decode_once.
        self.train = source.train.subset(train_idx).decoded(fixed_size_step("cifar", 32))
        self.num_classes = source.num_classes
        self.subsets = split_balanced(class_counts(self.train.labels, self.num_classes), 3)

        seed_everything(args.seed)
        self.model = self.precision.prepare(build_model(args.arch, self.num_classes).to(device))
        self.initial_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        experts = [self.precision.prepare(build_model(args.arch, len(s))) for s in self.subsets]
        # The experts run in the student's precision (`targets` autocasts), as `teachers: live` in the distill stage.
        self.teachers = LiveTeachers(experts, self.subsets, self.num_classes, self.precision).to(device)
        self.subset_classes = [torch.tensor(s.classes, device=device) for s in self.subsets]
        self.expert_weights = torch.ones(len(self.subsets), device=device)

        # A fixed sample order, so every measurement sees the same batches.
        order = np.random.default_rng(args.seed).permutation(len(self.train))
        self.indices = np.resize(order, args.batches * args.batch_size).tolist()
        pixels = torch.utils.data.DataLoader(
            PixelDataset(self.train),
            batch_size=args.batch_size,
            sampler=self.indices,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            pin_memory=device.type == "cuda",
        )
        self.loader = TimedLoader(DeviceBatches(pixels, BatchTransform("cifar", train=True, image_size=32), device))
        self.cache_rows: TeacherRows | None = None
        self.cached: CachedTeachers | None = None
        self.views_cached: CachedTeachers | None = None
        self.views_loader: TimedLoader | None = None

    def build_cache(self, directory) -> dict:
        """The cache stage in miniature: teachers on every un-augmented image, written, read back."""
        start = time.perf_counter()
        dataset = ImageDataset(self.train, build_transform("cifar", train=False, image_size=32))
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.args.batch_size, num_workers=self.args.workers)
        pred = predict(self.teachers, loader, self.device, self.precision)
        rows = teacher_rows(pred.sample_ids, pred.labels, pred.logits, self.subsets)
        write(directory, rows, self.subsets)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        self.cache_rows = read_cache(directory, "train")
        read_s = time.perf_counter() - start
        # float16 as stored, each batch's rows converted to float32 by `targets` (what the distill stage does)
        self.cached = CachedTeachers(self.cache_rows)
        built = {"rows": len(rows), "build_s": build_s, "read_s": read_s}
        if self.args.views > 1:
            built["views"] = self.build_views_cache(Path(directory) / "views")
        return built

    def build_views_cache(self, directory: Path) -> dict:
        """The cache stage with `cache.views` (and `cache.allot`): the experts on the test view and the drawn views.

        The rows come from the cache stage's own functions (`stages.cache.part_rows`, `score_rows`), so
        `--allot draws` gives each image the views the stage would: K x N in all, shared by the student's draws.
        """
        k = self.args.views
        start = time.perf_counter()
        config = Config(
            seed=self.args.seed,
            data=DataConfig(transform="cifar", image_size=32, loader_workers=self.args.workers),
            cache=CacheConfig(batch_size=self.args.batch_size, views=k, allot=self.args.allot),
        )
        positions, blocks = part_rows(config, "train", self.train.sample_ids, self.train.labels)
        rows = score_rows(config, self.teachers, self.train, positions, blocks, part_views(config, "train"), self.subsets, self.device)
        write(directory, rows, self.subsets)
        build_s = time.perf_counter() - start
        rows = read_cache(directory, "train")
        stored = StoredViews.of_rows(rows, self.args.seed)
        self.views_cached = CachedTeachers(rows)
        pixels = torch.utils.data.DataLoader(
            DrawPixels(PixelDataset(self.train), stored),
            batch_size=self.args.batch_size,
            sampler=DrawTagged(FixedOrder(self.indices)),
            num_workers=self.args.workers,
            persistent_workers=self.args.workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        transform = BatchTransform("cifar", train=True, image_size=32)
        self.views_loader = TimedLoader(DeviceBatches(pixels, transform, self.device, stored))
        return {"views": k, "allot": self.args.allot, "rows": len(rows), "build_s": build_s, "bytes_per_sample": cache_bytes_per_sample(directory)}

    def teacher_signal(self, mode: str) -> TeacherSignal:
        return {"live": self.teachers, "cached": self.cached, "views": self.views_cached}[mode]

    def run(self, mode: str, batches: int) -> Measurement:
        self.model.load_state_dict(self.initial_state)
        optimizer = make_optimizer(self.model, lr=0.1, momentum=0.9, weight_decay=5e-4)
        seed_everything(self.args.seed)  # same augmentation draws in every measurement
        source = self.views_loader if mode == "views" else self.loader
        source.seconds = 0.0
        teachers = TimedTeachers(self.teacher_signal(mode), self.device)
        # The distill stage's loss: every expert weighted 1, no SpIS (instance_weights None).
        loss_fn = DistillationLoss(teachers, self.cache_rows, self.subset_classes)
        loss_fn.expert_weights = self.expert_weights

        loader = source if batches == self.args.batches else itertools.islice(source, batches)
        sync(self.device)
        start = time.perf_counter()
        stats = train_epoch(
            self.model,
            loader,
            optimizer,
            loss_fn,
            self.device,
            precision=self.precision,
            scaler=self.precision.grad_scaler(),
        )
        sync(self.device)
        seconds = time.perf_counter() - start
        return Measurement(mode, stats.samples, seconds, source.seconds, teachers.seconds)


def measure_training(bench: Bench, args) -> dict:
    measured = modes(args)
    for mode in measured:
        bench.run(mode, args.warmup)
    rounds = []
    for r in range(args.repeats):
        order = measured if r % 2 == 0 else measured[::-1]
        got = {mode: bench.run(mode, args.batches) for mode in order}
        rounds.append(got)
        log(
            f"  round {r + 1}/{args.repeats}: "
            + ", ".join(f"{m} {got[m].images_per_s:.0f} img/s" for m in measured)
        )
    summary = {}
    for mode in measured:
        steps = [m[mode].per_step_ms(args.batches) for m in rounds]
        summary[mode] = {
            "images_per_s": statistics.median(m[mode].images_per_s for m in rounds),
            "ms_per_step": {part: statistics.median(s[part] for s in steps) for part in steps[0]},
        }
    ratios = [m["cached"].images_per_s / m["live"].images_per_s for m in rounds]
    without_data = [
        (m["live"].seconds - m["live"].data_s) / (m["cached"].seconds - m["cached"].data_s) for m in rounds
    ]
    out = {
        "modes": summary,
        "ratio_cached_over_live": statistics.median(ratios),
        "ratio_per_round": ratios,
        "ratio_without_data_loading": statistics.median(without_data),
        "rounds": [{mode: asdict(m[mode]) for mode in measured} for m in rounds],
    }
    if "views" in measured:
        views = [m["views"].images_per_s / m["live"].images_per_s for m in rounds]
        out.update(ratio_views_over_live=statistics.median(views), ratio_views_per_round=views)
    return out


def profile_steps(bench: Bench, mode: str, steps: int, top: int = 8) -> dict:
    """torch.profiler (CPU) over `steps` training steps of `mode`: the ops that take the time.

    Run after the measurements, so nothing is cold. Each op's self time is its
    own time, children excluded; the DataLoader's own span
    ("enumerate(DataLoader)...") holds the loading that no op accounts for
    (image decoding and augmentation). Shares are of the sum of all self
    times, which is the profiled step time less untraced Python glue.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        bench.run(mode, steps)
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "mode": mode,
        "steps": steps,
        "wall_ms_per_step": 1000 * wall / steps,  # with the profiler's own overhead
        "self_ms_per_step": total_us / 1000 / steps,
        "top": [
            {
                "op": e.key,
                "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                "share": e.self_cpu_time_total / total_us,
                "calls_per_step": e.count / steps,
            }
            for e in events[:top]
        ],
    }


def profile_table(profile: dict) -> list[str]:
    """The top ops of a profile, as fixed-width lines."""
    lines = [
        f"profile of {profile['steps']} {profile['mode']} step(s), per step: wall {profile['wall_ms_per_step']:.1f} ms "
        f"(profiler included), ops' self time {profile['self_ms_per_step']:.1f} ms",
        f"{'op':<56}{'self ms':>10}{'share':>8}{'calls':>8}",
    ]
    for op in profile["top"]:
        lines.append(f"{op['op'][:55]:<56}{op['self_ms_per_step']:>10.1f}{100 * op['share']:>7.0f}%{op['calls_per_step']:>8.0f}")
    return lines


# ----------------------------------------------------------------------------- (b) the cache


def measure_cache(args, train_images_per_s: float) -> list[dict]:
    results = []
    for num_classes in (10, 100, 1000):
        subsets = three_subsets(num_classes)
        rows = synthetic_rows(args.cache_rows, num_classes, subsets)
        writes, reads = [], []
        with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
            for _ in range(args.cache_repeats):
                start = time.perf_counter()
                write(directory, rows, subsets)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                read_cache(directory, "train")
                reads.append(time.perf_counter() - start)
            size = cache_bytes_per_sample(directory)
        read_rate = args.cache_rows / statistics.median(reads)
        results.append(
            {
                "num_classes": num_classes,
                "rows": args.cache_rows,
                "bytes_per_sample": size,
                "raw_bytes_per_sample": 8 + 8 + 4 + 2 * num_classes + 4,
                "write_rows_per_s": args.cache_rows / statistics.median(writes),
                "read_rows_per_s": read_rate,
                "read_over_training_rate": read_rate / train_images_per_s,
            }
        )
        log(f"  C={num_classes}: {size:.1f} B/sample, read {read_rate:,.0f} rows/s")
    return results


# ----------------------------------------------------------------------------- report


def report(result: dict) -> str:
    cfg, setup, train, cache = result["config"], result["setup"], result["training"], result["cache"]
    fallback = f" ({setup['precision_fallback']})" if setup["precision_fallback"] else ""
    lines = [
        f"(a) student training: {cfg['arch']}, batch {cfg['batch_size']}, {cfg['batches']} batches x "
        f"{cfg['repeats']} rounds (medians), {setup['train_images']} CIFAR-10-LT images (IF {cfg['imbalance_factor']}), "
        f"{setup['teachers']} live teachers {cfg['arch']}, {setup['precision']}{fallback}, batched augmentation, "
        f"{setup['threads']} threads, {cfg['workers']} loader workers, {setup['device']}",
        "",
        f"{'mode':<8}{'images/s':>10}{'step ms':>10}{'data ms':>10}{'teacher ms':>12}{'student ms':>12}",
    ]
    for mode in train["modes"]:
        m = train["modes"][mode]
        ms = m["ms_per_step"]
        lines.append(
            f"{mode:<8}{m['images_per_s']:>10.0f}{ms['step']:>10.1f}{ms['data']:>10.1f}"
            f"{ms['teacher']:>12.1f}{ms['student']:>12.1f}"
        )
    ratio = train["ratio_cached_over_live"]
    lines += [
        "(teacher: cache lookup or the experts' forward; student: forward, loss, backward, optimiser step)",
        "",
        f"ratio cached/live: {ratio:.2f}x (rounds: {', '.join(f'{r:.2f}' for r in train['ratio_per_round'])}); "
        f"goal >= 2x {'met' if ratio >= 2 else 'NOT met'}",
        f"ratio without data loading: {train['ratio_without_data_loading']:.2f}x",
    ]
    if "ratio_views_over_live" in train:
        views = train["ratio_views_over_live"]
        lines.append(
            f"ratio views/live ({cfg['views']} views per image{', allotted by draws' if cfg.get('allot') == 'draws' else ''}): {views:.2f}x (rounds: "
            f"{', '.join(f'{r:.2f}' for r in train['ratio_views_per_round'])}); goal >= 1.4x {'met' if views >= 1.4 else 'NOT met'}"
        )
    # Two symptoms of load that changed during the run: rounds that disagree,
    # and different times for the student's part, which is the same work in both modes.
    spread = max(train["ratio_per_round"]) / min(train["ratio_per_round"])
    student = [m["ms_per_step"]["student"] for m in train["modes"].values()]
    mismatch = max(student) / min(student)
    if max(spread, mismatch) > NOISY_SPREAD:
        lines.append(
            f"WARNING: noisy run (rounds' ratios differ by {100 * (spread - 1):.0f}%, the student's identical "
            f"work by {100 * (mismatch - 1):.0f}% between modes): other load on the machine; rerun when it is idle"
        )
    build, epochs = setup["cache_build"], setup["break_even_epochs"]
    pays_off = f"pays for itself after {epochs:.2f} epochs" if epochs is not None else "live teachers were not slower"
    lines.append(
        f"cache build (teachers on {build['rows']} un-augmented images + write): {build['build_s']:.1f} s, "
        f"read {build['read_s']:.2f} s; {pays_off}"
    )
    if "views" in build:
        v = build["views"]
        lines.append(
            f"views cache build (teachers on the test view and {v['views']} views per image ({v.get('allot', 'uniform')}), {v['rows']} rows + write): "
            f"{v['build_s']:.1f} s, {v['bytes_per_sample']:.0f} bytes per sample on disk"
        )
    lines += [
        "",
        f"(b) teacher cache, {cache[0]['rows']} synthetic rows, median of {cfg['cache_repeats']}",
        "",
        f"{'C':>6}{'bytes/sample':>14}{'raw bytes':>11}{'write rows/s':>14}{'read rows/s':>13}{'read/train':>12}",
    ]
    for c in cache:
        lines.append(
            f"{c['num_classes']:>6}{c['bytes_per_sample']:>14.1f}{c['raw_bytes_per_sample']:>11}"
            f"{c['write_rows_per_s']:>14,.0f}{c['read_rows_per_s']:>13,.0f}{c['read_over_training_rate']:>11,.0f}x"
        )
    lines.append(
        f"(read/train: read rows/s over the cached mode's {train['modes']['cached']['images_per_s']:.0f} training images/s)"
    )
    for profile in result.get("profiles") or []:
        lines += ["", *profile_table(profile)]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cache_speed", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="30 batches, 3 rounds, 20k synthetic cache rows (~2-3 min on 2 cores)")
    parser.add_argument("--data", default="/work/shared/data/cifar10", help="CIFAR-10 ImageFolder root (train/, test/)")
    parser.add_argument("--arch", default="resnet8", help="student and teacher architecture (lfme.models)")
    parser.add_argument("--imbalance-factor", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, help="batches per measurement (default 60; 30 with --quick)")
    parser.add_argument("--repeats", type=int, help="measurement rounds, each mode once per round (default 5; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=3, help="batches of the discarded warm-up pass per mode")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="what student and experts run in (lfme.precision)")
    parser.add_argument("--cache-rows", type=int, help="rows of each synthetic cache (default 100000; 20000 with --quick)")
    parser.add_argument("--cache-repeats", type=int, default=3)
    parser.add_argument("--tmp", help="parent directory of the temporary caches (default: the system's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=1, help="K > 1: also measure a cache of K augmented views per image, replayed")
    parser.add_argument("--allot", default="uniform", choices=("uniform", "draws"),
                        help="how the K x N views are shared (cache.allot): K each, or by the student's class-balanced draws")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after the measurements, profile this many steps of each mode (torch.profiler) and list the top ops")
    parser.add_argument("--out", help="write all numbers to this JSON file")
    args = parser.parse_args(argv)
    defaults = {"batches": (60, 30), "repeats": (5, 3), "cache_rows": (100_000, 20_000)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def measure(args: argparse.Namespace) -> dict:
    """Everything (a) and (b) measure, for `args` from `parse_args`; see the module's docstring."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()

    log("loading CIFAR-10-LT and building the models")
    bench = Bench(args, device)
    with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
        log("building the teacher cache")
        build = bench.build_cache(directory)
        log(f"measuring training: warm-up, then {args.repeats} rounds of {args.batches} batches per mode")
        training = measure_training(bench, args)
        profiles = []
        if args.profile:
            log(f"profiling {args.profile} step(s) per mode")
            profiles = [profile_steps(bench, mode, args.profile) for mode in modes(args)]
    cached_rate, live_rate = (training["modes"][m]["images_per_s"] for m in ("cached", "live"))
    # Seconds per epoch the live teachers add, and how many such epochs the one-off build costs.
    live_overhead_per_epoch = len(bench.train) * (1 / live_rate - 1 / cached_rate)
    log("measuring the cache")
    cache = measure_cache(args, cached_rate)
    total_s = time.perf_counter() - started

    result = {
        "config": vars(args),
        "setup": {
            "train_images": len(bench.train),
            "teachers": len(bench.subsets),
            "subsets": [list(s.classes) for s in bench.subsets],
            "threads": torch.get_num_threads(),
            "device": str(device),
            "precision": bench.precision.name,
            "precision_fallback": bench.precision_fallback,
            "torch": torch.__version__,
            "cache_build": build,
            "break_even_epochs": build["build_s"] / live_overhead_per_epoch if live_overhead_per_epoch > 0 else None,
            "total_s": total_s,
        },
        "training": training,
        "cache": cache,
        "profiles": profiles,
    }
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    total_s = result["setup"]["total_s"]
    print(report(result))
    print(f"\ntotal {total_s:.0f} s")
    if args.out:
        write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
