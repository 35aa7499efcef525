"""scikit-learn's 8x8 digits: the default run's data set, needing no files."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from lfme.data.sources.base import (
    TEST_ID_OFFSET,
    ArrayStore,
    ImageList,
    SourceSplits,
    _ids,
)


def digits(test_per_class: int = 40) -> SourceSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download): the default tiny run.

    The balanced test split is the first `test_per_class` images of each class in
    dataset order, the rest is train; both keep dataset order. Pixel values 0..16
    are scaled to uint8 0..255 so the usual ToTensor/Normalize apply.
    """
    pixels, labels = bundled_digits()
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)
    counts = np.bincount(labels)
    if not 0 < test_per_class < counts.min():
        raise ValueError(f"test_per_class must be in 1..{counts.min() - 1}, got {test_per_class}")
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(len(counts)):
        is_test[np.flatnonzero(labels == c)[:test_per_class]] = True
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    origin = "sklearn.datasets.load_digits"
    train = ImageList(_ids(len(train_idx), 0), labels[train_idx], ArrayStore(images[train_idx], origin), "L")
    test = ImageList(
        _ids(len(test_idx), TEST_ID_OFFSET), labels[test_idx], ArrayStore(images[test_idx], origin), "L"
    )
    return SourceSplits(train, None, test, [str(c) for c in range(len(counts))], channels=1)


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float 0..16, labels int64): what `sklearn.datasets.load_digits` returns.

    Read straight from the CSV scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`,
    64 pixel columns then the label), found without importing scikit-learn:
    its import (scipy behind it) costs about 2 CPU-seconds, paid by every
    default run's split. A scikit-learn that keeps the file elsewhere is asked
    through its API.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
