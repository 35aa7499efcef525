"""The helpers of benchmarks.cache_speed whose values can be checked (no timings here)."""

import pytest

from benchmarks.cache_speed import cache_bytes_per_sample, parse_args, synthetic_rows, three_subsets, write


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



def test_precision_is_fp32_unless_asked():
    assert parse_args([]).precision == "fp32"
    assert parse_args(["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parse_args(["--precision", "fp8"])
