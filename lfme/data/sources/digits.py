"""scikit-learn's 8x8 digits: the default run's data set, needing no files."""

from __future__ import annotations


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
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
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
