"""(f): a student epoch in fp32 against bf16, for each arch of PRECISION_ARCHS, through (c)'s `fit_student` in local mode."""

from __future__ import annotations

import math
import time
from pathlib import Path

from benchmarks.speed.common import expected_cache, log, student_sampler, student_threads
from benchmarks.speed.distill import epoch_summary, fit_student
from benchmarks.speed.settings import PRECISION_ARCHS
from rundir.config import Config, with_values
from rundir.layout import load_split


def precision_runs(base: Config, rounds: int, expected: dict, storage_path: str) -> list[dict]:
    """`rounds` pairs of local-mode runs per arch, fp32 and bf16 in alternating order from pair to pair."""
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
    return runs


def arch_summary(runs: list[dict], arch: str, images: int, batches: int) -> dict:
    """One arch's medians per precision (as `epoch_summary`), its img/s, ms per step and last validation accuracies."""
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
    return {"modes": modes, "speedup": modes["fp32"]["epoch_s"] / modes["bf16"]["epoch_s"]}


def measure_precision(base: Config, rounds: int, out: Path) -> dict:
    """(f): distill_loop in local mode, fp32 against bf16, `rounds` pairs per arch of PRECISION_ARCHS."""
    # The base config's: every student reads the base's cache, and a fingerprint
    # computed from a config of another precision would name another cache.
    expected = expected_cache(base)
    images = len(student_sampler(base, load_split(base.run_dir, base.data)))
    batches = math.ceil(images / base.distill.batch_size)
    storage_path = str(out / "precision-runs")  # named, never written: local mode persists nothing
    runs = precision_runs(base, rounds, expected, storage_path)
    return {
        "runs": runs,
        "archs": {arch: arch_summary(runs, arch, images, batches) for arch in PRECISION_ARCHS},
        "images": images,
        "batches": batches,
        "epochs": base.distill.epochs,
        "rounds": rounds,
        "threads": student_threads(base),
    }
