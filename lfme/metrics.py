"""Data-imbalance metrics of LFME (paper section 3, Table 1).

The four metrics follow docs/METHOD.md section 1, which settles the paper's
typos: the KL divergence is taken against the uniform distribution over
*classes* (q_i = 1/C, not the printed 1/N) and is reported in bits, because
that is what reproduces the sixteen numbers of Table 1 on ImageNet-LT.
Smaller is more balanced for all four.
"""

import numpy as np


def _class_counts(counts) -> np.ndarray:
    """Counts as validated 1-D float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {counts.shape}")
    if counts.size == 0:
        raise ValueError("counts is empty: imbalance metrics need at least one class")
    negative = np.flatnonzero(counts < 0)
    if negative.size:
        raise ValueError(f"class {int(negative[0])} has a negative count {counts[negative[0]]:g}")
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        # A zero count makes the imbalance ratio infinite and p_i log p_i a limit:
        # such a class has no training data and must not be silently averaged in.
        raise ValueError(f"class {int(empty[0])} has count 0: the imbalance ratio is undefined")
    return counts


def imbalance_ratio(counts) -> float:
    """I_Ratio = max N_i / min N_i."""
    counts = _class_counts(counts)
    return float(counts.max() / counts.min())


def imbalance_divergence(counts) -> float:
    """I_KL = sum_i p_i log2(p_i / q_i) with q_i = 1/C, in bits (docs/METHOD.md section 1)."""
    counts = _class_counts(counts)
    p = counts / counts.sum()
    return float(np.sum(p * np.log2(p * counts.size)))


def imbalance_abs_deviation(counts) -> float:
    """I_Abs = sum_i |1/C - p_i|."""
    counts = _class_counts(counts)
    p = counts / counts.sum()
    return float(np.sum(np.abs(1.0 / counts.size - p)))


def gini_coefficient(counts) -> float:
    """I_Gini = sum_i (2i - C - 1) N_i / (C sum_i N_i), counts sorted ascending, i = 1..C."""
    counts = np.sort(_class_counts(counts))
    num_classes = counts.size
    i = np.arange(1, num_classes + 1)
    return float(np.sum((2 * i - num_classes - 1) * counts) / (num_classes * counts.sum()))


def imbalance_metrics(counts) -> dict:
    """The four metrics of one count vector: {"ratio", "kl", "abs", "gini"} as floats.

    Raises ValueError for an empty vector or a class with count 0 (named by index).
    """
    _class_counts(counts)
    return {
        "ratio": imbalance_ratio(counts),
        "kl": imbalance_divergence(counts),
        "abs": imbalance_abs_deviation(counts),
        "gini": gini_coefficient(counts),
    }


def subset_metrics(counts, subsets) -> dict:
    """Metrics of the entire set and of each subset, computed on that subset's counts only.

    `subsets` are `lfme.subsets.Subset`s (anything with `name` and `classes`).
    Returns {"entire": {...}, "subsets": [{"name", "classes", "ratio", "kl", "abs", "gini"}, ...]}.
    A subset without classes (shot_groups keeps empty groups so reports can show
    them) gets None for the four metrics instead of raising, for the same reason.
    """
    counts = np.asarray(counts)
    entire = imbalance_metrics(counts)  # also rejects a zero count in any subset, by global index
    rows = []
    for subset in subsets:
        classes = [int(c) for c in subset.classes]
        if classes:
            values = imbalance_metrics(counts[classes])
        else:
            values = {"ratio": None, "kl": None, "abs": None, "gini": None}
        rows.append({"name": subset.name, "classes": classes, **values})
    return {"entire": entire, "subsets": rows}
