import itertools
import warnings

import numpy as np
import pytest

from lfme.subsets import Subset, shot_groups, split_balanced, split_by_thresholds, subset_of_class

# Counts sit exactly on the 20 and 100 thresholds to pin the tie rules down.
TIE_COUNTS = [150, 100, 99, 50, 21, 20, 19, 5]
CIFAR10_LT_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def as_dict(subsets):
    return {s.name: s.classes for s in subsets}


def test_subset_normalises_and_has_len():
    s = Subset("few", (3, 1, 2))
    assert s.classes == (1, 2, 3) and len(s) == 3
    with pytest.raises(ValueError):
        Subset("dup", (1, 1))


def test_inclusive_ties_like_official_imagenet_lt():
    # many N >= 100, few N <= 20
    subsets = split_by_thresholds(TIE_COUNTS, [20, 100])
    assert as_dict(subsets) == {"many": (0, 1), "medium": (2, 3, 4), "few": (5, 6, 7)}
    assert [s.name for s in subsets] == ["many", "medium", "few"]


def test_strict_ties_like_literature():
    # many N > 100, few N < 20
    subsets = split_by_thresholds(TIE_COUNTS, [20, 100], convention="strict")
    assert as_dict(subsets) == {"many": (0,), "medium": (1, 2, 3, 4, 5), "few": (6, 7)}


def test_four_subsets_tie_rules_at_every_threshold():
    counts = [100, 20, 10, 5, 50, 15]
    # inclusive: tie at 10 goes down, ties at 20 and 100 go up
    assert as_dict(split_by_thresholds(counts, [10, 20, 100])) == {
        "subset0": (0,), "subset1": (1, 4), "subset2": (5,), "subset3": (2, 3)}
    # strict: tie at 10 goes up, ties at 20 and 100 go down; subset0 (N > 100) is empty
    with pytest.warns(UserWarning, match="subset0"):
        subsets = split_by_thresholds(counts, [10, 20, 100], convention="strict")
    assert as_dict(subsets) == {"subset1": (0, 4), "subset2": (1, 2, 5), "subset3": (3,)}


def test_single_threshold_uses_lowest_threshold_rule():
    counts = [20, 21, 19]
    assert as_dict(split_by_thresholds(counts, [20])) == {"many": (1,), "few": (0, 2)}
    assert as_dict(split_by_thresholds(counts, [20], "strict")) == {"many": (0, 1), "few": (2,)}


def test_custom_names():
    subsets = split_by_thresholds(TIE_COUNTS, [20, 100], names=["head", "body", "tail"])
    assert [s.name for s in subsets] == ["head", "body", "tail"]


def test_empty_subset_warns_and_is_dropped():
    with pytest.warns(UserWarning, match=r"'few'.*\[20\.0, 100\.0\]"):
        subsets = split_by_thresholds(CIFAR10_LT_IF100, [20, 100])
    assert [s.name for s in subsets] == ["many", "medium"]
    assert as_dict(subsets)["medium"] == (8, 9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thresholds": [100, 20]},
        {"thresholds": [20, 20]},
        {"thresholds": [0, 20]},
        {"thresholds": [-5, 20]},
        {"thresholds": [20, 100], "convention": "loose"},
        {"thresholds": [20, 100], "names": ["a", "b"]},
        {"thresholds": [20, 100], "names": ["a", "a", "b"]},
    ],
)
def test_split_by_thresholds_validation(kwargs):
    with pytest.raises(ValueError):
        split_by_thresholds(TIE_COUNTS, **kwargs)


def test_shot_groups_keep_empty_groups_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = shot_groups(CIFAR10_LT_IF100)
    assert as_dict(groups) == {"many": tuple(range(8)), "medium": (8, 9), "few": ()}


def test_shot_groups_conventions():
    assert as_dict(shot_groups(TIE_COUNTS)) == {"many": (0, 1), "medium": (2, 3, 4), "few": (5, 6, 7)}
    assert as_dict(shot_groups(TIE_COUNTS, convention="strict")) == {
        "many": (0,), "medium": (1, 2, 3, 4, 5), "few": (6, 7)}
    with pytest.raises(ValueError):
        shot_groups(TIE_COUNTS, thresholds=(20,))


def test_split_balanced_hand_case():
    # sorted 100, 50, 40 | 10, 9 | 1: ratios 2.5, 10/9, 1; every other cut has a ratio >= 9
    subsets = split_balanced([100, 50, 40, 10, 9, 1], 3)
    assert as_dict(subsets) == {"many": (0, 1, 2), "medium": (3, 4), "few": (5,)}


def objective(sorted_counts, cuts):
    ratios = [sorted_counts[a] / sorted_counts[b - 1] for a, b in zip(cuts[:-1], cuts[1:])]
    return max(ratios), sum(ratios)


def test_split_balanced_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(150):
        num_classes = int(rng.integers(1, 9))
        num_subsets = int(rng.integers(1, num_classes + 1))
        counts = rng.integers(1, 30, size=num_classes)  # small range: plenty of equal counts
        order = np.lexsort((np.arange(num_classes), -counts))
        s = counts[order].astype(float)
        best = min(
            objective(s, [0, *inner, num_classes])
            for inner in itertools.combinations(range(1, num_classes), num_subsets - 1)
        )
        subsets = split_balanced(counts, num_subsets)
        assert len(subsets) == num_subsets and all(len(g) for g in subsets)
        # groups are contiguous in the (-count, index) order, most populous first
        flat = [c for g in subsets for c in sorted(g.classes, key=lambda c: (-counts[c], c))]
        assert flat == order.tolist()
        cuts = np.cumsum([0] + [len(g) for g in subsets]).tolist()
        got = objective(s, cuts)
        assert got[0] == best[0]
        assert got[1] == pytest.approx(best[1])


def test_split_balanced_deterministic_on_ties():
    first = split_balanced([5, 5, 5, 5, 5], 2, names=["a", "b"])
    assert first == split_balanced([5, 5, 5, 5, 5], 2, names=["a", "b"])
    assert sorted(first[0].classes + first[1].classes) == [0, 1, 2, 3, 4]


def test_split_balanced_validation():
    with pytest.raises(ValueError):
        split_balanced([5, 4], 3)
    with pytest.raises(ValueError):
        split_balanced([5, 4], 0)
    with pytest.raises(ValueError):
        split_balanced([5, 0, 3], 2)


def test_subset_of_class():
    subsets = [Subset("many", (0, 3)), Subset("few", (1, 2))]
    assert subset_of_class(subsets, 4).tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="no subset"):
        subset_of_class(subsets, 5)
    with pytest.raises(ValueError, match="two subsets"):
        subset_of_class([Subset("a", (0, 1)), Subset("b", (1,))], 2)
