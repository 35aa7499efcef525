import math

import numpy as np
import pytest
from scipy.special import rel_entr

from lfme.metrics import imbalance_metrics, subset_metrics
from lfme.subsets import Subset


def test_two_class_hand_values():
    m = imbalance_metrics([1, 3])
    # p = (1/4, 3/4), C = 2
    assert m["ratio"] == pytest.approx(3.0)
    # 1/4 log2(1/4 * 2) + 3/4 log2(3/4 * 2) = -0.25 + 0.75 log2(1.5)
    assert m["kl"] == pytest.approx(-0.25 + 0.75 * math.log2(1.5))
    # |1/2 - 1/4| + |1/2 - 3/4| = 0.5
    assert m["abs"] == pytest.approx(0.5)
    # sorted (1, 3): ((2-3)*1 + (4-3)*3) / (2 * 4) = 2/8
    assert m["gini"] == pytest.approx(0.25)


def test_gini_sorts_ascending():
    # sorted (1, 2, 3, 4): coefficients 2i-5 = -3,-1,1,3 -> -3-2+3+12 = 10; / (4 * 10) = 0.25
    assert imbalance_metrics([4, 1, 3, 2])["gini"] == pytest.approx(0.25)


def test_four_class_against_references():
    counts = np.array([50.0, 7.0, 300.0, 12.0, 1.0])
    p = counts / counts.sum()
    m = imbalance_metrics(counts)
    assert set(m) == {"ratio", "kl", "abs", "gini"}
    assert all(type(v) is float for v in m.values())
    assert m["ratio"] == pytest.approx(300.0)
    assert m["kl"] == pytest.approx(rel_entr(p, np.full(5, 0.2)).sum() / math.log(2))
    assert m["abs"] == pytest.approx(np.abs(0.2 - p).sum())
    # Gini as mean absolute difference over all ordered pairs / (2 * mean): an independent formula.
    mad = np.abs(counts[:, None] - counts[None, :]).sum() / counts.size**2
    assert m["gini"] == pytest.approx(mad / (2 * counts.mean()))


def test_balanced_is_zero():
    m = imbalance_metrics([5, 5, 5])
    assert m == pytest.approx({"ratio": 1.0, "kl": 0.0, "abs": 0.0, "gini": 0.0})


def test_zero_count_names_class():
    with pytest.raises(ValueError, match="class 2"):
        imbalance_metrics([3, 1, 0, 4])


def test_empty_counts():
    with pytest.raises(ValueError):
        imbalance_metrics([])


def test_subset_metrics_uses_subset_counts_only():
    counts = [100, 50, 10, 2]
    out = subset_metrics(counts, [Subset("many", (1, 0)), Subset("few", (2, 3))])
    assert out["entire"] == pytest.approx(imbalance_metrics(counts))
    many, few = out["subsets"]
    assert many["name"] == "many" and many["classes"] == [0, 1]
    assert many["ratio"] == pytest.approx(2.0)
    assert few["ratio"] == pytest.approx(5.0)
    # few: p = (10/12, 2/12), |1/2 - 10/12| + |1/2 - 2/12| = 2/3
    assert few["abs"] == pytest.approx(2 / 3)
    assert {k: few[k] for k in ("ratio", "kl", "abs", "gini")} == pytest.approx(imbalance_metrics([10, 2]))


def test_subset_metrics_zero_count_names_global_class():
    with pytest.raises(ValueError, match="class 3"):
        subset_metrics([5, 4, 3, 0], [Subset("a", (0, 1)), Subset("b", (2, 3))])


def test_subset_metrics_empty_subset_is_none():
    out = subset_metrics([5, 4], [Subset("many", (0, 1)), Subset("few", ())])
    assert out["subsets"][1]["ratio"] is None and out["subsets"][1]["classes"] == []
