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

from lfme import storage
from lfme.engine import predict
from lfme.evaluation import accuracy_report, subset_accuracy
from lfme.report import write_report
from lfme.subsets import Subset
from rundir.config import Config
from rundir.context import StageContext
from rundir.data import make_loader, restrict_to_subset
from rundir.layout import (
    EXPERT_MODEL,
    SplitData,
    expert_dir,
    history_file,
    load_expert,
    load_split,
    read_split,
    load_student,
    report_dir,
    student_file,
)
from stages import tasks


def student_logits(cfg: Config, split: SplitData, location: str, device, precision) -> tuple[np.ndarray, np.ndarray]:
    """The test logits and labels of a saved student (`distill/student.pt`, or a sweep's best trial: same format)."""
    with tasks.reading(location, "student"):
        student = load_student(location, split.channels, device)
    model = precision.prepare(student)
    pred = predict(model, make_loader(split.test, cfg.data, False, cfg.evaluate.batch_size), device, precision)
    return pred.logits, pred.labels


def expert_accuracy(cfg: Config, run_dir: str, split: SplitData, subset: Subset, device, precision) -> dict:
    """The expert on its subset's test samples, among its subset's classes."""
    with tasks.reading(storage.join(expert_dir(run_dir, subset.name), EXPERT_MODEL), f"weights of expert '{subset.name}'"):
        expert = load_expert(run_dir, subset, split.channels, device)
    model = precision.prepare(expert)
    test = restrict_to_subset(split.test, subset.classes)
    pred = predict(model, make_loader(test, cfg.data, False, cfg.evaluate.batch_size), device, precision)
    accuracy = float((pred.logits.argmax(1) == pred.labels).mean()) if len(pred.labels) else None
    return {"classes": list(subset.classes), "accuracy": accuracy, "num_samples": int(len(pred.labels))}


def task_options(cfg: Config) -> dict:
    """What the test task reserves (`evaluate.resources`)."""
    return {"num_cpus": cfg.evaluate.resources.cpus_per_worker, "num_gpus": cfg.evaluate.resources.gpus_per_worker}


@ray.remote
def student_test_logits(cfg: Config, run_dir: str, location: str) -> tuple[np.ndarray, np.ndarray]:
    """`student_logits` as a task (a sweep scores its best trial with it)."""
    device, precision = tasks.task_setup(cfg.evaluate.resources.cpus_per_worker, cfg.precision, "evaluate")
    return student_logits(cfg, load_split(run_dir, cfg.data), location, device, precision)


@ray.remote
def test_all(cfg: Config, run_dir: str, location: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The student's test logits and labels, and each expert on its subset: one task, one read of the split.

    One task rather than one per model: on the test set every model's forward
    takes less than a worker process's start (importing torch), so splitting
    the work would cost more than it saves.
    """
    device, precision = tasks.task_setup(cfg.evaluate.resources.cpus_per_worker, cfg.precision, "evaluate")
    split = load_split(run_dir, cfg.data)
    logits, labels = student_logits(cfg, split, location, device, precision)
    experts = {s.name: expert_accuracy(cfg, run_dir, split, s, device, precision) for s in split.subsets}
    return logits, labels, experts


def score_student(cfg: Config, run_dir: str, location: str) -> dict:
    """A saved student's test accuracy (`accuracy_report`), scored in one task: how a sweep scores its best trial."""
    split = read_split(run_dir)
    ref = student_test_logits.options(**task_options(cfg)).remote(cfg, run_dir, location)
    with tasks.cancelled_on_interrupt([ref]):
        logits, labels = ray.get(ref)
    return accuracy_report(logits, labels, split.class_counts, split.subsets, tuple(cfg.evaluate.shot_thresholds))


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    run_dir = ctx.run_dir
    split = read_split(run_dir)
    ref = test_all.options(**task_options(cfg)).remote(cfg, run_dir, student_file(run_dir))
    with tasks.cancelled_on_interrupt([ref]):
        logits, labels, experts = ray.get(ref)
    student = accuracy_report(logits, labels, split.class_counts, split.subsets, tuple(cfg.evaluate.shot_thresholds))
    for s in split.subsets:  # the student on each expert's home ground, for the side-by-side table
        experts[s.name]["student_accuracy"] = subset_accuracy(logits, labels, s.classes)
        # KD's premise on equal terms: the student, too, predicting among the subset's classes only (the
        # expert's label space, and what a KD term over S_l can teach).
        experts[s.name]["student_accuracy_within_subset"] = subset_accuracy(logits, labels, s.classes, restrict=True)
    history = storage.read_json(history_file(run_dir))
    report = {
        "student": student,
        "experts": experts,
        "subsets": [s.record() for s in split.subsets],
        "class_names": split.class_names,
        "train_counts": split.class_counts.tolist(),
        "w_history": [{"epoch": h["epoch"], "weights": h["weights_used"]} for h in history if h["weights_used"]],
        "config": {"distill": ctx.config.to_dict()["distill"], "model": ctx.config.to_dict()["model"]},
    }
    written = write_report(report, report_dir(run_dir))
    ctx.log(f"evaluate: wrote {', '.join(sorted(written))} to {report_dir(run_dir)}")
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
