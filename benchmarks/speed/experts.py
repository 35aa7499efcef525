"""(d): the experts stage with all its experts launched at once against one after another."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import ray

from benchmarks.speed.common import log, speed_config
from lfme.storage import read_json
from pipeline.manifest import Manifest
from pipeline.reuse import reuse_stages
from pipeline.runner import run_pipeline
from rundir.config import Config
from rundir.layout import EXPERT_RESULT, expert_dir


def experts_run(config: Config, label: str) -> dict:
    """One run of the experts stage on `config`'s run directory: its wall time, when each expert finished, its epochs."""
    run_dir = config.run_dir
    done: dict[str, float] = {}
    start = time.perf_counter()

    def note(line: str) -> None:
        log(line)
        words = line.split()
        if line.startswith("experts: ") and len(words) > 2 and words[2] == "done,":
            done[words[1]] = time.perf_counter() - start

    log(f"(d) experts stage, {label}: {config.experts.max_concurrent} at a time")
    run_pipeline(config, only="experts", log=note)
    results = {name: read_json(f"{expert_dir(str(run_dir), name)}/{EXPERT_RESULT}") for name in done}
    epochs = {name: sum(h["seconds"] for h in result["history"]) for name, result in results.items()}
    return {"max_concurrent": config.experts.max_concurrent, "wall_s": time.perf_counter() - start, "finished_s": done, "epochs_s": epochs}


def measure_experts(base: Config, args, data_root: Path, out: Path) -> dict:
    """(d): the experts stage on fresh run directories, all experts at once and one at a time."""
    subsets = len(Manifest.load(base.run_dir).record("split").summary["subsets"])
    runs = {}
    for label, concurrent in (("concurrent", subsets), ("sequential", 1)):
        run_dir = out / f"experts-{label}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a rerun in place would skip: resources are not fingerprinted
        config = speed_config(args, data_root, run_dir, [f"experts.max_concurrent={concurrent}"])
        reuse_stages(config, base.run_dir, str(run_dir), stages=("split",), log=log)
        runs[label] = experts_run(config, label)
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
