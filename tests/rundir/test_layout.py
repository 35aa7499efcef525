"""rundir.layout's split files: the split stage's outputs are the one source of subsets, ids and labels afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from lfme.data import digits
from lfme.subsets import Subset
from rundir.config import load_config
from rundir.layout import load_split, read_split, save_split


@pytest.fixture
def saved(tmp_path):
    """A split written as the split stage writes it: 30 training and 10 validation images of digits, out of id order."""
    source = digits(test_per_class=40)
    train, val = source.train.subset(np.arange(29, -1, -1)), source.train.subset(np.arange(100, 110))
    subsets = [Subset("head", (0, 1, 2, 3, 4)), Subset("tail", (5, 6, 7, 8, 9))]
    meta = {"class_names": source.class_names, "class_counts": np.bincount(train.labels, minlength=10).tolist(),
            "subsets": [s.record() for s in subsets]}
    save_split(str(tmp_path), train, val, meta)
    return tmp_path, train, val, subsets


def test_read_split_needs_no_data_source(saved):
    run_dir, train, val, subsets = saved
    info = read_split(str(run_dir))  # no DataConfig: nothing but the two files is read
    assert info.subsets == subsets and info.num_classes == 10
    assert info.class_counts.tolist() == np.bincount(train.labels, minlength=10).tolist()
    np.testing.assert_array_equal(info.sample_ids["train"], train.sample_ids)  # in the split's order, 29..0
    np.testing.assert_array_equal(info.labels["train"], train.labels)
    np.testing.assert_array_equal(info.sample_ids["val"], val.sample_ids)
    np.testing.assert_array_equal(info.labels["val"], val.labels)


def test_load_split_finds_the_chosen_images_in_the_source(saved):
    run_dir, train, val, _ = saved
    split = load_split(str(run_dir), load_config(None).data)
    np.testing.assert_array_equal(split.train.sample_ids, train.sample_ids)
    np.testing.assert_array_equal(split.val.sample_ids, val.sample_ids)
    assert np.array_equal(np.asarray(split.train.load(0)), np.asarray(train.load(0)))  # the same image, not just its id
    assert split.channels == 1 and split.subsets == read_split(str(run_dir)).subsets


def test_a_label_the_source_changed_since_the_split_is_named(saved):
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir, train, _, _ = saved
    path = run_dir / "split" / "samples.parquet"
    table = pq.read_table(path).to_pydict()
    table["label"][3] = (table["label"][3] + 1) % 10  # as if the source had relabelled sample 26
    pq.write_table(pa.table(table), path)
    with pytest.raises(ValueError) as raised:
        load_split(str(run_dir), load_config(None).data)
    sample = int(train.sample_ids[3])
    assert f"training sample {sample} with label {table['label'][3]}, the data source now {int(train.labels[3])}" in str(raised.value)


def test_missing_split_files_name_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split\.json is missing: run the split stage first"):
        read_split(str(tmp_path))
