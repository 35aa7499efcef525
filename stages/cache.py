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
import torch

from lfme import storage
from lfme.engine import predict
from lfme.models import build_model
from lfme.subsets import Subset, subset_of_class
from lfme.teacher_cache import TeacherRows, file_sha256, write_cache
from lfme.teachers import expert_confidence
from pipeline.config import Config
from pipeline.context import StageContext
from stages import ray_train
from stages.data import load_split, make_loader
from stages.experts import MODEL_FILE, expert_dir

PARTS = ("train", "val")


def cache_dir(run_dir: str) -> str:
    return storage.join(run_dir, "cache")


def expert_hashes(run_dir: str, subsets: list[Subset]) -> dict[str, str]:
    """SHA-256 of each expert's checkpoint: what the cache is fingerprinted by."""
    hashes = {}
    for s in subsets:
        path = storage.join(expert_dir(run_dir, s.name), MODEL_FILE)
        if not storage.exists(path):
            raise FileNotFoundError(f"{path} is missing: run the experts stage first (lfme run --stage experts)")
        hashes[s.name] = file_sha256(path)
    return hashes


def load_expert(run_dir: str, subset: Subset, channels: int, device: torch.device) -> torch.nn.Module:
    saved = storage.load_torch(storage.join(expert_dir(run_dir, subset.name), MODEL_FILE))
    model = build_model(saved["arch"], len(subset.classes), in_channels=channels)
    model.load_state_dict(saved["model"])
    return model.to(device).eval()


@ray.remote
def expert_logits(cfg: Config, run_dir: str, subset: Subset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part: (sample_ids, logits over the subset's classes) of one expert."""
    device, precision = ray_train.task_setup(cfg.cache.resources.cpus_per_worker, cfg.precision, f"cache {subset.name}")
    split = load_split(run_dir, cfg.data)
    model = precision.prepare(load_expert(run_dir, subset, split.channels, device))
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
    outputs = {name: ray.get(ref) for name, ref in futures.items()}
    owner = subset_of_class(split.subsets, split.num_classes)
    parts = {}
    for part in PARTS:
        images = split.train if part == "train" else split.val
        logits = np.zeros((len(images), split.num_classes), dtype=np.float32)
        for s in split.subsets:
            ids, expert_out = outputs[s.name][part]
            if not np.array_equal(ids, images.sample_ids):
                raise RuntimeError(f"cache: expert '{s.name}' returned {part} rows in another order")
            logits[:, list(s.classes)] = expert_out
        parts[part] = TeacherRows(
            sample_ids=images.sample_ids.astype(np.int64),
            labels=images.labels.astype(np.int64),
            subsets=owner[images.labels].astype(np.int32),
            logits=logits.astype(np.float16),
            confidence=expert_confidence(logits, images.labels, split.subsets),
        )
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
