import json
import math

import numpy as np
import pytest
import torch

from lfme.evaluation import accuracy_report, per_class_accuracy, subset_accuracy, top1
from lfme.subsets import Subset

# argmax per row: 0, 1, 0, 2, 2
LOGITS = np.array(
    [
        [2.0, 1.0, 0.0, 0.0],
        [0.0, 3.0, 1.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 5.0, 0.0],
        [0.0, 1.0, 4.0, 0.0],
    ]
)
LABELS = np.array([0, 2, 0, 2, 1])  # correct: yes, no, yes, yes, no


def test_top1_numpy_and_torch():
    assert top1(LOGITS, LABELS) == pytest.approx(3 / 5)
    assert top1(torch.tensor(LOGITS), torch.tensor(LABELS)) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        top1(np.zeros((0, 4)), np.zeros(0, dtype=int))


def test_per_class_accuracy():
    acc = per_class_accuracy(LOGITS.argmax(1), LABELS, 4)
    # class 0: 2/2, class 1: 0/1, class 2: 1/2, class 3: no samples
    np.testing.assert_array_equal(acc[:3], [1.0, 0.0, 0.5])
    assert math.isnan(acc[3])


def test_subset_accuracy_all_classes_vs_restricted():
    # classes (0, 1): samples 0, 2, 4; sample 4 (label 1) is predicted 2 over all classes
    assert subset_accuracy(LOGITS, LABELS, (0, 1)) == pytest.approx(2 / 3)
    # among columns 0, 1 only, sample 4 scores (0, 1) -> class 1, correct
    assert subset_accuracy(LOGITS, LABELS, (0, 1), restrict=True) == pytest.approx(1.0)
    # a single-class subset predicts its class when restricted
    assert subset_accuracy(LOGITS, LABELS, [2]) == pytest.approx(0.5)
    assert subset_accuracy(torch.tensor(LOGITS), torch.tensor(LABELS), [2], restrict=True) == pytest.approx(1.0)
    assert math.isnan(subset_accuracy(LOGITS, LABELS, [3]))


def test_accuracy_report():
    train_counts = [100, 50, 20, 5]
    subsets = [Subset("head", (0, 1)), Subset("tail", (2, 3))]
    report = accuracy_report(LOGITS, LABELS, train_counts, subsets)
    json.dumps(report, allow_nan=False)
    assert report["overall"] == pytest.approx(0.6)
    assert report["num_samples"] == 5
    assert report["subsets"] == pytest.approx({"head": 2 / 3, "tail": 0.5})
    inclusive = report["shots"]["inclusive"]
    # many N>=100: class 0; medium: class 1; few N<=20: classes 2, 3
    assert inclusive["rule"] == "many N>=100, few N<=20"
    assert inclusive["classes"] == {"many": 1, "medium": 1, "few": 2}
    assert (inclusive["many"], inclusive["medium"], inclusive["few"]) == pytest.approx((1.0, 0.0, 0.5))
    strict = report["shots"]["strict"]
    # many N>100: none; medium: classes 0, 1, 2 (samples 0-4); few N<20: class 3, which has no test sample
    assert strict["rule"] == "many N>100, few N<20"
    assert strict["classes"] == {"many": 0, "medium": 3, "few": 1}
    assert strict["many"] is None and strict["few"] is None
    assert strict["medium"] == pytest.approx(0.6)
    assert report["per_class"][:3] == pytest.approx([1.0, 0.0, 0.5])
    assert report["per_class"][3] is None
