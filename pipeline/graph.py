"""The stage graph and the fingerprints that decide what must rerun.

A stage's fingerprint hashes the config fields that define its result together
with the fingerprints of the stages it reads. Changing a stage's settings thus
changes its fingerprint and, through the chain, every fingerprint downstream,
while everything upstream keeps its own and is skipped.

Left out on purpose: resources, concurrency, loader processes, inference batch
size and shard size. They change how fast a stage runs, not what it produces,
so moving a run to a bigger cluster does not retrain anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rundir.config import Config

STAGES = ("split", "experts", "cache", "distill", "evaluate")
# What every student of a run reads, whatever its distill settings: a sweep's
# trials and Table 3's variants share them, and `lfme run --reuse` copies them.
TEACHER_STAGES = ("split", "experts", "cache")

UPSTREAM: dict[str, tuple[str, ...]] = {
    "split": (),
    "experts": ("split",),
    "cache": ("split", "experts"),
    "distill": ("split", "cache"),
    "evaluate": ("split", "experts", "distill"),
}

_SPEED_ONLY = {"resources", "max_concurrent", "max_failures", "loader_workers", "decode_once", "check_images", "shard_rows"}


# Fields added after runs existed, each with the value that does what those
# runs did: at that value a field stays out of the fingerprint, so a finished
# run whose config asks for what it did keeps its fingerprint.
EXPERTS_ADDED = {"init": "scratch"}
DISTILL_ADDED = {"class_draw": "iid", "keep": "last", "base_loss": "softmax", "logit_tau": 1.0}


def _without_speed_fields(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in _SPEED_ONLY}


def _experts_settings(experts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _without_speed_fields(experts).items() if EXPERTS_ADDED.get(k, object()) != v}


def _distill_settings(distill: dict[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in _without_speed_fields(distill).items() if DISTILL_ADDED.get(k, object()) != v}
    if settings["epoch_length"] == "official":
        # "official" meant max_count x C draws until 2026-12-06; runs made with that must not count as done.
        settings["epoch_length"] = "official: int(N / batch_size) batches"
    return settings


def _data_settings(data: dict[str, Any]) -> dict[str, Any]:
    # The generated set's spec defines the data of source 'synthetic' only.
    return {k: v for k, v in _without_speed_fields(data).items() if k != "synthetic" or data["source"] == "synthetic"}


def stage_settings(config: Config, stage: str) -> dict[str, Any]:
    """The config fields that define what `stage` produces."""
    c = config.to_dict()
    if stage == "split":
        return {"data": _data_settings(c["data"]), "split": c["split"]}
    if stage in ("experts", "distill"):
        # Precision changes the numbers of every stage that runs a model. Images
        # kept decoded are augmented in batches (lfme.data.BatchTransform): the
        # same distribution of crops and flips as PIL's, other draws, so the
        # training stages' results change with it.
        return {
            "seed": c["seed"],
            "precision": c["precision"],
            "augmentation": "batched" if c["data"]["decode_once"] else "pil",
            "model": c["model"],
            stage: _distill_settings(c[stage]) if stage == "distill" else _experts_settings(c[stage]),
        }
    if stage == "cache":
        # Inference with the test transform is deterministic: nothing else of
        # the cache section changes what is stored (batch size, shards and
        # the node-local folder only change the speed). top_k, and views with
        # the seed they are drawn from, enter only when set, so caches of one
        # full view keep their fingerprints; allot draws only when asked for,
        # with the student's sampling it allots by, so uniform caches keep theirs.
        top_k, views, allot = c["cache"]["top_k"], c["cache"]["views"], c["cache"]["allot"]
        return {
            "precision": c["precision"],
            **({"top_k": top_k} if top_k is not None else {}),
            **({"views": views, "seed": c["seed"]} if views > 1 else {}),
            **({"allot": allot, "sampling": c["distill"]["sampling"]} if allot != "uniform" else {}),
        }
    if stage == "evaluate":
        return {"precision": c["precision"], "evaluate": {"shot_thresholds": c["evaluate"]["shot_thresholds"]}}
    raise ValueError(f"unknown stage '{stage}' (stages: {', '.join(STAGES)})")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def fingerprints(config: Config) -> dict[str, str]:
    out: dict[str, str] = {}
    for stage in STAGES:
        upstream = {u: out[u] for u in UPSTREAM[stage]}
        out[stage] = _digest({"stage": stage, "settings": stage_settings(config, stage), "upstream": upstream})
    return out
