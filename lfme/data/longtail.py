"""Long-tailed training sets from balanced ones, by the LDAM-DRW protocol.

CIFAR-10-LT / CIFAR-100-LT as used by LDAM-DRW, RIDE, SADE and PaCo keep, for
class i in natural label order, n_i = int(n_max * (1/IF)^(i/(C-1))) images chosen
by shuffling that class's indices with one NumPy RandomState seeded 0. Reproducing
that exactly (the same RNG, the same class order, the same draws) is what makes the
published train sizes and the images themselves match.

The images a class leaves unused give a balanced validation split that never
touches the test set (SpES needs one; validating on test would leak).
"""

from __future__ import annotations

import numpy as np


def ldam_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Images per class: n_i = int(n_max * (1/IF)^(i/(C-1))), i = 0..C-1."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def make_long_tailed(
    labels, imbalance_factor: float, val_per_class: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): indices into `labels` (a training pool, never the test set).

    As in LDAM-DRW's IMBALANCECIFAR: one `np.random.RandomState(seed)`; for each class
    c = 0..C-1 in order, `idx = np.where(labels == c)[0]; rng.shuffle(idx)`; the
    long-tailed share is the first n_i of `idx`, with n_max the size of the largest
    class. Both index arrays are class-major, in shuffled order within a class
    (LDAM's order).

    The balanced validation split takes the LAST `val_per_class` of each shuffled
    list, i.e. images the long-tailed share does not use. A class that would keep
    all its images (the head class, whose n_0 = n_max) has its share capped at
    len(idx) - val_per_class, so with a validation split the head class loses
    `val_per_class` images (CIFAR-10-LT IF 100: 12,386 instead of 12,406) and
    train and val stay disjoint. With val_per_class = 0 the result is LDAM's exactly.
    imbalance_factor = 1 gives the balanced pool minus the validation images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes)
    if val_per_class < 0 or val_per_class > counts.min():
        raise ValueError(
            f"val_per_class must be in 0..{counts.min()} (the smallest class's size), got {val_per_class}"
        )
    n_per_class = ldam_counts(int(counts.max()), num_classes, imbalance_factor)

    rng = np.random.RandomState(seed)
    train_parts, val_parts = [], []
    for c, n_c in enumerate(n_per_class):
        idx = np.where(labels == c)[0]
        rng.shuffle(idx)
        n_train = min(n_c, len(idx) - val_per_class)
        train_parts.append(idx[:n_train])
        val_parts.append(idx[len(idx) - val_per_class :])
    return np.concatenate(train_parts).astype(np.int64), np.concatenate(val_parts).astype(np.int64)


def class_counts(labels, num_classes: int) -> np.ndarray:
    """Images per class 0..num_classes-1 (zeros for absent classes)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
