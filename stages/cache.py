"""Stage 3, cache: every expert over the training and validation sets, once, to Parquet.

One Ray task per expert runs it with the test transform (the un-augmented
image, as the official code computes the teacher signals) over the training
and validation sets, whole, not only its subset's samples: every expert's KD term applies to
every instance (paper 4.5). The driver joins the outputs into one row per
sample (`lfme.teacher_cache` documents the schema), computes the confidence p_i
from the expert of the sample's own subset, and writes the shards and the
manifest atomically. The manifest records the SHA-256 of every expert
checkpoint, so the student refuses a cache built from other experts.
"""

from __future__ import annotations

import numpy as np
import ray

from lfme import storage
from lfme.engine import predict
from lfme.subsets import Subset
from lfme.teacher_cache import write_cache
from lfme.teachers import teacher_rows
from rundir.config import Config
from rundir.context import StageContext
from rundir.data import make_loader
from rundir.layout import EXPERT_MODEL, cache_dir, expert_dir, expert_hashes, load_expert, load_split
from stages import workers

PARTS = ("train", "val")


@ray.remote
def expert_logits(cfg: Config, run_dir: str, subset: Subset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part: (sample_ids, logits over the subset's classes) of one expert."""
    device, precision = workers.task_setup(cfg.cache.resources.cpus_per_worker, cfg.precision, f"cache {subset.name}")
    split = load_split(run_dir, cfg.data)
    with workers.reading(storage.join(expert_dir(run_dir, subset.name), EXPERT_MODEL), f"weights of expert '{subset.name}'"):
        expert = load_expert(run_dir, subset, split.channels, device)
    model = precision.prepare(expert)
    out = {}
    for part in PARTS:
        images = split.train if part == "train" else split.val
        pred = predict(model, make_loader(images, cfg.data, False, cfg.cache.batch_size), device, precision)
        out[part] = (pred.sample_ids, pred.logits)
    return out


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    split = load_split(ctx.run_dir, cfg.data)
    hashes = expert_hashes(ctx.run_dir, split.subsets)
    resources = cfg.cache.resources
    futures = {
        s.name: expert_logits.options(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker).remote(
            cfg, ctx.run_dir, s
        )
        for s in split.subsets
    }
    ctx.log(f"cache: {len(futures)} inference tasks, one per expert, each over {' and '.join(PARTS)}")
    with workers.cancelled_on_interrupt(futures.values()):
        outputs = {name: ray.get(ref) for name, ref in futures.items()}
    parts = {}
    for part in PARTS:
        images = split.train if part == "train" else split.val
        logits = np.zeros((len(images), split.num_classes), dtype=np.float32)
        for s in split.subsets:
            ids, expert_out = outputs[s.name][part]
            if not np.array_equal(ids, images.sample_ids):
                raise RuntimeError(f"cache: expert '{s.name}' returned {part} rows in another order")
            logits[:, list(s.classes)] = expert_out
        parts[part] = teacher_rows(images.sample_ids, images.labels, logits, split.subsets)
    manifest = write_cache(
        cache_dir(ctx.run_dir),
        parts,
        fingerprint=ctx.fingerprint,
        subsets=[{"name": s.name, "classes": list(s.classes)} for s in split.subsets],
        experts={name: {"sha256": digest} for name, digest in hashes.items()},
        shard_rows=cfg.cache.shard_rows,
    )
    ctx.log(f"cache: wrote {len(parts['train'])} train and {len(parts['val'])} val rows")
    return {part: manifest["parts"][part]["rows"] for part in PARTS}
