"""Top-1, per-class, per-subset and Many/Medium/Few accuracy.

Accuracies are fractions in [0, 1]. Group accuracies are sample-weighted
(correct test samples of the group's classes / test samples of those
classes), as the long-tail literature reports them. Many/Medium/Few are
reported under both tie conventions, each with its rule spelled out
(docs/METHOD.md section 9), because the paper's inclusive cut-offs and the
literature's strict ones differ on classes with exactly 20 or 100 images.
"""

import math

import numpy as np
import torch

from lfme.subsets import CONVENTIONS, shot_groups


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def top1(logits, labels) -> float:
    """Fraction of samples whose argmax logit is the label (numpy or torch inputs)."""
    logits, labels = _numpy(logits), _numpy(labels)
    if labels.size == 0:
        raise ValueError("top1 of an empty batch is undefined")
    return float(np.mean(logits.argmax(axis=1) == labels))


def per_class_accuracy(preds, labels, num_classes: int) -> np.ndarray:
    """Accuracy of each class over its samples, shape (num_classes,); nan for a class without samples."""
    preds, labels = _numpy(preds).astype(np.int64), _numpy(labels).astype(np.int64)
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    correct = np.bincount(labels[preds == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / total, np.nan)


def subset_accuracy(logits, labels, classes, restrict: bool = False) -> float:
    """Accuracy on the samples whose label is in `classes`; nan when there are none.

    restrict=False: the prediction is the argmax over all classes (the student
    judged on a subset, SpES's Acc_M). restrict=True: the argmax over the
    `classes` columns only (an expert predicting within its subset, Acc_E);
    docs/METHOD.md sections 3 and 6 use both.
    """
    logits, labels = _numpy(logits), _numpy(labels)
    classes = np.asarray(list(classes), dtype=np.int64)
    rows = np.flatnonzero(np.isin(labels, classes))
    if not rows.size:
        return float("nan")
    # One gather of the rows (and columns) needed: `logits` may be a large
    # float16 memory map (the teacher cache's validation part).
    if restrict:
        preds = classes[logits[np.ix_(rows, classes)].argmax(axis=1)]
    else:
        preds = logits[rows].argmax(axis=1)
    return float(np.mean(preds == labels[rows]))


def _shot_rule(thresholds, convention: str) -> str:
    low, high = (f"{float(t):g}" for t in thresholds)
    if convention == "inclusive":
        return f"many N>={high}, few N<={low}"
    return f"many N>{high}, few N<{low}"


def accuracy_report(logits, labels, train_counts, subsets, thresholds=(20, 100)) -> dict:
    """JSON-serialisable accuracy report of `logits` (NaN becomes None); see `prediction_report`."""
    logits = _numpy(logits)
    return prediction_report(logits.argmax(axis=1), labels, logits.shape[1], train_counts, subsets, thresholds)


def prediction_report(preds, labels, num_classes: int, train_counts, subsets, thresholds=(20, 100)) -> dict:
    """The accuracy report of argmax predictions `preds` (every entry depends on the argmax only).

    {"overall", "num_samples",
     "subsets": {name: acc},                      # the given training subsets, all-class argmax
     "shots": {"inclusive": {"rule", "many", "medium", "few", "classes": {group: n_classes}},
               "strict": {...}},
     "per_class": [acc or None, ...]}
    A group with no classes or no test samples has accuracy None. Computed
    from predictions, a caller scoring many images (`lfme predict`) keeps one
    integer per image rather than a row of logits.
    """
    preds, labels = _numpy(preds).astype(np.int64), _numpy(labels).astype(np.int64)
    if labels.size == 0:
        raise ValueError("an accuracy report of no samples is undefined")

    def accuracy_on(classes) -> float:
        rows = np.isin(labels, np.asarray(list(classes), dtype=np.int64))
        return float(np.mean(preds[rows] == labels[rows])) if rows.any() else float("nan")

    shots = {}
    for convention in CONVENTIONS:
        groups = shot_groups(train_counts, thresholds, convention)
        shots[convention] = {
            "rule": _shot_rule(thresholds, convention),
            **{g.name: _json_float(accuracy_on(g.classes)) for g in groups},
            "classes": {g.name: len(g) for g in groups},
        }
    return {
        "overall": float(np.mean(preds == labels)),
        "num_samples": int(labels.size),
        "subsets": {s.name: _json_float(accuracy_on(s.classes)) for s in subsets},
        "shots": shots,
        "per_class": [_json_float(a) for a in per_class_accuracy(preds, labels, num_classes)],
    }
