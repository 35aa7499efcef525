"""`python -m benchmarks.speed`: the arguments, and every part run in turn into DIR/speed.json and DIR/speed.md."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ray
import torch

import benchmarks.speed
from benchmarks import cache_speed
from benchmarks.speed.common import build_base, effective, log, overrides, shrunk_cifar, speed_config
from benchmarks.speed.default_run import measure_default_run
from benchmarks.speed.distill import measure_distill
from benchmarks.speed.experts import measure_experts
from benchmarks.speed.limits import limits
from benchmarks.speed.loading import loader_shares, measure_decoding, measure_loader
from benchmarks.speed.precision import measure_precision
from benchmarks.speed.render import render
from benchmarks.speed.settings import DATA, PRESET_PRECISION, REPO
from lfme.storage import write_json_atomic, write_text_atomic
from pipeline.manifest import Manifest
from pipeline.ray_session import init_ray
from rundir.config import Config


def parse_args(argv=None) -> argparse.Namespace:
    description = (benchmarks.speed.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def measure_on_ray(args, base: Config, data_root: Path, out: Path) -> dict:
    """(c) to (g), on one Ray for every part (run_pipeline leaves a Ray it did not start running)."""
    init_ray(base.ray)
    try:
        log(f"base run (split, experts, cache) in {base.run_dir}")
        build_base(base)
        parts = {"decoding": measure_decoding(base, max(2, args.rounds))}
        parts["distill"] = measure_distill(base, args.rounds, out)
        parts["precision"] = measure_precision(base, args.rounds, out)
        parts["loader"] = measure_loader(base, max(3, args.rounds))
        parts["experts"] = measure_experts(base, args, data_root, out)
    finally:
        ray.shutdown()
    parts["loader"]["shares"] = loader_shares(parts["loader"], parts["precision"])
    return parts


def measure_cache_speed(args, base: Config, data_root: Path, out: Path) -> dict:
    """(a) and (b): benchmarks.cache_speed on the same data, in the presets' precision."""
    ab_args = ["--data", str(data_root), "--arch", base.model.arch, "--precision", PRESET_PRECISION]
    ab_args += ["--profile", "3", "--tmp", str(out)]
    if args.quick:
        ab_args += ["--quick", "--batches", "10"]
    if args.views > 1:
        ab_args += ["--views", str(args.views)]
    log("(a), (b): benchmarks.cache_speed " + " ".join(ab_args))
    return cache_speed.measure(cache_speed.parse_args(ab_args))


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or REPO / "benchmarks" / "results" / ("speed-quick" if args.quick else "speed")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), os.getloadavg()[0]

    source = Path(args.data).resolve()
    data_root = shrunk_cifar(source, out / "data" / f"cifar10-{args.per_class}", args.per_class) if args.per_class else source
    base = speed_config(args, data_root, out / "base")
    parts = measure_on_ray(args, base, data_root, out)
    parts["default_run"] = measure_default_run(args, out)  # its own Ray, in each run's process
    ab = measure_cache_speed(args, base, data_root, out)

    meta = {
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
    }
    order = ("distill", "experts", "decoding", "precision", "loader", "default_run")
    result = {"meta": meta, "cache_speed": ab, **{key: parts[key] for key in order}}
    result["limits"] = limits(result)
    write_json_atomic(out / "speed.json", result)
    write_text_atomic(out / "speed.md", render(result))
    print((out / "speed.md").read_text())
    return result


if __name__ == "__main__":
    main()
