"""The helpers of benchmarks/cache_speed.py whose values can be checked (no timings here)."""

import math

import numpy as np
import pytest

from benchmarks.cache_speed import cache_bytes_per_sample, confidence, synthetic_rows, three_subsets, write
from lfme.subsets import Subset


def test_bytes_per_sample_is_shard_bytes_over_rows(tmp_path):
    sizes = {}
    for num_classes in (100, 200):
        directory = tmp_path / f"c{num_classes}"
        subsets = three_subsets(num_classes)
        write(directory, synthetic_rows(2000, num_classes, subsets), subsets)
        shards = list(directory.glob("data-*/*.parquet"))
        assert len(shards) == 1
        sizes[num_classes] = cache_bytes_per_sample(directory)
        assert sizes[num_classes] == shards[0].stat().st_size / 2000
        # never below what cannot shrink: 2C bytes of float16 logits, 8 of sample_id, 4 of confidence
        assert sizes[num_classes] >= 2 * num_classes + 12
    # logits are stored uncompressed, without dictionary: each extra class costs 2 bytes per sample
    assert sizes[200] - sizes[100] == pytest.approx(200, abs=2)


def test_confidence_is_the_label_probability_within_its_subset():
    subsets = [Subset("a", (0, 2)), Subset("b", (1,))]
    logits = np.array([[0.0, 9.0, math.log(3)], [5.0, 0.0, 5.0]])
    # row 0, label 2 in subset a: softmax over columns 0, 2 = (1, 3) / 4 -> 3/4 (column 1 ignored)
    # row 1, label 1 alone in subset b: 1
    np.testing.assert_allclose(confidence(logits, np.array([2, 1]), subsets), [0.75, 1.0], rtol=1e-6)
