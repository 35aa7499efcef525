"""Cardinality-adjacent subsets (LFME paper section 4.1) and Many/Medium/Few groups.

LFME trains one expert per subset of classes with adjacent training counts,
because such a subset is far less imbalanced than the whole set (paper
section 3). Two ways to form the subsets are offered (docs/METHOD.md section 2):
thresholds on the class count (the paper's ImageNet-LT split, 20 and 100) and
a threshold-free split that minimises the largest within-group imbalance
ratio, for data sets where 20/100 make no sense.

Every list of subsets is ordered from the most populous (many-shot) subset to
the least populous (few-shot) one, and each subset's classes are sorted
ascending (docs/ARCHITECTURE.md).
"""

import warnings
from dataclasses import dataclass

import numpy as np

CONVENTIONS = ("inclusive", "strict")


@dataclass(frozen=True)
class Subset:
    """A named group of classes; `classes` is normalised to a sorted tuple of ints."""

    name: str
    classes: tuple[int, ...]

    def __post_init__(self):
        classes = tuple(sorted(int(c) for c in self.classes))
        if len(set(classes)) != len(classes):
            raise ValueError(f"subset {self.name!r} lists a class twice: {classes}")
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return len(self.classes)

    def record(self) -> dict:
        """The JSON form every file of a run stores it in (split.json, the cache manifest, report.json)."""
        return {"name": self.name, "classes": list(self.classes)}

    @classmethod
    def from_record(cls, record: dict) -> "Subset":
        return cls(str(record["name"]), tuple(record["classes"]))


def default_subset_names(num_subsets: int) -> list[str]:
    """many/medium/few for 3 subsets, many/few for 2, else subset0.. (subset0 most populous)."""
    if num_subsets == 3:
        return ["many", "medium", "few"]
    if num_subsets == 2:
        return ["many", "few"]
    return [f"subset{i}" for i in range(num_subsets)]


def _counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D vector, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError(f"counts must be non-negative, class {int(np.argmin(counts))} has {counts.min():g}")
    return counts


def _subset_names(names, num_subsets: int) -> list[str]:
    if names is None:
        return default_subset_names(num_subsets)
    names = [str(n) for n in names]
    if len(names) != num_subsets:
        raise ValueError(f"got {len(names)} names for {num_subsets} subsets: {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"subset names must be unique (reports are keyed by name): {names}")
    return names


def _validate_thresholds(thresholds, convention: str) -> tuple[float, ...]:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    thresholds = tuple(float(t) for t in thresholds)
    if any(not np.isfinite(t) or t <= 0 for t in thresholds):
        raise ValueError(f"thresholds must be positive finite numbers, got {thresholds}")
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"thresholds must be strictly ascending, got {thresholds}")
    return thresholds


def _threshold_groups(counts: np.ndarray, thresholds: tuple[float, ...], convention: str) -> list[np.ndarray]:
    """Classes of each of the L = len(thresholds) + 1 groups, most populous first.

    A class climbs one level per threshold it passes. Whether a count equal to
    a threshold passes it is the tie rule: `inclusive` sends ties away from the
    middle (lowest threshold down, every other up), `strict` toward it.
    """
    level = np.zeros(counts.size, dtype=np.int64)
    for j, t in enumerate(thresholds):
        tie_goes_up = (j == 0) == (convention == "strict")
        level += (counts >= t) if tie_goes_up else (counts > t)
    top = len(thresholds)
    return [np.flatnonzero(level == top - g) for g in range(top + 1)]


def split_by_thresholds(counts, thresholds, convention: str = "inclusive", names=None) -> list[Subset]:
    """L cardinality-adjacent subsets from L-1 strictly ascending count thresholds.

    Tie rule for a class whose count equals a threshold (docs/METHOD.md section 2):
    - "inclusive" (default; the official LFME code, ImageNet-LT 391/463/146):
      away from the middle. A tie at the lowest threshold goes down, a tie at
      any other threshold goes up: thresholds 20, 100 give many N >= 100,
      medium 20 < N < 100, few N <= 20.
    - "strict" (OLTR, RIDE, SADE, the wider literature): toward the middle. A
      tie at the lowest threshold goes up, at any other goes down: many
      N > 100, medium 20 <= N <= 100, few N < 20.
    With a single threshold (L = 2) the lowest-threshold rule applies.

    Subsets are ordered most populous first and named `names` or
    default_subset_names(L). An empty subset (CIFAR-10-LT with 20/100 has no
    few-shot class) is dropped with a warning rather than an error: no expert
    can be trained on it, and the rest of the method still works.
    """
    counts = _counts(counts)
    thresholds = _validate_thresholds(thresholds, convention)
    names = _subset_names(names, len(thresholds) + 1)
    subsets = []
    for name, classes in zip(names, _threshold_groups(counts, thresholds, convention)):
        if classes.size == 0:
            warnings.warn(
                f"subset {name!r} is empty with thresholds {list(thresholds)} ({convention}): dropped",
                stacklevel=2,
            )
            continue
        subsets.append(Subset(name, tuple(classes.tolist())))
    return subsets


def shot_groups(counts, thresholds=(20, 100), convention: str = "inclusive") -> list[Subset]:
    """Many/Medium/Few evaluation groups with the tie rules of split_by_thresholds.

    Unlike split_by_thresholds, empty groups are kept (with no classes):
    reports must show a missing group as n/a, not silently omit it.
    """
    counts = _counts(counts)
    thresholds = _validate_thresholds(thresholds, convention)
    if len(thresholds) != 2:
        raise ValueError(f"shot groups need exactly two thresholds (few, many), got {list(thresholds)}")
    groups = _threshold_groups(counts, thresholds, convention)
    return [Subset(name, tuple(c.tolist())) for name, c in zip(("many", "medium", "few"), groups)]


def _last_group_ratios(sorted_counts: np.ndarray, end: int) -> np.ndarray:
    """Imbalance ratio of sorted classes start..end-1, for every start < end (counts descending)."""
    return sorted_counts[:end] / sorted_counts[end - 1]


def _min_max_ratio(sorted_counts: np.ndarray, num_subsets: int) -> float:
    """Smallest achievable largest group ratio (min-max DP; max has optimal substructure)."""
    num_classes = sorted_counts.size
    best = np.full(num_classes + 1, np.inf)  # best[j]: first j sorted classes in l groups
    best[0] = 0.0
    for _ in range(num_subsets):
        new = np.full(num_classes + 1, np.inf)
        for end in range(1, num_classes + 1):
            new[end] = np.min(np.maximum(best[:end], _last_group_ratios(sorted_counts, end)))
        best = new
    return float(best[num_classes])


def _min_sum_cuts(sorted_counts: np.ndarray, num_subsets: int, max_ratio: float) -> list[int]:
    """Group boundaries minimising the sum of ratios, every group ratio <= max_ratio.

    The constraint makes the lexicographic (max, sum) optimum exact: a plain DP
    on the pair would not be, since a prefix with a larger max may win once
    the next group's ratio dominates. np.argmin keeps the earliest start among
    equal sums, so the result is deterministic.
    """
    num_classes = sorted_counts.size
    best = np.full(num_classes + 1, np.inf)
    best[0] = 0.0
    starts = []
    for _ in range(num_subsets):
        new = np.full(num_classes + 1, np.inf)
        start = np.zeros(num_classes + 1, dtype=np.int64)
        for end in range(1, num_classes + 1):
            group = _last_group_ratios(sorted_counts, end)
            total = np.where(group <= max_ratio, best[:end] + group, np.inf)
            start[end] = int(np.argmin(total))
            new[end] = total[start[end]]
        best = new
        starts.append(start)
    cuts = [num_classes]
    for start in reversed(starts):
        cuts.append(int(start[cuts[-1]]))
    return cuts[::-1]


def split_balanced(counts, num_subsets: int, names=None) -> list[Subset]:
    """Threshold-free cardinality-adjacent split (docs/METHOD.md section 2).

    Classes are sorted by (-count, class index) and the order is cut into
    `num_subsets` contiguous non-empty groups that minimise the largest
    within-group imbalance ratio (max/min count), ties broken by the smallest
    sum of within-group ratios, then by the DP's earliest-cut choice. Classes
    with equal counts may land in different groups; the sort by class index
    keeps that deterministic. Exact dynamic programming, O(L C^2) time with
    vectorised inner loops, so a few thousand classes take well under a second.
    """
    counts = _counts(counts)
    if int(num_subsets) != num_subsets or num_subsets < 1:
        raise ValueError(f"num_subsets must be a positive integer, got {num_subsets}")
    num_subsets = int(num_subsets)
    if num_subsets > counts.size:
        raise ValueError(f"num_subsets={num_subsets} exceeds the number of classes {counts.size}")
    if (counts == 0).any():
        raise ValueError(f"class {int(np.flatnonzero(counts == 0)[0])} has count 0: its imbalance ratio is undefined")
    names = _subset_names(names, num_subsets)
    order = np.lexsort((np.arange(counts.size), -counts))
    sorted_counts = counts[order]
    max_ratio = _min_max_ratio(sorted_counts, num_subsets)
    cuts = _min_sum_cuts(sorted_counts, num_subsets, max_ratio)
    return [
        Subset(name, tuple(order[a:b].tolist()))
        for name, a, b in zip(names, cuts[:-1], cuts[1:])
    ]


def subset_of_class(subsets, num_classes: int) -> np.ndarray:
    """Index (into `subsets`) of the subset holding each class; every class must be in exactly one."""
    owner = np.full(num_classes, -1, dtype=np.int64)
    for index, subset in enumerate(subsets):
        for c in subset.classes:
            if not 0 <= c < num_classes:
                raise ValueError(f"subset {subset.name!r} holds class {c}, outside 0..{num_classes - 1}")
            if owner[c] >= 0:
                raise ValueError(f"class {c} is in two subsets: {subsets[owner[c]].name!r} and {subset.name!r}")
            owner[c] = index
    missing = np.flatnonzero(owner < 0)
    if missing.size:
        raise ValueError(f"classes {missing.tolist()[:10]} are in no subset")
    return owner
