"""Long-tailed construction: the LDAM-DRW protocol's published sizes and draws."""

import numpy as np
import pytest

from lfme.data import class_counts, ldam_counts, make_long_tailed

CIFAR10 = np.repeat(np.arange(10), 5000)
CIFAR100 = np.repeat(np.arange(100), 500)


@pytest.mark.parametrize(
    "labels, imbalance_factor, expected",
    [
        (CIFAR10, 100, 12_406),
        (CIFAR10, 50, 13_996),
        (CIFAR10, 10, 20_431),
        (CIFAR100, 100, 10_847),
        (CIFAR100, 50, 12_608),
        (CIFAR100, 10, 19_573),
    ],
)
def test_ldam_train_sizes(labels, imbalance_factor, expected):
    train_idx, val_idx = make_long_tailed(labels, imbalance_factor)
    assert len(train_idx) == expected and len(val_idx) == 0
    assert len(np.unique(train_idx)) == expected


def test_ldam_counts():
    assert ldam_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert ldam_counts(500, 5, 1) == [500] * 5
    assert ldam_counts(7, 1, 100) == [7]
    with pytest.raises(ValueError, match="imbalance_factor"):
        ldam_counts(10, 3, 0.5)


def test_same_draws_as_ldam_code():
    """A literal transcription of LDAM-DRW's gen_imbalanced_data (global NumPy RNG)."""
    np.random.seed(0)
    expected = []
    for the_class, the_img_num in zip(np.unique(CIFAR10), ldam_counts(5000, 10, 100)):
        idx = np.where(CIFAR10 == the_class)[0]
        np.random.shuffle(idx)
        expected.append(idx[:the_img_num])
    train_idx, _ = make_long_tailed(CIFAR10, 100, seed=0)
    np.testing.assert_array_equal(train_idx, np.concatenate(expected))
    assert not np.array_equal(make_long_tailed(CIFAR10, 100, seed=1)[0], train_idx)


def test_validation_split_from_unused_images():
    train_idx, val_idx = make_long_tailed(CIFAR10, 100, val_per_class=20)
    assert len(train_idx) == 12_386 and len(val_idx) == 200
    np.testing.assert_array_equal(class_counts(CIFAR10[val_idx], 10), np.full(10, 20))
    assert not set(train_idx) & set(val_idx)
    # Only the head class (which kept everything) gives up val_per_class images.
    no_val, _ = make_long_tailed(CIFAR10, 100)
    diff = class_counts(CIFAR10[no_val], 10) - class_counts(CIFAR10[train_idx], 10)
    np.testing.assert_array_equal(diff, [20] + [0] * 9)
    # The other classes keep the very same images as without a validation split.
    np.testing.assert_array_equal(np.sort(train_idx[CIFAR10[train_idx] > 0]), np.sort(no_val[CIFAR10[no_val] > 0]))


def test_balanced_and_errors():
    train_idx, val_idx = make_long_tailed(CIFAR10, 1, val_per_class=100)
    assert (len(train_idx), len(val_idx)) == (49_000, 1_000)
    assert set(train_idx) | set(val_idx) == set(range(50_000))
    with pytest.raises(ValueError, match="val_per_class"):
        make_long_tailed(CIFAR10, 10, val_per_class=5001)


def test_unequal_pool_uses_largest_class():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 6)
    train_idx, _ = make_long_tailed(labels, 10)
    np.testing.assert_array_equal(class_counts(labels[train_idx], 3), [10, 3, 1])


def test_class_counts():
    np.testing.assert_array_equal(class_counts([0, 2, 2], 4), [1, 0, 2, 0])
