"""The pipeline's speed figures, measured side by side in one run, each against its goal.

    python -m benchmarks.speed [--quick] [--out DIR] [--skip-before]      # from the repository root

(a) Student throughput with teacher logits from the cache versus three live
    teachers (goal: >= 2x), and (b) the cache itself: bytes per sample, write
    and read rows/s, read rate over the training rate (goal: >> 1). Both are
    benchmarks.cache_speed (its docstring defines every number), run here
    on the data below, with a torch.profiler summary of cached and live steps,
    in bf16 (`--precision bf16`: the precision the presets run in), student
    and live teachers alike, with batched augmentation.
(c) The distill stage under Ray Train versus plain PyTorch (goal: at most 5%
    more time per epoch; start-up reported separately). The same function,
    `stages.distill.distill_loop` (the distill stage's worker loop), on the
    same run directory, config and seed, through `stages.workers.fit`:
      ray:   one Ray Train worker, an actor holding the stage's CPUs, exactly
             as `lfme run` runs the stage with `distill.resources.num_workers: 1`;
      plain: Ray Train's local mode (`num_workers=0`): the loop runs in this
             process, no actors, no checkpoint upload; the `ray.train` calls
             it makes are in-process stand-ins.
    Per-epoch times are the `seconds` of each epoch in the two histories (from
    one checkpoint to the next, so every epoch after the first includes one
    checkpoint). The first epoch is shown apart (it warms up and holds no
    checkpoint); overhead = median later epoch under Ray / plain - 1.
    Start-up = the fit's wall time minus its epochs (Ray Train's start and
    stop, the loop's set-up, the last checkpoint). The histories' losses and
    validation accuracies are compared too: identical means the two runs did
    the same work. `--rounds` alternates the order (plain, ray, ray, plain, ...)
    so that load that drifts hits both alike. CPU seconds of every process of
    this run (the driver, Ray's daemons and actors) are sampled during each
    fit: what Ray's own processes take from the training.
(d) The experts stage with its L experts launched concurrently
    (`experts.max_concurrent: L`) versus one after another (1): the stage run
    twice, on fresh run directories seeded with the same split
    (`pipeline.reuse.reuse_stages`), all else the same. Ray's CPUs (`ray.cluster_resources()`) over each expert's CPUs bound
    how many really train at once.
(e) Image decoding: one epoch of the distill stage's training loader alone
    (no model), with the images decoded every epoch versus decoded once when
    the loader is made (`data.decode_once`); the one-off decode reported apart.
(f) Precision: a student epoch in fp32 versus bf16 (`precision`), for
    ResNet-8 and ResNet-32 (goal: bf16 >= 2x faster for each). The distill
    loop in local mode, as (c)'s plain runs (`fit_student`), on the base run
    directory and its cache (built in the base config's precision, fp32; the
    cache's fingerprint holds `precision`, so every run checks the cache
    against the base config's fingerprint), with the batched loader in this
    process (`data.decode_once`, `data.loader_workers: 0`, which (g) times
    alone). Per arch, `--rounds` pairs of runs, the order of fp32 and
    bf16 alternating from pair to pair. An epoch's seconds are its history's
    (training, validation, the previous checkpoint; the first epoch apart,
    as in (c)); the speed-up is the median later fp32 epoch over the median
    later bf16 epoch. img/s = training images per epoch (the sampler's
    length) / that median; ms per step = that median / batches per epoch.
    Each run's last validation accuracy shows that bf16 still trains.
(g) Loader share: ms per batch of the student's training loader alone, at
    its batch size and sampler, in this process at its threads (no model,
    images decoded beforehand, not timed): PIL transforms on decoded images
    (`ImageDataset` + `build_transform`, what decode_once did before) versus
    the batched path (`make_loader` with decode_once: uint8 pixels collated,
    `BatchTransform` on the whole batch). max(3, --rounds) rounds in
    alternating order, medians. The share of a student step is
    loader / (loader + compute), with compute = (f)'s ms per step less the
    batched loader's ms (which (f)'s epochs ran); compute thus holds the
    epoch's validation and checkpoint too, spread over its steps. Goal:
    batched <= 10% of a bf16 ResNet-8 step (the issue's baseline, 72 ms of
    331 ms, was 22%); the fp32 step and ResNet-32 are shown too.
(h) The default `lfme run` (ray_config.yaml, digits) from the command line,
    before and after: `python -m pipeline.cli run ray_config.yaml` in a
    subprocess on a fresh run directory, once in this checkout ("after") and
    once in a git worktree of `--before-ref` ("before", default bbc16ad, the
    commit before issue 9's speed work; made under DIR, removed at the end;
    `--skip-before` skips it), each with its tree first on PYTHONPATH (checked:
    `pipeline` imports from the tree) and the environment this command
    started with (not the variables Ray and `stages.workers.fit` set in it
    since). The "before" tree is run the way its own layout needs: its
    `pipeline.cli` from its root, none of this checkout's code. Wall time of the subprocess, each stage's seconds from the run's
    manifest (`duration_s`), test top-1 from evaluate/report.json. Goal:
    after <= 60 s, top-1 as before (94.2%). `--rounds` rounds, order
    alternating.

Data: CIFAR-10-LT (configs/cifar10-lt.yaml, the ImageFolder tree in
../shared/data/cifar10) with the CPU_SCALE overrides of benchmarks.scales (ResNet-8, one
2-thread student worker) and one expert epoch (only the student is timed in
(c)). --quick builds CIFAR-10-LT from the first 500 training images per
class (a symlinked tree in DIR/data; 10x fewer images, the same protocol),
3 student epochs, shorter (a) and (b). split, experts and cache are built
once in DIR/base with the pipeline's own stages and reused when the command
is run again; (c), (d), (f) and (h) always run afresh.

Output: DIR/speed.json (every number) and DIR/speed.md: the goals table, with
a line on what limits each figure, then each part's details. Progress goes
to stderr. --quick takes about 15 minutes on 2 busy CPU cores, about 4 of them
(h)'s two default runs; every figure is
only as steady as the machine: the load average is recorded at the start and
the end, and a WARNING marks figures whose repeats disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# The repository: the presets, the data beside it, and (h)'s git worktrees.
REPO = Path(__file__).resolve().parents[1]
# The environment of (h)'s runs: as it was when this command started, before
# importing Ray sets variables in it (the "before" tree must run as it would
# on its own). Hence the imports below it (E402).
ENVIRONMENT = dict(os.environ)

import ray  # noqa: E402
import psutil  # noqa: E402  (Ray ships psutil; importable once ray is)
import torch  # noqa: E402

from benchmarks import cache_speed  # noqa: E402
from benchmarks.scales import CPU_SCALE  # noqa: E402
from lfme.data import ImageDataset, build_transform, fixed_size_step  # noqa: E402
from lfme.report import markdown_table  # noqa: E402
from lfme.storage import read_json, write_json_atomic, write_text_atomic  # noqa: E402
from pipeline.graph import TEACHER_STAGES, fingerprints  # noqa: E402
from pipeline.manifest import Manifest  # noqa: E402
from pipeline.reuse import reuse_stages  # noqa: E402
from pipeline.ray_session import init_ray  # noqa: E402
from pipeline.runner import run_pipeline  # noqa: E402
from rundir.config import Config, load_config, with_absolute_paths, with_values  # noqa: E402
from rundir.data import make_loader  # noqa: E402
from rundir.layout import EXPERT_RESULT, SplitData, expert_dir, load_split, verified_cache  # noqa: E402
from stages import workers as ray_workers  # noqa: E402
from stages.distill import distill_loop, make_sampler  # noqa: E402

PRESET = REPO / "configs" / "cifar10-lt.yaml"
DATA = REPO.parent / "shared" / "data" / "cifar10"
SCALE = CPU_SCALE + ["experts.epochs=1", "split.method=balanced", "split.num_subsets=3"]
GOALS = {"cache_ratio": 2.0, "ray_overhead": 0.05, "bf16_speedup": 2.0, "loader_share": 0.10, "default_run_s": 60.0}
# What (a) runs in: the presets' precision.
PRESET_PRECISION = "bf16"
# (f): the CPU scale's student and the preset's.
PRECISION_ARCHS = ("resnet8", "resnet32")
# (g): the loader's share of a student step before batched augmentation (issue 9: 72 of 331 ms).
LOADER_SHARE_BEFORE = 72 / 331
# (h): the default run, and its test top-1 before this work.
DEFAULT_CONFIG = "ray_config.yaml"
DEFAULT_RUN_TOP1 = 0.942
# Repeats further apart than this (max/min): the machine's load changed during the run (cache_speed's threshold too).
NOISY_SPREAD = 1.15
# Where the student trains: the driver in local mode, the Ray Train worker otherwise.
TRAINING_PROCESSES = ("driver", "ray::RayTrainWorker")
log = cache_speed.log


# ----------------------------------------------------------------------------- setup


def shrunk_cifar(source: Path, dest: Path, per_class: int) -> Path:
    """An ImageFolder tree of the first `per_class` training images of each class, as symlinks.

    The test classes keep the same share of their images. The long-tailed
    construction then runs on it as on the full set (CIFAR-10-LT with a head
    class of `per_class`). Built once: a finished tree has its `tree.json`.
    """
    marker = dest / "tree.json"
    recipe = {"source": str(source), "per_class": per_class}
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    largest = max(len(list(d.iterdir())) for d in (source / "train").iterdir())
    for split in ("train", "test"):
        for class_dir in sorted(d for d in (source / split).iterdir() if d.is_dir()):
            files = sorted(class_dir.iterdir())
            keep = per_class if split == "train" else max(1, len(files) * per_class // largest)
            target = dest / split / class_dir.name
            target.mkdir(parents=True)
            for file in files[:keep]:
                (target / file.name).symlink_to(file.resolve())
    marker.write_text(json.dumps(recipe))
    return dest


def overrides(args) -> list[str]:
    """The overrides of the preset that set the schedule and resources (not the paths); later ones win."""
    return SCALE + [f"distill.epochs={args.epochs}", *args.set]


def effective(settings: list[str]) -> list[str]:
    """`key=value` overrides with only the last value of each key, in the order the keys first appear."""
    last = {}
    for setting in settings:
        key = setting.split("=", 1)[0]
        last[key] = setting
    return list(last.values())


def speed_config(args, data_root: Path, run_dir: Path, more: list[str] = ()) -> Config:
    return with_absolute_paths(load_config(PRESET, overrides(args) + [f"data.root={data_root}", f"run_dir={run_dir}", *more]))


def build_base(config: Config) -> None:
    """split, experts and cache in the base run directory, by the pipeline's own stages (skipped when done)."""
    run_pipeline(config, through=TEACHER_STAGES[-1], log=log)


def expected_cache(config: Config) -> dict:
    """What the student's workers check the run's teacher cache against (checked here once first)."""
    split = load_split(config.run_dir, config.data)
    return verified_cache(config.run_dir, fingerprints(config)["cache"], split.subsets)


class ProcessCPU:
    """CPU seconds of this process and of every process it started (Ray's, when Ray runs here), by name.

    A thread samples them every `interval` seconds between `start()` and
    `stop()`, so processes that exit in between still count (up to their last
    sample). Names are each process's last title: the driver is "driver", Ray
    workers and actors go by theirs (ray::RayTrainWorker, ray::TrainController,
    ...; a worker still starting shows as default_worker.py), other processes
    by their program or script (raylet, gcs_server, dashboard.py, ...).
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.root = psutil.Process()
        self.first: dict[tuple, float] = {}
        self.names: dict[tuple, str] = {}
        self.samples: list[tuple[float, dict[tuple, float]]] = []  # (time, CPU seconds per process)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def name_of(self, process) -> str:
        if process.pid == self.root.pid:
            return "driver"
        command = process.cmdline() or [process.name()]
        if command[0].startswith("ray::"):
            return command[0].split()[0].split(".")[0]
        scripts = [Path(part).name for part in command[1:] if part.endswith(".py")]
        return scripts[0] if scripts else Path(command[0]).name

    def sample(self, initial: bool = False) -> None:
        cpu = dict(self.samples[-1][1]) if self.samples else {}  # the dead keep their last value
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                key = (process.pid, process.create_time())
                times = process.cpu_times()
                self.names[key] = self.name_of(process)  # a Ray worker's title changes when it becomes an actor
            except psutil.Error:  # exited since listed
                continue
            cpu[key] = times.user + times.system
            # A process born during the run counts from 0, one alive at the start from then.
            self.first.setdefault(key, cpu[key] if initial else 0.0)
        self.samples.append((time.perf_counter(), cpu))

    def poll(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def start(self) -> ProcessCPU:
        self.sample(initial=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sample()

    def started(self) -> int:
        """How many processes were born during the run."""
        return sum(1 for key in self.names if key not in self.samples[0][1])

    def used(self, since: float | None = None, exclude: tuple[str, ...] = ()) -> dict[str, float]:
        """CPU seconds per name from `since` (a perf_counter time; default: the start) to the end, largest first."""
        before = next((cpu for t, cpu in reversed(self.samples) if t <= since), self.samples[0][1]) if since else {}
        end = self.samples[-1][1]
        by_name: dict[str, float] = {}
        for key, name in self.names.items():
            if name not in exclude:
                by_name[name] = by_name.get(name, 0.0) + end[key] - before.get(key, self.first[key])
        return dict(sorted(by_name.items(), key=lambda item: -item[1]))


# ----------------------------------------------------------------------------- (c) Ray Train vs plain


def fit_student(config: Config, run_dir: str, expected: dict, workers: int, name: str, storage_path: str) -> dict:
    """One distill run through stages.workers.fit: `workers` Ray Train workers, 0 for local mode.

    Returns its per-epoch seconds, start-up, total, what its history says of
    the results and of the precision it ran in, and CPU seconds per process
    during the fit.
    """
    resources = dataclasses.replace(config.distill.resources, num_workers=workers)
    cpu = ProcessCPU().start()
    start = time.perf_counter()
    state = ray_workers.fit(
        distill_loop,
        {"config": config, "run_dir": run_dir, "expected": expected},
        resources,
        name=name,
        storage_path=storage_path,
        max_failures=0,  # a restart would be timed as training
    )
    end = time.perf_counter()
    cpu.stop()
    history = state["history"]
    epochs = [h["seconds"] for h in history]
    # While the epochs ran, approximately: the fit's last sum(epochs) seconds
    # (the set-up comes first; after the epochs, only the last report and the stop).
    ray_during_epochs = sum(cpu.used(since=end - sum(epochs), exclude=TRAINING_PROCESSES).values())
    return {
        "mode": "ray" if workers else "plain",
        "workers": workers,
        "total_s": end - start,
        "epoch_s": epochs,
        "startup_s": end - start - sum(epochs),
        "results": [{"epoch": h["epoch"], "loss": h["loss"], "val_acc": h["val_acc"]} for h in history],
        "precision_used": history[-1]["precision"],  # fp32 where the hardware could not run the config's
        "cpu_s": cpu.used(),
        "processes_started": cpu.started(),
        "other_cpu_s_during_epochs": ray_during_epochs,
    }


def measure_distill(config: Config, rounds: int, out: Path) -> dict:
    """(c): plain and Ray runs of distill_loop, alternating (plain, ray, ray, plain, ...)."""
    run_dir = config.run_dir
    expected = expected_cache(config)
    storage_path = out / "distill-runs"  # the Ray runs' checkpoints; a new name per run, so none resumes
    shutil.rmtree(storage_path, ignore_errors=True)
    runs = []
    for r in range(rounds):
        for workers in (0, 1) if r % 2 == 0 else (1, 0):
            mode = "ray" if workers else "plain"
            log(f"(c) round {r + 1}/{rounds}: distill, {mode}")
            run = fit_student(config, run_dir, expected, workers, f"speed-{mode}-{r}-{time.time_ns()}", str(storage_path))
            log(f"    epochs {', '.join(f'{s:.1f}' for s in run['epoch_s'])} s, start-up {run['startup_s']:.1f} s")
            runs.append(run)

    summary = {mode: epoch_summary([run for run in runs if run["mode"] == mode]) for mode in ("plain", "ray")}
    reference = runs[0]["results"]
    differences = [
        max(abs(a[key] - b[key]) for a, b in zip(reference, run["results"]) for key in ("loss", "val_acc")) for run in runs[1:]
    ]
    epochs, threads = config.distill.epochs, student_threads(config)
    return {
        "runs": runs,
        "modes": summary,
        "overhead": summary["ray"]["epoch_s"] / summary["plain"]["epoch_s"] - 1,
        "startup_extra_s": summary["ray"]["startup_s"] - summary["plain"]["startup_s"],
        "same_results": all(d == 0 for d in differences),
        "max_result_difference": max(differences, default=0.0),
        "epochs": epochs,
        "rounds": rounds,
        "threads": threads,
        "checkpoint_bytes": checkpoint_bytes(storage_path),
    }


def epoch_summary(runs: list[dict]) -> dict:
    """Medians over `fit_student` runs of one kind: the first epoch apart, the later ones pooled."""
    later = [s for run in runs for s in run["epoch_s"][1:]]
    return {
        "first_epoch_s": statistics.median(run["epoch_s"][0] for run in runs),
        "epoch_s": statistics.median(later),
        "epoch_spread": max(later) / min(later),
        "startup_s": statistics.median(run["startup_s"] for run in runs),
        "total_s": statistics.median(run["total_s"] for run in runs),
    }


def checkpoint_bytes(storage_path: Path) -> int | None:
    """Size of one checkpoint the Ray runs uploaded (what each report copies to storage)."""
    sizes = [sum(f.stat().st_size for f in d.iterdir()) for d in storage_path.glob("*/checkpoint_*") if d.is_dir()]
    return max(sizes) if sizes else None


def other_cpu(run: dict) -> float:
    """CPU seconds of the processes that do not train in a run (Ray's own, when it runs)."""
    return sum(s for name, s in run["cpu_s"].items() if name not in TRAINING_PROCESSES)


# ----------------------------------------------------------------------------- (d) experts


def measure_experts(base: Config, args, data_root: Path, out: Path) -> dict:
    """(d): the experts stage on fresh run directories, all experts at once and one at a time."""
    subsets = len(Manifest.load(base.run_dir).record("split").summary["subsets"])
    runs = {}
    for label, concurrent in (("concurrent", subsets), ("sequential", 1)):
        run_dir = out / f"experts-{label}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a rerun in place would skip: resources are not fingerprinted
        config = speed_config(args, data_root, run_dir, [f"experts.max_concurrent={concurrent}"])
        reuse_stages(config, base.run_dir, str(run_dir), stages=("split",), log=log)
        done = {}
        start = time.perf_counter()

        def note(line: str, done=done, start=start) -> None:  # called within this iteration only
            log(line)
            words = line.split()
            if line.startswith("experts: ") and len(words) > 2 and words[2] == "done,":
                done[words[1]] = time.perf_counter() - start

        log(f"(d) experts stage, {label}: {concurrent} at a time")
        run_pipeline(config, only="experts", log=note)
        results = {name: read_json(f"{expert_dir(str(run_dir), name)}/{EXPERT_RESULT}") for name in done}
        epochs = {name: sum(h["seconds"] for h in result["history"]) for name, result in results.items()}
        runs[label] = {"max_concurrent": concurrent, "wall_s": time.perf_counter() - start, "finished_s": done, "epochs_s": epochs}
    cpus = ray.cluster_resources().get("CPU", 0.0)
    per_expert = base.experts.resources.num_workers * base.experts.resources.cpus_per_worker
    return {
        "experts": subsets,
        "runs": runs,
        "speedup": runs["sequential"]["wall_s"] / runs["concurrent"]["wall_s"],
        "cluster_cpus": cpus,
        "cpus_per_expert": per_expert,
        "at_once": min(subsets, int(cpus // per_expert)),
        "threads_per_expert": max(1, int(base.experts.resources.cpus_per_worker)),
    }


# ----------------------------------------------------------------------------- (e) image decoding


def measure_decoding(config: Config, rounds: int) -> dict:
    """(e): one epoch of the student's training loader alone, images decoded every epoch vs once.

    The distill stage's loader (`rundir.data.make_loader`, augmenting
    transform, the distill batch size, in this process) over the run's
    training set, iterated without a model; rounds alternate the order.
    Decoding once costs a pass over the images when the loader is made
    (`decode_s`), repaid from the first epoch on.
    """
    train = load_split(config.run_dir, config.data).train
    epoch_s: dict[str, list[float]] = {"every_epoch": [], "once": []}
    decode_s = 0.0
    for r in range(rounds):
        for mode in ("every_epoch", "once") if r % 2 == 0 else ("once", "every_epoch"):
            data = dataclasses.replace(config.data, decode_once=mode == "once", loader_workers=0)
            start = time.perf_counter()
            loader = make_loader(train, data, True, config.distill.batch_size, every_epoch=True)
            made = time.perf_counter()
            for _ in loader:
                pass
            epoch_s[mode].append(time.perf_counter() - made)
            if mode == "once":
                decode_s = made - start
            log(f"(e) round {r + 1}/{rounds}: loader epoch, decode {mode.replace('_', ' ')}: {epoch_s[mode][-1]:.2f} s")
    every, once = (statistics.median(epoch_s[mode]) for mode in ("every_epoch", "once"))
    return {"images": len(train), "rounds": rounds, "epoch_s": epoch_s, "every_epoch_s": every, "once_s": once, "decode_s": decode_s, "speedup": every / once}


# ----------------------------------------------------------------------------- (f) fp32 vs bf16


def student_sampler(config: Config, split: SplitData) -> torch.utils.data.Sampler:
    """The distill stage's training sampler with one worker (local mode): what one epoch draws."""
    return make_sampler(config.distill, split.train.labels, split.class_counts, 1, 0, config.seed)


def student_threads(config: Config) -> int:
    """The torch threads a distill worker runs on (`stages.workers.worker_setup`)."""
    return max(1, int(config.distill.resources.cpus_per_worker))


def measure_precision(base: Config, rounds: int, out: Path) -> dict:
    """(f): distill_loop in local mode, fp32 against bf16, `rounds` pairs per arch of PRECISION_ARCHS."""
    # The base config's: every student reads the base's cache, and a fingerprint
    # computed from a config of another precision would name another cache.
    expected = expected_cache(base)
    images = len(student_sampler(base, load_split(base.run_dir, base.data)))
    batches = math.ceil(images / base.distill.batch_size)
    storage_path = str(out / "precision-runs")  # named, never written: local mode persists nothing
    runs, order = [], ("fp32", "bf16")
    for arch in PRECISION_ARCHS:
        for r in range(rounds):
            for precision in order:
                # The batched loader in this process: what (g) times alone.
                changes = {"model.arch": arch, "precision": precision, "data.decode_once": True, "data.loader_workers": 0}
                log(f"(f) {arch} round {r + 1}/{rounds}: distill, {precision}")
                name = f"speed-{arch}-{precision}-{r}-{time.time_ns()}"
                run = fit_student(with_values(base, changes), base.run_dir, expected, 0, name, storage_path)
                run.update(arch=arch, precision=precision)
                log(f"    epochs {', '.join(f'{s:.1f}' for s in run['epoch_s'])} s, val acc {100 * run['results'][-1]['val_acc']:.1f}%")
                runs.append(run)
            order = order[::-1]

    archs = {}
    for arch in PRECISION_ARCHS:
        modes = {}
        for precision in ("fp32", "bf16"):
            mine = [run for run in runs if run["arch"] == arch and run["precision"] == precision]
            summary = epoch_summary(mine)
            modes[precision] = {
                **summary,
                "ran_in": sorted({run["precision_used"] for run in mine}),
                "images_per_s": images / summary["epoch_s"],
                "ms_per_step": 1000 * summary["epoch_s"] / batches,
                "val_acc": [run["results"][-1]["val_acc"] for run in mine],
            }
        archs[arch] = {"modes": modes, "speedup": modes["fp32"]["epoch_s"] / modes["bf16"]["epoch_s"]}
    return {
        "runs": runs,
        "archs": archs,
        "images": images,
        "batches": batches,
        "epochs": base.distill.epochs,
        "rounds": rounds,
        "threads": student_threads(base),
    }


# ----------------------------------------------------------------------------- (g) loader share


def measure_loader(config: Config, rounds: int) -> dict:
    """(g): ms per batch of the student's training loader, PIL transforms on decoded images vs batched.

    Both over the run's training images, decoded when the loaders are made
    (not timed), with the student's sampler and batch size, iterated without
    a model in this process at the student's thread count; rounds alternate
    the order.
    """
    split, data, batch_size = load_split(config.run_dir, config.data), config.data, config.distill.batch_size
    sampler = student_sampler(config, split)
    decoded = split.train.decoded(fixed_size_step(data.transform, data.image_size))
    loaders = {
        "pil": torch.utils.data.DataLoader(
            ImageDataset(decoded, build_transform(data.transform, train=True, image_size=data.image_size)),
            batch_size=batch_size,
            sampler=sampler,
        ),
        "batched": make_loader(
            split.train, dataclasses.replace(data, decode_once=True, loader_workers=0), True, batch_size, sampler=sampler, every_epoch=True
        ),
    }
    threads, previous = student_threads(config), torch.get_num_threads()
    torch.set_num_threads(threads)  # the batch transform's tensor ops use them, as in the student's worker
    epoch_s: dict[str, list[float]] = {name: [] for name in loaders}
    try:
        for r in range(rounds):
            for name in list(loaders) if r % 2 == 0 else list(loaders)[::-1]:
                start = time.perf_counter()
                for _ in loaders[name]:
                    pass
                epoch_s[name].append(time.perf_counter() - start)
            log(f"(g) round {r + 1}/{rounds}: loader epoch, " + ", ".join(f"{name} {epoch_s[name][-1]:.2f} s" for name in loaders))
    finally:
        torch.set_num_threads(previous)
    batches = len(loaders["batched"])
    ms = {name: 1000 * statistics.median(times) / batches for name, times in epoch_s.items()}
    return {
        "images": len(sampler),
        "batches": batches,
        "batch_size": batch_size,
        "threads": threads,
        "rounds": rounds,
        "epoch_s": epoch_s,
        "ms_per_batch": ms,
        "speedup": ms["pil"] / ms["batched"],
    }


def loader_shares(loader: dict, precision: dict) -> dict:
    """(g): each loader's share of a student step of every arch and precision of (f).

    (f)'s steps ran the batched loader: compute = step - batched, and a
    loader's share = its ms / (its ms + compute).
    """
    shares = {}
    for arch, a in precision["archs"].items():
        for name, mode in a["modes"].items():
            compute = mode["ms_per_step"] - loader["ms_per_batch"]["batched"]
            shares.setdefault(arch, {})[name] = {
                "step_ms": mode["ms_per_step"],
                "compute_ms": compute,
                **{kind: ms / (ms + compute) for kind, ms in loader["ms_per_batch"].items()},
            }
    return shares


# ----------------------------------------------------------------------------- (h) the default run, before and after


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(ref: str, path: Path):
    """A detached git worktree of `ref` at `path`, removed when the block ends."""
    if path.exists():  # left by an interrupted run
        shutil.rmtree(path)
        git("worktree", "prune")
    git("worktree", "add", "--detach", str(path), ref)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def tree_environment(tree: Path) -> dict[str, str]:
    """ENVIRONMENT with `tree` first on PYTHONPATH, after checking that `python -m` in `tree` then imports its code.

    From the tree's root `python -m` imports the tree's packages before this
    checkout's editable install anyway, but the Ray workers of the run import
    the stages in processes of their own, which inherit PYTHONPATH.
    """
    env = dict(ENVIRONMENT, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), ENVIRONMENT.get("PYTHONPATH")])))
    probe = [sys.executable, "-c", "import pipeline; print(pipeline.__file__)"]
    imported = Path(subprocess.run(probe, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout.strip())
    if imported.resolve() != (tree / "pipeline" / "__init__.py").resolve():
        raise RuntimeError(f"python -m in {tree} imports {imported}, not the tree's pipeline")
    return env


def default_run(tree: Path, run_dir: Path, env: dict[str, str]) -> dict:
    """`lfme run ray_config.yaml` of `tree`, from its command line, on a fresh `run_dir`."""
    shutil.rmtree(run_dir, ignore_errors=True)
    output = run_dir.with_suffix(".log")
    command = [sys.executable, "-m", "pipeline.cli", "run", DEFAULT_CONFIG, "--run-dir", str(run_dir)]
    start = time.perf_counter()
    with open(output, "w") as f:
        done = subprocess.run(command, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"lfme run in {tree} failed with exit status {done.returncode}: see {output}")
    stages = read_json(run_dir / "manifest.json")["stages"]
    return {
        "wall_s": wall,
        "stages_s": {name: record["duration_s"] for name, record in stages.items()},
        "top1": read_json(run_dir / "evaluate" / "report.json")["student"]["overall"],
        "output": str(output),
    }


def measure_default_run(args, out: Path) -> dict:
    """(h): the default run in this checkout and, unless --skip-before, in a worktree of --before-ref."""
    work = out / "default-run"
    work.mkdir(parents=True, exist_ok=True)
    trees, commits = {}, {}
    with contextlib.ExitStack() as cleanup:
        if not args.skip_before:
            trees["before"] = cleanup.enter_context(worktree(args.before_ref, work / "before-tree"))
            commits["before"] = git("rev-parse", "--short", f"{args.before_ref}^{{commit}}")
        trees["after"] = REPO
        changed = git("status", "--porcelain")
        commits["after"] = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if changed else "")
        envs = {label: tree_environment(tree) for label, tree in trees.items()}
        runs: dict[str, list[dict]] = {label: [] for label in trees}
        for r in range(args.rounds):
            for label in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                log(f"(h) round {r + 1}/{args.rounds}: lfme run {DEFAULT_CONFIG}, {label} ({commits[label]})")
                run = default_run(trees[label], work / f"{label}-{r}", envs[label])
                log(f"    {run['wall_s']:.1f} s, test top-1 {100 * run['top1']:.2f}%")
                runs[label].append(run)
    summary = {
        label: {
            "commit": commits[label],
            "wall_s": statistics.median(run["wall_s"] for run in mine),
            "stages_s": {stage: statistics.median(run["stages_s"][stage] for run in mine) for stage in mine[0]["stages_s"]},
            "top1": [run["top1"] for run in mine],
        }
        for label, mine in runs.items()
    }
    return {"config": DEFAULT_CONFIG, "rounds": args.rounds, "runs": runs, "trees": summary}


# ----------------------------------------------------------------------------- report


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def limits(result: dict) -> dict[str, str]:
    """One line per figure: what bounds it, from the measured numbers."""
    ab, c, d = result["cache_speed"], result["distill"], result["experts"]
    cached, live = (ab["training"]["modes"][m]["ms_per_step"] for m in ("cached", "live"))
    data, teacher, student = cached["data"], live["teacher"], cached["student"]
    top = next((p["top"] for p in ab.get("profiles", []) if p["mode"] == "cached"), [])
    top_ops = ", ".join(f"{op['op']} {100 * op['share']:.0f}%" for op in top[:3])
    out = {
        "a": (
            f"arithmetic: cached/live <= 1 + teacher / (data + student) = {1 + teacher / (data + student):.2f}x here. "
            f"The three experts' forwards ({teacher:.0f} ms/step, {ab['setup']['precision']}) cost {teacher / student:.2f}x "
            f"the student's forward, backward and update ({student:.0f} ms); a backward costs about two forwards, so "
            f"experts of the student's size make that about 1, and loading ({data:.0f} ms: collation and the batch "
            f"transform, in the training process) only adds to the denominator. A cached step's top ops, the batch "
            f"transform's among them: {top_ops or 'no profile'}"
        ),
    }
    train_rate = ab["training"]["modes"]["cached"]["images_per_s"]
    slowest = min(ab["cache"], key=lambda row: row["read_rows_per_s"])
    images = ab["setup"]["train_images"]
    out["b"] = (
        f"Parquet's decoding of the float16 logits: the read rate falls with C "
        f"(C={slowest['num_classes']}: {slowest['read_rows_per_s']:,.0f} rows/s). A worker reads the cache once, before "
        f"training: {images} rows take {images / slowest['read_rows_per_s']:.2f} s at that rate, an epoch of "
        f"training {images / train_rate:.0f} s"
    )
    ray_run = next(run for run in c["runs"] if run["mode"] == "ray")
    plain_run = next(run for run in c["runs"] if run["mode"] == "plain")
    same = "identical" if c["same_results"] else f"differ by up to {c['max_result_difference']:.3g}"
    size = c["checkpoint_bytes"]
    megabytes = f"{size / 1e6:.1f} MB" if size else "size unknown"

    def cores(run: dict) -> float:
        return run["other_cpu_s_during_epochs"] / sum(run["epoch_s"])

    out["c"] = (
        f"the same loop does the same work (results {same}). Per epoch Ray adds a report that copies the checkpoint "
        f"({megabytes}) to storage, and its processes' CPU: {cores(ray_run):.2f} cores while the epochs ran "
        f"(plain: {cores(plain_run):.2f}), taken from the {c['threads']} threads the worker runs on "
        f"{os.cpu_count()} cores. Start-up, {c['modes']['ray']['startup_s']:.0f} s against "
        f"{c['modes']['plain']['startup_s']:.0f} s: a fit runs Ray Train's controller, worker and helper actors "
        f"({ray_run['processes_started']} processes started, the others from Ray's idle pool), which import Ray and "
        f"torch: {other_cpu(ray_run):.0f} CPU-s besides the worker's training"
    )
    sequential = d["runs"]["sequential"]
    order = sorted(sequential["finished_s"], key=sequential["finished_s"].get)
    ends = [sequential["finished_s"][name] for name in order]
    each = [b - a for a, b in zip([0.0] + ends[:-1], ends)]
    trained = [sequential["epochs_s"][name] for name in order]
    out["d"] = (
        f"Ray has {d['cluster_cpus']:.0f} CPUs and each expert reserves {d['cpus_per_expert']:g}: at most "
        f"{d['at_once']} of the {d['experts']} experts train at once, the rest wait for a slot; with "
        f"{d['threads_per_expert']} thread(s) each, at most {d['at_once'] * d['threads_per_expert']} of the "
        f"{os.cpu_count()} cores compute. One after another the experts took {', '.join(f'{s:.0f}' for s in each)} s, "
        f"of which their epochs {', '.join(f'{s:.0f}' for s in trained)} s: the rest is each task's set-up on a Ray "
        f"worker (data, model; torch's import on a fresh worker), which concurrency overlaps, though on the same cores"
    )
    e = result["decoding"]
    saved = e["every_epoch_s"] - e["once_s"]
    decoded_in_c = result["meta"]["config"]["data"]["decode_once"]
    out["e"] = (
        f"decoded once, an epoch of the loader is its augmentation (padded crop, flip) and tensor conversion: "
        f"{e['once_s']:.1f} s against {e['every_epoch_s']:.1f} s with PNG decoding, for {e['images']} images. The one-off "
        f"decode ({e['decode_s']:.1f} s) is repaid after {e['decode_s'] / saved:.1f} epoch(s) and saves {saved:.1f} s of every "
        f"later one; a student epoch in (c) took {c['modes']['plain']['epoch_s']:.1f} s "
        f"(images decoded {'once' if decoded_in_c else 'every epoch'} there)"
        if saved > 0
        else f"decoding once saved nothing here ({e['once_s']:.2f} s vs {e['every_epoch_s']:.2f} s per epoch)"
    )
    f, g = result["precision"], result["loader"]
    loading = g["ms_per_batch"]["batched"]

    def step(arch: str) -> str:
        fp32, bf16 = (f["archs"][arch]["modes"][p]["ms_per_step"] for p in ("fp32", "bf16"))
        return f"{arch} {fp32:.0f} -> {bf16:.0f} ms ({(fp32 - loading) / (bf16 - loading):.2f}x without the loader)"

    fell_back = [arch for arch, a in f["archs"].items() if a["modes"]["bf16"]["ran_in"] != ["bf16"]]
    out["f"] = (
        f"bf16 speeds up the convolutions and matrix products, not the rest of a step: the loader ({loading:.0f} ms "
        f"per step in both, from (g)), the fp32 loss and optimiser step, each epoch's validation and checkpoint. "
        f"Per step: {', '.join(step(arch) for arch in f['archs'])}"
        + (f". bf16 FELL BACK to fp32 for {', '.join(fell_back)} (no native bf16 on this CPU)" if fell_back else "")
    )
    shares, threads = g["shares"], g["threads"]
    per_image = {kind: 1000 * ms / g["batch_size"] for kind, ms in g["ms_per_batch"].items()}
    steps = "; ".join(
        f"{arch} {precision} {share['compute_ms']:.0f} ms ({100 * share['batched']:.1f}%, PIL {100 * share['pil']:.0f}%)"
        for arch, by_precision in shares.items()
        for precision, share in by_precision.items()
    )
    out["g"] = (
        f"batched: {per_image['batched']:.0f} us per image (the padded crop and flip as one gather of uint8 pixels, "
        f"then the float conversion and normalisation, on {threads} thread(s)) against {per_image['pil']:.0f} us in "
        f"PIL's per-image transforms, {g['speedup']:.1f}x. A share is of a step: the faster the compute, the larger "
        f"the same loader's share. Compute per step, and the loader's share, by student: {steps}"
    )
    trees = result["default_run"]["trees"]

    def breakdown(tree: dict) -> str:
        outside = tree["wall_s"] - sum(tree["stages_s"].values())
        stages = ", ".join(f"{stage} {s:.0f}" for stage, s in tree["stages_s"].items())
        return f"{stages} s, and {outside:.0f} s outside the stages"

    after = trees["after"]["stages_s"]
    out["h"] = f"after: {breakdown(trees['after'])}; the longest stage is {max(after, key=after.get)}"
    if "before" in trees:
        before = trees["before"]["stages_s"]
        saved = max((stage for stage in after if stage in before), key=lambda stage: before[stage] - after[stage])
        out["h"] += f". Before: {breakdown(trees['before'])}; the most saved in {saved} ({before[saved]:.0f} -> {after[saved]:.0f} s)"
    out["h"] += ". Outside the stages: the interpreter and imports, Ray's start and stop"
    return out


def yes(met: bool) -> str:
    return "yes" if met else "no"


def render(result: dict) -> str:
    meta, ab, c, d, e = result["meta"], result["cache_speed"], result["distill"], result["experts"], result["decoding"]
    f, g, h = result["precision"], result["loader"], result["default_run"]
    why = limits(result)
    ratio = ab["training"]["ratio_cached_over_live"]
    read = [row["read_over_training_rate"] for row in ab["cache"]]
    speedups = {arch: a["speedup"] for arch, a in f["archs"].items()}
    last_acc = {arch: [100 * statistics.median(a["modes"][p]["val_acc"]) for p in ("fp32", "bf16")] for arch, a in f["archs"].items()}
    val_accs = ", ".join(f"{arch} {fp32:.1f} / {bf16:.1f}%" for arch, (fp32, bf16) in last_acc.items())
    judged, fp32_step = g["shares"][PRECISION_ARCHS[0]]["bf16"], g["shares"][PRECISION_ARCHS[0]]["fp32"]
    after = h["trees"]["after"]
    before = h["trees"].get("before")
    reference_top1 = statistics.median(before["top1"]) if before else DEFAULT_RUN_TOP1
    after_top1 = statistics.median(after["top1"])
    summary = markdown_table(
        ["figure", "measured", "goal", "met", "what limits it"],
        [
            [
                f"(a) student images/s, cache / 3 live teachers ({ab['setup']['precision']})",
                f"{ratio:.2f}x",
                ">= 2x",
                yes(ratio >= GOALS["cache_ratio"]),
                why["a"],
            ],
            [
                "(b) cache read rows/s / training images/s",
                f"{min(read):,.0f}x to {max(read):,.0f}x (C = {', '.join(str(r['num_classes']) for r in ab['cache'])})",
                ">> 1 (taken as > 10x)",
                yes(min(read) > 10),
                why["b"],
            ],
            [
                "(c) time per epoch, Ray Train (1 worker) / plain PyTorch",
                pct(c["overhead"]),
                "<= +5%",
                yes(c["overhead"] <= GOALS["ray_overhead"]),
                why["c"],
            ],
            [
                f"(d) experts stage, {d['experts']} at once vs one at a time",
                f"{d['speedup']:.2f}x faster",
                "none set",
                "",
                why["d"],
            ],
            ["(e) training loader epoch, images decoded every epoch / once", f"{e['speedup']:.2f}x faster", "none set", "", why["e"]],
            [
                "(f) student epoch, fp32 / bf16",
                ", ".join(f"{arch} {x:.2f}x" for arch, x in speedups.items()) + f" (last val acc fp32 / bf16: {val_accs})",
                ">= 2x each",
                yes(min(speedups.values()) >= GOALS["bf16_speedup"]),
                why["f"],
            ],
            [
                f"(g) batched loader's share of a bf16 {PRECISION_ARCHS[0]} student step",
                f"{100 * judged['batched']:.1f}% (PIL on decoded images: {100 * judged['pil']:.0f}%); fp32 step: "
                f"{100 * fp32_step['batched']:.1f}% (PIL {100 * fp32_step['pil']:.0f}%)",
                f"<= {100 * GOALS['loader_share']:.0f}% (before: {100 * LOADER_SHARE_BEFORE:.0f}%)",
                yes(judged["batched"] <= GOALS["loader_share"]),
                why["g"],
            ],
            [
                f"(h) default `lfme run` ({h['config']}, digits), wall time",
                f"{after['wall_s']:.0f} s, test top-1 {100 * after_top1:.2f}%"
                + (f" (before: {before['wall_s']:.0f} s, {100 * reference_top1:.2f}%)" if before else " (before: not run)"),
                f"<= {GOALS['default_run_s']:.0f} s, top-1 as before ({100 * reference_top1:.1f}%)",
                yes(after["wall_s"] <= GOALS["default_run_s"] and after_top1 >= reference_top1),
                why["h"],
            ],
        ],
        ["l", "r", "l", "l", "l"],
    )
    warnings = []
    if ab["training"]["ratio_per_round"] and max(ab["training"]["ratio_per_round"]) / min(ab["training"]["ratio_per_round"]) > NOISY_SPREAD:
        warnings.append("(a): the rounds' ratios differ by more than 15%")
    for mode in ("plain", "ray"):
        if c["modes"][mode]["epoch_spread"] > NOISY_SPREAD:
            warnings.append(f"(c): the {mode} epochs' times differ by {100 * (c['modes'][mode]['epoch_spread'] - 1):.0f}%")
    for arch, a in f["archs"].items():
        for precision, m in a["modes"].items():
            if m["epoch_spread"] > NOISY_SPREAD:
                warnings.append(f"(f): the {arch} {precision} epochs' times differ by {100 * (m['epoch_spread'] - 1):.0f}%")
    distill_rows = [
        [
            mode,
            f"{m['first_epoch_s']:.1f}",
            f"{m['epoch_s']:.1f}",
            f"{100 * (m['epoch_spread'] - 1):.0f}%",
            f"{m['startup_s']:.1f}",
            f"{m['total_s']:.1f}",
        ]
        for mode, m in c["modes"].items()
    ]
    runs_rows = [
        [
            run["mode"],
            ", ".join(f"{s:.1f}" for s in run["epoch_s"]),
            f"{run['startup_s']:.1f}",
            ", ".join(f"{name} {s:.1f}" for name, s in run["cpu_s"].items() if s >= 0.5),
        ]
        for run in c["runs"]
    ]
    expert_rows = [
        [
            label,
            run["max_concurrent"],
            f"{run['wall_s']:.1f}",
            ", ".join(f"{n} {s:.0f}" for n, s in run["finished_s"].items()),
            ", ".join(f"{n} {s:.1f}" for n, s in run["epochs_s"].items()),
        ]
        for label, run in d["runs"].items()
    ]
    same_results = "identical" if c["same_results"] else f"DIFFERENT (max difference {c['max_result_difference']:.3g})"
    lines = [
        f"# Speed{' (quick)' if meta['quick'] else ''}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpus']} CPU cores, load average {meta['load_start']:.1f} at the start, "
        f"{meta['load_end']:.1f} at the end; torch {meta['versions']['torch']}, ray {meta['versions']['ray']}; "
        f"wall time {meta['wall_s'] / 60:.1f} min.  ",
        f"Data: CIFAR-10-LT (imbalance factor 100) from `{meta['data_root']}`, {meta['train_images']} training images; "
        f"overrides of `configs/cifar10-lt.yaml`: {', '.join(f'`{s}`' for s in meta['overrides'])}.",
        "",
        *summary,
        "",
    ]
    if warnings:
        lines += [f"WARNING: noisy ({'; '.join(warnings)}): load on the machine changed during the run; rerun when it is idle.", ""]
    lines += [
        "## (a), (b): benchmarks.cache_speed",
        "",
        "```text",
        cache_speed.report(ab),
        "```",
        "",
        "## (c) distill: Ray Train vs plain PyTorch",
        "",
        f"`stages.distill.distill_loop` through `stages.workers.fit`, {c['epochs']} epochs x {c['rounds']} round(s) "
        f"per mode; `plain` is Ray Train's local mode (the loop in this process, no actors), `ray` one worker "
        f"actor with {c['threads']} threads. Seconds per epoch from the histories (checkpoint to checkpoint); "
        f"\"later epochs\" are epochs 2..{c['epochs']} (median), the overhead's basis. Losses and validation "
        f"accuracies of every run: {same_results}.",
        "",
        *markdown_table(
            ["mode", "first epoch s", "later epochs s", "spread", "start-up s", "total s"], distill_rows, ["l", "r", "r", "r", "r", "r"]
        ),
        "",
        f"Overhead per epoch: {pct(c['overhead'])} (goal <= +5%); Ray's extra start-up: {c['startup_extra_s']:.1f} s per fit.",
        "",
        *markdown_table(["run", "epochs s", "start-up s", "CPU s by process during the fit"], runs_rows, ["l", "l", "r", "l"]),
        "",
        "## (d) experts: concurrent vs sequential",
        "",
        f"The experts stage ({d['experts']} experts, 1 epoch) on fresh run directories seeded with the same split. "
        f"Ray: {d['cluster_cpus']:.0f} CPUs; each expert reserves {d['cpus_per_expert']:g} CPU(s), so {d['at_once']} "
        f"train at once.",
        "",
        *markdown_table(
            ["run", "max_concurrent", "wall s", "each expert done after (s)", "its epochs (s, from its history)"],
            expert_rows,
            ["l", "r", "r", "l", "l"],
        ),
        "",
        f"Concurrent is {d['speedup']:.2f}x faster than sequential.",
        "",
        "## (e) image decoding: every epoch vs once",
        "",
        f"One epoch of the distill stage's training loader over the {e['images']} training images, no model, "
        f"in this process (no loader workers); {e['rounds']} rounds in alternating order.",
        "",
        *markdown_table(
            ["images decoded", "epochs s", "median s"],
            [[mode.replace("_", " "), ", ".join(f"{t:.2f}" for t in e["epoch_s"][mode]), f"{statistics.median(e['epoch_s'][mode]):.2f}"] for mode in e["epoch_s"]],
            ["l", "l", "r"],
        ),
        "",
        f"Decoding once: {e['decode_s']:.1f} s when the loader is made, then {e['speedup']:.2f}x faster epochs.",
        "",
        *render_precision(f),
        *render_loader(g),
        *render_default_run(h),
    ]
    return "\n".join(lines)


def render_precision(f: dict) -> list[str]:
    rows = [
        [
            arch,
            precision + ("" if m["ran_in"] == [precision] else f" (ran in {', '.join(m['ran_in'])})"),
            f"{m['first_epoch_s']:.1f}",
            f"{m['epoch_s']:.1f}",
            f"{100 * (m['epoch_spread'] - 1):.0f}%",
            f"{m['images_per_s']:.0f}",
            f"{m['ms_per_step']:.0f}",
            ", ".join(f"{100 * acc:.1f}%" for acc in m["val_acc"]),
        ]
        for arch, a in f["archs"].items()
        for precision, m in a["modes"].items()
    ]
    return [
        "## (f) student epoch: fp32 vs bf16",
        "",
        f"`stages.distill.distill_loop` in local mode (as (c)'s plain runs) on the base run's cache, "
        f"{f['epochs']} epochs x {f['rounds']} round(s) per arch and precision, the order alternating; "
        f"{f['images']} training images ({f['batches']} batches) per epoch, batched augmentation in the training "
        f"process, {f['threads']} threads. Later epochs: 2..{f['epochs']} (median); img/s and ms per step from it.",
        "",
        *markdown_table(
            ["arch", "precision", "first epoch s", "later epochs s", "spread", "img/s", "ms/step", "last val acc"],
            rows,
            ["l", "l", "r", "r", "r", "r", "r", "r"],
        ),
        "",
        "bf16 over fp32: " + ", ".join(f"{arch} {a['speedup']:.2f}x" for arch, a in f["archs"].items()) + " (goal >= 2x each).",
        "",
    ]


def render_loader(g: dict) -> list[str]:
    loaders = {"pil": "PIL transforms, decoded images", "batched": "batched transform (make_loader, decode_once)"}
    timing = [
        [
            loaders[kind],
            ", ".join(f"{s:.2f}" for s in g["epoch_s"][kind]),
            f"{ms:.1f}",
            f"{1000 * ms / g['batch_size']:.0f}",
        ]
        for kind, ms in g["ms_per_batch"].items()
    ]
    shares = [
        [arch, precision, f"{s['step_ms']:.0f}", f"{s['compute_ms']:.0f}", f"{100 * s['batched']:.1f}%", f"{100 * s['pil']:.1f}%"]
        for arch, by_precision in g["shares"].items()
        for precision, s in by_precision.items()
    ]
    return [
        "## (g) loader per step: PIL vs batched",
        "",
        f"The student's training loader alone over {g['images']} images an epoch ({g['batches']} batches of "
        f"{g['batch_size']}, the student's sampler), no model, in this process at {g['threads']} thread(s); "
        f"{g['rounds']} rounds in alternating order.",
        "",
        *markdown_table(["loader", "epochs s", "ms per batch", "us per image"], timing, ["l", "l", "r", "r"]),
        "",
        f"Batched is {g['speedup']:.1f}x faster. Share of a student step (step and compute from (f): compute = step "
        f"- batched loader, which (f)'s steps ran; validation and checkpoint included), goal <= "
        f"{100 * GOALS['loader_share']:.0f}% for bf16 {PRECISION_ARCHS[0]} (before: {100 * LOADER_SHARE_BEFORE:.0f}%):",
        "",
        *markdown_table(
            ["student", "precision", "step ms", "compute ms", "batched share", "PIL share"], shares, ["l", "l", "r", "r", "r", "r"]
        ),
        "",
    ]


def render_default_run(h: dict) -> list[str]:
    trees = h["trees"]
    stages = list(dict.fromkeys(stage for tree in trees.values() for stage in tree["stages_s"]))
    rows = [
        [
            label,
            tree["commit"],
            f"{tree['wall_s']:.1f}",
            *(f"{tree['stages_s'][stage]:.1f}" if stage in tree["stages_s"] else "" for stage in stages),
            f"{tree['wall_s'] - sum(tree['stages_s'].values()):.1f}",
            ", ".join(f"{100 * top1:.2f}%" for top1 in tree["top1"]),
        ]
        for label, tree in trees.items()
    ]
    return [
        "## (h) the default run, before and after",
        "",
        f"`python -m pipeline.cli run {h['config']}` in a subprocess on a fresh run directory, {h['rounds']} round(s) "
        f"per tree{', order alternating' if h['rounds'] > 1 and len(trees) > 1 else ''}; wall time of the subprocess, "
        f"stage seconds from the run's manifest (medians), test top-1 of each run."
        + ("" if "before" in trees else " The before-run was skipped (--skip-before)."),
        "",
        *markdown_table(
            ["tree", "commit", "wall s", *(f"{stage} s" for stage in stages), "outside the stages s", "test top-1"],
            rows,
            ["l", "l", "r", *("r" for _ in stages), "r", "r"],
        ),
        "",
    ]


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500 images per class, 3 student epochs, shorter (a), (b)")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/speed or speed-quick)")
    parser.add_argument("--data", default=str(DATA), help="CIFAR-10 ImageFolder root (train/, test/)")
    parser.add_argument("--per-class", type=int, help="first N training images per class (default: all; 500 with --quick)")
    parser.add_argument("--epochs", type=int, help="student epochs per run in (c) and (f) (default 4; 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="runs per mode in (c), (f) and (h), in alternating order (default 2; 1 with --quick)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides for (c) to (g)")
    parser.add_argument("--before-ref", default="bbc16ad", help="(h): the git ref whose default run is 'before' (default: bbc16ad)")
    parser.add_argument("--views", type=int, default=1, help="(a): also a cache of this many augmented views per image (cache.views)")
    parser.add_argument("--skip-before", action="store_true", help="(h): run the default run of this checkout only")
    args = parser.parse_args(argv)
    defaults = {"per_class": (None, 500), "epochs": (4, 3), "rounds": (2, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch is not compared)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or REPO / "benchmarks" / "results" / ("speed-quick" if args.quick else "speed")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), os.getloadavg()[0]

    source = Path(args.data).resolve()
    data_root = shrunk_cifar(source, out / "data" / f"cifar10-{args.per_class}", args.per_class) if args.per_class else source
    base = speed_config(args, data_root, out / "base")
    init_ray(base.ray)  # one Ray for every part: run_pipeline leaves a Ray it did not start running
    try:
        log(f"base run (split, experts, cache) in {base.run_dir}")
        build_base(base)
        decoding = measure_decoding(base, max(2, args.rounds))
        distill = measure_distill(base, args.rounds, out)
        precision = measure_precision(base, args.rounds, out)
        loader = measure_loader(base, max(3, args.rounds))
        experts = measure_experts(base, args, data_root, out)
    finally:
        ray.shutdown()
    loader["shares"] = loader_shares(loader, precision)
    default_run = measure_default_run(args, out)  # its own Ray, in each run's process

    ab_args = ["--data", str(data_root), "--arch", base.model.arch, "--precision", PRESET_PRECISION]
    ab_args += ["--profile", "3", "--tmp", str(out)]
    if args.quick:
        ab_args += ["--quick", "--batches", "10"]
    if args.views > 1:
        ab_args += ["--views", str(args.views)]
    log("(a), (b): benchmarks.cache_speed " + " ".join(ab_args))
    ab = cache_speed.measure(cache_speed.parse_args(ab_args))

    result = {
        "meta": {
            "command": " ".join(["python", "-m", "benchmarks.speed", *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
            "wall_s": time.perf_counter() - started,
            "data_root": str(data_root),
            "train_images": Manifest.load(base.run_dir).record("split").summary["train"],
            "overrides": effective(overrides(args)),
            "versions": {"torch": torch.__version__, "ray": ray.__version__},
            "config": base.to_dict(),
        },
        "cache_speed": ab,
        "distill": distill,
        "experts": experts,
        "decoding": decoding,
        "precision": precision,
        "loader": loader,
        "default_run": default_run,
    }
    result["limits"] = limits(result)
    write_json_atomic(out / "speed.json", result)
    write_text_atomic(out / "speed.md", render(result))
    print((out / "speed.md").read_text())
    return result


if __name__ == "__main__":
    main()
