"""(c): the distill stage's loop under Ray Train (one worker) against plain PyTorch (Ray Train's local mode).

`fit_student` is one run of the loop through `stages.workers.fit`; (f) runs it
in local mode too, and shares `epoch_summary`.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.speed.common import expected_cache, log, student_threads
from benchmarks.speed.processes import ProcessCPU
from benchmarks.speed.settings import TRAINING_PROCESSES
from rundir.config import Config
from stages import workers as ray_workers
from stages.distill import distill_loop


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
    return {
        "runs": runs,
        "modes": summary,
        "overhead": summary["ray"]["epoch_s"] / summary["plain"]["epoch_s"] - 1,
        "startup_extra_s": summary["ray"]["startup_s"] - summary["plain"]["startup_s"],
        "same_results": all(d == 0 for d in differences),
        "max_result_difference": max(differences, default=0.0),
        "epochs": config.distill.epochs,
        "rounds": rounds,
        "threads": student_threads(config),
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
