"""Stage 5, evaluate: the student and each expert on the test set.

One Ray task runs the student over the whole test set and each expert over
its subset's test samples (predicting among its own classes). The report gives
overall, per-subset and Many/Medium/Few accuracy under both threshold
conventions (each stated), per-class accuracy, and the SpES weight history;
it is written as JSON, markdown and PNG plots (w_l per epoch, paper Fig. 5;
per-class accuracy against training count).
"""

from __future__ import annotations


import numpy as np
import ray

from lfme.engine import predict
from lfme import storage
from lfme.evaluation import accuracy_report, subset_accuracy
from lfme.models import build_model
from lfme.report import write_report
from lfme.subsets import Subset
from pipeline.config import Config
from pipeline.context import StageContext
from stages import ray_train
from stages.cache import load_expert
from stages.data import SplitData, load_split, make_loader, restrict_to_subset
from stages.distill import HISTORY_FILE, STUDENT_FILE


def student_logits(cfg: Config, split: SplitData, student_file: str, device, precision) -> tuple[np.ndarray, np.ndarray]:
    """The test logits and labels of a saved student (`distill/student.pt`, or a sweep's best trial: same format)."""
    saved = storage.load_torch(student_file)
    model = build_model(saved["arch"], saved["num_classes"], in_channels=split.channels)
    model.load_state_dict(saved["model"])
    model = precision.prepare(model.to(device))
    pred = predict(model, make_loader(split.test, cfg.data, False, cfg.evaluate.batch_size), device, precision)
    return pred.logits, pred.labels


def expert_accuracy(cfg: Config, run_dir: str, split: SplitData, subset: Subset, device, precision) -> dict:
    """The expert on its subset's test samples, among its subset's classes."""
    model = precision.prepare(load_expert(run_dir, subset, split.channels, device))
    test = restrict_to_subset(split.test, subset.classes)
    pred = predict(model, make_loader(test, cfg.data, False, cfg.evaluate.batch_size), device, precision)
    accuracy = float((pred.logits.argmax(1) == pred.labels).mean()) if len(pred.labels) else None
    return {"classes": list(subset.classes), "accuracy": accuracy, "num_samples": int(len(pred.labels))}


@ray.remote
def student_test_logits(cfg: Config, run_dir: str, student_file: str) -> tuple[np.ndarray, np.ndarray]:
    """`student_logits` as a task (a sweep scores its best trial with it)."""
    device, precision = ray_train.task_setup(cfg.cache.resources.cpus_per_worker, cfg.precision, "evaluate")
    return student_logits(cfg, load_split(run_dir, cfg.data), student_file, device, precision)


@ray.remote
def test_all(cfg: Config, run_dir: str, student_file: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The student's test logits and labels, and each expert on its subset: one task, one read of the split.

    One task rather than one per model: on the test set every model's forward
    takes less than a worker process's start (importing torch), so splitting
    the work would cost more than it saves.
    """
    device, precision = ray_train.task_setup(cfg.cache.resources.cpus_per_worker, cfg.precision, "evaluate")
    split = load_split(run_dir, cfg.data)
    logits, labels = student_logits(cfg, split, student_file, device, precision)
    experts = {s.name: expert_accuracy(cfg, run_dir, split, s, device, precision) for s in split.subsets}
    return logits, labels, experts


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    run_dir = ctx.run_dir
    split = load_split(run_dir, cfg.data)
    resources = {"num_cpus": cfg.cache.resources.cpus_per_worker, "num_gpus": cfg.cache.resources.gpus_per_worker}
    logits, labels, experts = ray.get(test_all.options(**resources).remote(cfg, run_dir, ctx.path(STUDENT_FILE, stage="distill")))
    student = accuracy_report(logits, labels, split.class_counts, split.subsets, tuple(cfg.evaluate.shot_thresholds))
    for s in split.subsets:  # the student on each expert's home ground, for the side-by-side table
        experts[s.name]["student_accuracy"] = subset_accuracy(logits, labels, s.classes)
    history = storage.read_json(ctx.path(HISTORY_FILE, stage="distill"))
    report = {
        "student": student,
        "experts": experts,
        "subsets": [{"name": s.name, "classes": list(s.classes)} for s in split.subsets],
        "class_names": split.class_names,
        "train_counts": split.class_counts.tolist(),
        "w_history": [{"epoch": h["epoch"], "weights": h["weights_used"]} for h in history if h["weights_used"]],
        "config": {"distill": ctx.config.to_dict()["distill"], "model": ctx.config.to_dict()["model"]},
    }
    written = write_report(report, ctx.path())
    ctx.log(f"evaluate: wrote {', '.join(sorted(written))} to {ctx.path()}")
    return {**headline(student), "experts": {name: e["accuracy"] for name, e in experts.items()}}


def headline(student: dict) -> dict:
    """The numbers a summary shows of a student's `accuracy_report`: overall and Many/Medium/Few (inclusive rule)."""
    inclusive = student["shots"]["inclusive"]
    return {
        "overall": student["overall"],
        "many": inclusive["many"],
        "medium": inclusive["medium"],
        "few": inclusive["few"],
        "shot_rule": inclusive["rule"],
    }
