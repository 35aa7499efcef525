"""A synthetic long-tailed data set of random images, at any size (the scale benchmarks, no files)."""

from __future__ import annotations


import numpy as np

from lfme.data.sources.base import (
    SyntheticStore,
    TEST_ID_OFFSET,
    ImageList,
    SourceSplits,
    _ids,
)


def check_profile(num_images: int, num_classes: int, max_count: int, min_count: int = 2) -> None:
    """ValueError unless `long_tailed_profile` can make these sizes: a head of `max_count`, no class under `min_count`."""
    least, most = max_count + min_count * (num_classes - 1), max_count * num_classes
    if not least <= num_images <= most:
        raise ValueError(
            f"{num_images} images cannot make {num_classes} classes of {min_count}..{max_count} images each "
            f"with a head class of {max_count} (between {least} and {most} can)"
        )


def long_tailed_profile(num_images: int, num_classes: int, max_count: int, min_count: int = 2) -> np.ndarray:
    """Class sizes falling from `max_count` to `min_count` and summing to `num_images`.

    n_c = floor(min + (max - min) * (1 - c / (C - 1))^q), with q found by
    bisection so the sizes add up to about `num_images`; the rounding rest
    goes to the head classes. Both ends and the total are those of the data
    set imitated: iNaturalist 2018 (437,513 images, 8,142 classes, 1000..2)
    gives q ~ 18, a head of a few large classes and a long tail.
    """
    check_profile(num_images, num_classes, max_count, min_count)
    x = np.arange(num_classes, dtype=np.float64) / max(num_classes - 1, 1)

    def counts(q: float) -> np.ndarray:
        return np.floor(min_count + (max_count - min_count) * (1 - x) ** q).astype(np.int64)

    # counts(q) falls as q grows; at q = 1e9 every tail class is at min_count for any C up to ~10^7
    # ((1 - 1/(C-1))^q (max - min) < 1 needs q > ~C ln(max)), the least total check_profile admits.
    low, high = 0.0, 1e9
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if counts(mid).sum() > num_images else (low, mid)
    out = counts(high)
    rest = num_images - int(out.sum())
    for c in range(num_classes):  # rest >= 0: check_profile leaves a q whose sizes sum to at most num_images
        if rest == 0:
            break
        add = min(rest, max_count - int(out[c]))
        out[c] += add
        rest -= add
    return out


def synthetic(num_images: int, num_classes: int, max_count: int, test_per_class: int, image_size: int, seed: int = 0) -> SourceSplits:
    """A generated long-tailed data set of `num_images` training images (`long_tailed_profile`) and a balanced test set.

    For measuring the pipeline at sizes no file here has (benchmarks/scale.py:
    ImageNet-LT, iNaturalist 2018); the images carry little more than their
    class's colour.
    """
    train_labels = np.repeat(np.arange(num_classes, dtype=np.int64), long_tailed_profile(num_images, num_classes, max_count))
    test_labels = np.repeat(np.arange(num_classes, dtype=np.int64), test_per_class)
    train_ids, test_ids = _ids(len(train_labels), 0), _ids(len(test_labels), TEST_ID_OFFSET)
    train = ImageList(train_ids, train_labels, SyntheticStore(train_ids, train_labels, image_size, seed), "RGB")
    test = ImageList(test_ids, test_labels, SyntheticStore(test_ids, test_labels, image_size, seed), "RGB")
    return SourceSplits(train, None, test, [f"class{c}" for c in range(num_classes)], channels=3)
