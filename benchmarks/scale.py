"""The teacher cache at scale, simulated: peak memory of the cache stage and the student's reader.

    python -m benchmarks.scale [--sizes imagenet-lt,middle,inat2018] [--out DIR] [--set KEY=VALUE ...]

For each size, a generated long-tailed data set (`data.source: synthetic`:
images made from their sample id, no files; `lfme.data.long_tailed_profile`)
with tiny experts and student (small_cnn on 8x8 images, one epoch each) runs
through the real pipeline: split, experts, the cache stage (its tasks and its
driver) and the distill stage with 2 Ray Train workers reading the cache as
the student does. A sampler thread reads every 0.2 s, from /proc:

- the driver (this process): its proportional set size (PSS);
- each cache task's process while it runs a cache task: its PSS;
- each distill worker: its PSS and the PSS of its mappings of the node's
  cache copy, and the two workers' sums at the same instant.

PSS divides a page shared by k processes by k, so the workers' sum counts a
page of the shared cache copy once: "the two workers hold the logits at most
once" reads as: peak sum of their cache-mapping PSS <= the logits' bytes.
Also reported: each stage's wall time (manifest), the student's epochs
(its history: the stage's time less the node-local copy and the workers'
start, so what reading the cache costs), the cache's bytes on disk and the
node-local copy's.

Sizes: ImageNet-LT (115,846 images, 1,000 classes, 1280..2 per class),
a middle size, iNaturalist 2018 (437,513 images, 8,142 classes, 1000..2).
Results: `<out>/<size>/scale.json` per size (a finished size is not rerun
unless `--fresh`; an unfinished one starts over), and `<out>/scale.md`.

`--plan` runs nothing: for every size it prints the training part's teacher
signal in bytes for cache.views 1 and 4, every logit and top-10, from the
cache's schema (`lfme.teacher_cache.arrow_schema`): what the Parquet shards
hold (uncompressed, so the cache on disk is this plus a few kB per shard),
what the node-local copy holds, and the most a node's workers can map of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from lfme import storage
from lfme.teacher_cache import signal_bytes_per_row
from pipeline.manifest import Manifest
from pipeline.runner import run_pipeline
from rundir.config import load_config
from rundir.layout import cache_dir, history_file

REPO = Path(__file__).resolve().parents[1]
# name -> (training images, classes, head class size)
SIZES = {
    "imagenet-lt": (115_846, 1_000, 1_280),
    "middle": (250_000, 4_000, 1_100),
    "inat2018": (437_513, 8_142, 1_000),
}
TINY = [
    "data.source=synthetic",
    "data.transform=cifar",
    "data.image_size=8",
    "data.decode_once=true",
    "data.check_images=false",
    "data.imbalance_factor=null",
    "data.val_per_class=1",
    "split.method=thresholds",
    "model.arch=small_cnn",
    "precision=fp32",
    "experts.epochs=1",
    "experts.batch_size=512",
    "experts.resources.cpus_per_worker=1",
    "cache.batch_size=1024",
    "cache.resources.cpus_per_worker=1",
    "distill.epochs=1",
    "distill.batch_size=512",
    "distill.resources.num_workers=2",
    "distill.resources.cpus_per_worker=1",
    "data.loader_workers=0",
]
CACHE_TASK_TITLES = ("cache_shard", "expert_logits")  # after, before (one task per expert)
DISTILL_TITLE = "RayTrainWorker"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def pss_bytes(pid: int, marker: str | None = None) -> int:
    """Proportional set size of `pid`; with `marker`, only of its mappings whose path contains it."""
    if marker is None:
        for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
        return 0
    total, inside = 0, False
    for line in _read(f"/proc/{pid}/smaps").splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            inside = len(head) == 6 and marker in head[5]
        elif inside and line.startswith("Pss:"):
            total += int(line.split()[1]) * 1024
    return total


def descendants(root: int) -> set[int]:
    """Processes below `root`: the Ray cluster this driver started (raylet, workers), not another one on the machine."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class MemorySampler(threading.Thread):
    """Peak PSS of the driver, of cache task processes and of distill workers, sampled from /proc."""

    def __init__(self, cache_marker: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.marker, self.interval = cache_marker, interval
        self.stop = threading.Event()
        self.driver = 0
        self.cache_tasks: dict[int, int] = {}
        self.workers: dict[int, dict[str, int]] = {}
        self.workers_together = {"pss": 0, "cache_mapping_pss": 0}

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            self.driver = max(self.driver, pss_bytes(me))
            together = {"pss": 0, "cache_mapping_pss": 0}
            for pid in descendants(me):
                title = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
                if not title.startswith("ray::"):
                    continue
                if any(t in title for t in CACHE_TASK_TITLES):
                    self.cache_tasks[pid] = max(self.cache_tasks.get(pid, 0), pss_bytes(pid))
                elif DISTILL_TITLE in title:
                    now = {"pss": pss_bytes(pid), "cache_mapping_pss": pss_bytes(pid, self.marker)}
                    peak = self.workers.setdefault(pid, {"pss": 0, "cache_mapping_pss": 0})
                    for key, value in now.items():
                        peak[key] = max(peak[key], value)
                        together[key] += value
            for key, value in together.items():
                self.workers_together[key] = max(self.workers_together[key], value)
            self.stop.wait(self.interval)

    def result(self) -> dict:
        return {
            "driver_pss": self.driver,
            "cache_task_pss": sorted(self.cache_tasks.values(), reverse=True),
            "distill_worker_pss": [w["pss"] for w in self.workers.values()],
            "distill_worker_cache_mapping_pss": [w["cache_mapping_pss"] for w in self.workers.values()],
            "distill_workers_together": dict(self.workers_together),
        }


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_size(name: str, out: Path, overrides: list[str], through: str = "distill") -> dict:
    images, classes, head = SIZES[name]
    run_dir = out / name / "run"
    local = out / name / "node-local"
    config = load_config(
        "ray_config.yaml",
        TINY
        + [
            f"data.synthetic.images={images}",
            f"data.synthetic.classes={classes}",
            f"data.synthetic.max_count={head}",
            f"cache.local_dir={local}",
            f"run_dir={run_dir}",
        ]
        + overrides,
    )
    sampler = MemorySampler(str(local))
    start = time.monotonic()
    sampler.start()
    try:
        run_pipeline(config, through=through)
    finally:
        sampler.stop.set()
        sampler.join()
    manifest = Manifest.load(str(run_dir))
    cache_manifest = json.loads(Path(cache_dir(str(run_dir)), "manifest.json").read_text())
    parts = cache_manifest["parts"]
    rows = sum(p["rows"] for p in parts.values())
    # Per part: C float16 logits a row; less with cache.top_k; times cache.views (and the views' parameters) for train.
    part_bytes = {part: entry["rows"] * signal_bytes_per_row(cache_manifest, part) for part, entry in parts.items()}
    return {
        "size": name,
        "images": images,
        "classes": classes,
        "views": config.cache.views,
        "top_k": config.cache.top_k,
        "cache_rows": rows,
        "logits_bytes": sum(part_bytes.values()),
        "train_logits_bytes": part_bytes["train"],
        "cache_bytes_on_disk": folder_bytes(Path(cache_dir(str(run_dir)))),
        "node_local_copy_bytes": folder_bytes(local),
        "stage_seconds": {s: manifest.record(s).duration_s for s in ("split", "experts", "cache", "distill") if manifest.record(s)},
        # The stage's seconds include the node-local copy and the workers' start; an epoch is the student reading the cache.
        "epoch_seconds": [h["seconds"] for h in storage.read_json(history_file(str(run_dir)))] if through == "distill" else [],
        "wall_seconds": time.monotonic() - start,
        "memory": sampler.result(),
        "overrides": TINY + overrides,
        "versions": manifest.data.get("versions"),
    }


PLAN = [(1, None), (4, None), (1, 10), (4, 10)]  # (cache.views, cache.top_k)
PLAN_SUBSETS = 3  # the split's subsets (experts) at every size: thresholds 20 / 100


def planned_bytes(images: int, classes: int, views: int, top_k: int | None) -> int:
    """Bytes of the training part's signal columns (views x logits or top-k arrays, and the views' parameters)."""
    from lfme.teacher_cache import arrow_schema

    per_subset = -(-classes // PLAN_SUBSETS)
    shape = None if top_k is None else (PLAN_SUBSETS * min(top_k, per_subset), PLAN_SUBSETS)
    row = sum(
        f.type.list_size * f.type.value_type.bit_width // 8
        for f in arrow_schema(classes, shape, views)
        if f.name not in ("sample_id", "label", "subset", "confidence")
    )
    return images * row


def render_plan() -> str:
    lines = [
        "# The teacher cache's training signal by cache.views and cache.top_k (benchmarks/scale.py --plan)",
        "",
        "GB (1e9 bytes), computed from the schema: the shards on disk (uncompressed), the node-local copy, the most "
        f"a node's workers map. {PLAN_SUBSETS} experts.",
        "",
        "| size | images x classes | " + " | ".join(f"views {v}, {'top-' + str(k) if k else 'all logits'}" for v, k in PLAN) + " |",
        "|---|---|" + "---:|" * len(PLAN),
    ]
    for name, (images, classes, _) in SIZES.items():
        cells = " | ".join(gb(planned_bytes(images, classes, v, k)) for v, k in PLAN)
        lines.append(f"| {name} | {images:,} x {classes:,} | {cells} |")
    return "\n".join(lines) + "\n"


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def epoch_seconds(result: dict) -> str:
    """The student's mean epoch, or n/a (a result written before epochs were recorded, or run without the student)."""
    epochs = result.get("epoch_seconds")
    return f"{sum(epochs) / len(epochs):.0f}" if epochs else "n/a"


def render(results: list[dict]) -> str:
    lines = [
        "# The teacher cache at scale (benchmarks/scale.py)",
        "",
        "Peak proportional set size (GB, 1e9 bytes) sampled every 0.2 s; a page shared by k processes counts 1/k in each.",
        "",
        "| size | images x classes | views | top-k | train teacher signal (logits, float16) | driver | cache task (max) | distill worker (max) | 2 workers together | their cache mappings together | cache on disk | node-local copy | cache s | distill s | student s/epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["memory"]
        lines.append(
            f"| {r['size']} | {r['images']:,} x {r['classes']:,} | {r.get('views', 1)} | {r.get('top_k') or 'all'} | {gb(r['train_logits_bytes'])} | {gb(m['driver_pss'])} | "
            f"{gb(max(m['cache_task_pss'], default=0))} | {gb(max(m['distill_worker_pss'], default=0))} | "
            f"{gb(m['distill_workers_together']['pss'])} | {gb(m['distill_workers_together']['cache_mapping_pss'])} | "
            f"{gb(r['cache_bytes_on_disk'])} | {gb(r['node_local_copy_bytes'])} | {r['stage_seconds']['cache']:.0f} | "
            f"{r['stage_seconds'].get('distill', float('nan')):.0f} | {epoch_seconds(r)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--fresh", action="store_true", help="delete and rerun sizes already measured")
    parser.add_argument(
        "--through", choices=("cache", "distill"), default="distill",
        help="the last stage to run (cache: the driver and the cache tasks only)",
    )
    parser.add_argument("--plan", action="store_true", help="run nothing: the signal's bytes by cache.views and top_k, computed")
    args = parser.parse_args(argv)
    if args.plan:
        print(render_plan())
        return 0
    out = Path(args.out).resolve()
    names = args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown} (known: {', '.join(SIZES)})")
    results = []
    for name in names:
        done = out / name / "scale.json"
        if not done.exists() or args.fresh:
            # A size without its scale.json starts over: resumed, its skipped stages would have no memory peaks.
            shutil.rmtree(out / name, ignore_errors=True)
            print(f"######## {name}", flush=True)
            storage.write_json_atomic(str(done), run_size(name, out, args.set, args.through))
        results.append(json.loads(done.read_text()))
    storage.write_text_atomic(str(out / "scale.md"), render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
