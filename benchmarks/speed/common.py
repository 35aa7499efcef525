"""What the parts share: the shrunk data, the config of a run, the base run, the student's sampler and threads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from benchmarks import cache_speed
from benchmarks.speed.settings import PRESET, SCALE
from pipeline.graph import TEACHER_STAGES, fingerprints
from pipeline.runner import run_pipeline
from rundir.config import Config, load_config, with_absolute_paths
from rundir.layout import SplitData, load_split, verified_cache
from stages.distill import make_sampler

log = cache_speed.log


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


def student_sampler(config: Config, split: SplitData) -> torch.utils.data.Sampler:
    """The distill stage's training sampler with one worker (local mode): what one epoch draws."""
    return make_sampler(config.distill, split.train.labels, split.class_counts, 1, 0, config.seed)


def student_threads(config: Config) -> int:
    """The torch threads a distill worker runs on (`stages.workers.worker_setup`)."""
    return max(1, int(config.distill.resources.cpus_per_worker))
