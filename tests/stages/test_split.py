"""stages.split's pure parts: the long-tailed cut of a source, the subsets a config asks for, Table 1, the validation rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lfme.metrics import subset_metrics
from lfme.subsets import Subset
from rundir.config import load_config
from stages.split import check_validation_covers, long_tailed_indices, make_subsets, metrics_table


def test_the_split_refuses_a_subset_without_validation_images():
    subsets = [Subset("many", (0, 1)), Subset("few", (2, 3))]
    check_validation_covers(subsets, np.array([0, 3, 3]), ["a", "b", "c", "d"])  # one class of each subset suffices
    with pytest.raises(ValueError, match=r"subset 'few' \(2 classes: c, d\) has no validation image"):
        check_validation_covers(subsets, np.array([0, 1, 1]), ["a", "b", "c", "d"])


def data(*sets: str):
    return load_config(None, list(sets)).data


def source(labels, own_val: bool = False):
    """What long_tailed_indices reads of a source: the training labels, and whether it has a validation list."""
    return SimpleNamespace(train=SimpleNamespace(labels=np.asarray(labels)), val=object() if own_val else None)


LABELS = np.repeat(np.arange(3), 10)  # three classes of 10 images each


def test_a_source_without_a_validation_list_gives_up_val_per_class_images_of_each_class():
    # imbalance_factor 10 over 3 classes of 10: LDAM's n_i = int(10 * 0.1 ** (i / 2)) = 10, 3, 1; the head class is
    # capped at 10 - 2 so that its 2 validation images stay out of training.
    train, val = long_tailed_indices(source(LABELS), data("data.imbalance_factor=10", "data.val_per_class=2"))
    assert np.bincount(LABELS[train], minlength=3).tolist() == [8, 3, 1]
    assert np.bincount(LABELS[val], minlength=3).tolist() == [2, 2, 2]
    assert not set(train.tolist()) & set(val.tolist())


def test_a_source_with_its_own_validation_list_keeps_every_image_when_no_imbalance_is_asked():
    # Its own val list: no image is held out (val_per_class ignored); imbalance_factor null: a factor of 1, nothing cut.
    train, val = long_tailed_indices(source(LABELS, own_val=True), data("data.imbalance_factor=null", "data.val_per_class=2"))
    assert sorted(train.tolist()) == list(range(30)) and val.size == 0


COUNTS = np.array([150, 100, 60, 20, 5])


def test_thresholds_split_the_classes_by_the_configured_tie_convention():
    # By hand from the rule in lfme.subsets.split_by_thresholds: inclusive many N >= 100, few N <= 20;
    # strict many N > 100, few N < 20.
    inclusive = make_subsets(COUNTS, load_config(None, ["split.method=thresholds"]).split)
    assert [(s.name, s.classes) for s in inclusive] == [("many", (0, 1)), ("medium", (2,)), ("few", (3, 4))]
    strict = make_subsets(COUNTS, load_config(None, ["split.method=thresholds", "split.convention=strict"]).split)
    assert [(s.name, s.classes) for s in strict] == [("many", (0,)), ("medium", (1, 2, 3)), ("few", (4,))]


def test_the_balanced_method_takes_the_configured_number_of_subsets_and_names():
    # Two groups of sorted counts 150 100 60 20 5: cutting after 60 gives the smallest worst ratio, max(150/60, 20/5) = 4
    # (after 100: 100/5 = 20; after 20: 150/20 = 7.5; after 150: 100/5 = 20).
    split = load_config(None, ["split.method=balanced", "split.num_subsets=2", "split.names=[head, tail]"]).split
    assert [(s.name, s.classes) for s in make_subsets(COUNTS, split)] == [("head", (0, 1, 2)), ("tail", (3, 4))]


def test_table_1_has_the_entire_set_then_each_subset_with_its_imbalance_ratio():
    counts = np.array([100, 50, 10, 5])
    metrics = subset_metrics(counts, [Subset("many", (0, 1)), Subset("few", (2, 3))])
    header, *rows = metrics_table(metrics).splitlines()
    assert header.split() == ["set", "classes", "I_Ratio", "I_KL", "I_Abs", "I_Gini"]
    # I_Ratio is max / min count: 100 / 5 over all four classes, 100 / 50 and 10 / 5 within each subset.
    assert [row.split()[:3] for row in rows] == [["Entire", "4", "20.0"], ["many", "2", "2.0"], ["few", "2", "2.0"]]


def test_every_subset_needs_a_validation_image_and_the_refusal_names_its_first_five_classes():
    subsets = [Subset("many", (0, 1)), Subset("few", (2, 3, 4, 5, 6, 7))]
    names = list("abcdefgh")
    check_validation_covers(subsets, np.array([1, 7]), names)  # one image of one class of each subset suffices
    with pytest.raises(ValueError, match=r"subset 'few' \(6 classes: c, d, e, f, g, \.\.\.\) has no validation image"):
        check_validation_covers(subsets, np.array([0, 1, 1]), names)
