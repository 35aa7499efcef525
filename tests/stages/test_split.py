"""stages.split's pure parts (no Ray, no data source)."""

import numpy as np
import pytest


def test_the_split_refuses_a_subset_without_validation_images():
    from lfme.subsets import Subset
    from stages.split import check_validation_covers

    subsets = [Subset("many", (0, 1)), Subset("few", (2, 3))]
    check_validation_covers(subsets, np.array([0, 3, 3]), ["a", "b", "c", "d"])  # one class of each subset suffices
    with pytest.raises(ValueError, match=r"subset 'few' \(2 classes: c, d\) has no validation image"):
        check_validation_covers(subsets, np.array([0, 1, 1]), ["a", "b", "c", "d"])
