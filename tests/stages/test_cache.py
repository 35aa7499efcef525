"""stages.cache's pure parts: the cut of a part into shards, one task each, the views a part stores, the tasks run at once.

The stage itself runs in the integration tests (tests/integration/test_pipeline_e2e.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from rundir.config import load_config
from rundir.fields import ConfigError
from stages import cache
from stages.cache import MIN_SHARD_ROWS, SHARD_BYTES, part_rows, part_views, shard_plan, shard_ranges, task_slots


def test_default_shard_is_128_mb_of_float16_logits_whatever_the_label_space():
    # iNaturalist 2018: 8,142 classes -> 8,242 rows of 16,284 bytes = 134,212,728 bytes <= 128 MiB.
    ranges = shard_ranges(437_513, 8_142, None, slots=2)
    assert ranges[0] == (0, 8_242) and 8_242 * 8_142 * 2 <= SHARD_BYTES < 8_243 * 8_142 * 2
    assert len(ranges) == 54 and ranges[-1] == (53 * 8_242, 437_513)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_at_least_as_many_shards_as_tasks_run_at_once():
    assert shard_ranges(12_406, 10, None, slots=2) == [(0, 6_203), (6_203, 12_406)]
    assert shard_ranges(12_406, 10, 5_000, slots=1) == [(0, 5_000), (5_000, 10_000), (10_000, 12_406)]
    assert shard_ranges(3, 10, 1, slots=8) == [(0, 1), (1, 2), (2, 3)]


def test_by_default_no_shard_is_smaller_than_a_task_is_worth():
    assert MIN_SHARD_ROWS == 1024
    assert shard_ranges(3, 10, None, slots=8) == [(0, 3)]
    assert shard_ranges(564, 10, None, slots=4) == [(0, 564)]  # the default run's training part
    assert shard_ranges(2_000, 10, None, slots=4) == [(0, 1_024), (1_024, 2_000)]
    # An explicit shard_rows is what the user asked for.
    assert shard_ranges(2_000, 10, 300, slots=4) == [(0, 300), (300, 600), (600, 900), (900, 1_200), (1_200, 1_500), (1_500, 1_800), (1_800, 2_000)]


def test_an_empty_part_gets_one_empty_shard():
    assert shard_ranges(0, 10, None, slots=4) == [(0, 0)]


def test_the_views_cache_cuts_shards_by_the_bytes_of_all_its_views():
    # 1,000 classes x 4 views x 2 bytes = 8,000 bytes a row -> 16,777 rows in 128 MiB.
    assert shard_ranges(100_000, 1_000, None, slots=1, views=4)[0] == (0, SHARD_BYTES // 8_000)


def test_an_explicit_shard_rows_is_capped_so_that_every_task_slot_gets_a_shard():
    # 1,000 rows over 4 slots: at most ceil(1000 / 4) = 250 a shard, whatever shard_rows asks above that.
    assert shard_ranges(1_000, 10, 600, slots=4) == [(0, 250), (250, 500), (500, 750), (750, 1_000)]
    # No slots reported (0) counts as one: shard_rows alone decides.
    assert shard_ranges(1_000, 10, 600, slots=0) == [(0, 600), (600, 1_000)]


def test_only_the_training_part_stores_augmented_views():
    config = load_config(None, ["cache.views=4"])
    assert (part_views(config, "train"), part_views(config, "val")) == (4, 1)
    assert part_views(load_config(None, []), "train") == 1
    assert part_views(load_config(None, ["cache.views=4", "cache.allot=draws"]), "train") == 1  # rows of one view


def test_allotted_views_are_rows_of_one_view_each_in_sample_id_order():
    # Sample ids out of order; classes of 6, 3 and 1 images (test_views: 1 view each, then 3, 2, 2, then 7).
    ids = np.array([50, 10, 40, 20, 90, 30, 80, 60, 70, 0])
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    config = load_config(None, ["cache.views=2", "cache.allot=draws"])
    positions, blocks = part_rows(config, "train", ids, labels)
    # Class 0's images 1 view each, class 2's 7; class 1's 3, 2, 2 in sample-id order (60, 70, 80): the view
    # left over goes to the earliest image, by id, not by position in the part.
    views = np.bincount(positions, minlength=10)
    assert views.sum() == 20 and (views[labels == 0] == 1).all() and views[9] == 7
    np.testing.assert_array_equal(views[[7, 8, 6]], [3, 2, 2])
    np.testing.assert_array_equal(ids[positions], np.sort(ids[positions]))  # rows by sample id
    np.testing.assert_array_equal(blocks[:7], np.arange(7))  # sample 0's views 0..6, then the next sample's from 0
    assert blocks[7] == 0
    # Validation, and a uniform cache: one row per image, by id, no blocks.
    order, none = part_rows(config, "val", ids, labels)
    assert none is None and (ids[order] == np.sort(ids)).all()
    assert part_rows(load_config(None, ["cache.views=2"]), "train", ids, labels)[1] is None
    # Instance sampling draws every image alike: K views each.
    instance = load_config(None, ["cache.views=2", "cache.allot=draws", "distill.sampling=instance"])
    assert (np.bincount(part_rows(instance, "train", ids, labels)[0]) == 2).all()


def test_the_shards_of_allotted_views_cover_every_row_once_and_may_split_an_images_views():
    ids = {"train": np.array([50, 10, 40, 20, 90, 30, 80, 60, 70, 0]), "val": np.array([7, 3])}
    labels = {"train": np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2]), "val": np.array([0, 1])}
    config = load_config(None, ["cache.views=2", "cache.allot=draws", "cache.shard_rows=4"])
    plan = shard_plan(config, ids, labels, num_classes=3, slots=1)
    assert [(part, index, len(rows)) for part, index, rows, _ in plan] == [("train", i, n) for i, n in enumerate([4, 4, 4, 4, 4])] + [("val", 0, 2)]
    train = [(rows, blocks) for part, _, rows, blocks in plan if part == "train"]
    rows, blocks = (np.concatenate(column) for column in zip(*train))
    np.testing.assert_array_equal(rows, part_rows(config, "train", ids["train"], labels["train"])[0])
    # Sample 0 (7 views, rows 0-6) runs from the first shard into the second; each shard's ids never go down.
    assert ids["train"][train[0][0]].tolist() == [0] * 4 and ids["train"][train[1][0]].tolist()[:3] == [0] * 3
    np.testing.assert_array_equal(blocks[:7], np.arange(7))
    assert plan[-1][3] is None and ids["val"][plan[-1][2]].tolist() == [3, 7]


def test_allot_draws_needs_more_than_one_view():
    with pytest.raises(ConfigError, match="cache.allot: draws shares views x N views .* set cache.views to 2 or more"):
        load_config(None, ["cache.allot=draws"])
    with pytest.raises(ConfigError, match="cache.allot"):
        load_config(None, ["cache.allot=tail"])


@pytest.mark.parametrize(
    "sets, cluster, slots",
    [
        # By CPUs: 5 CPUs / 2 per task = 2 tasks at once (rounded down); 0.5 per task on 3 CPUs = 6.
        (["cache.resources.cpus_per_worker=2"], {"CPU": 5.0}, 2),
        (["cache.resources.cpus_per_worker=0.5"], {"CPU": 3.0}, 6),
        # By GPUs when a task asks for one: 2 GPUs / 0.5 = 4 tasks, however many CPUs there are.
        (["cache.resources.gpus_per_worker=0.5"], {"CPU": 64.0, "GPU": 2.0}, 4),
        # Never fewer than one: a task larger than the cluster, or a cluster without the GPUs asked for.
        (["cache.resources.cpus_per_worker=4"], {"CPU": 2.0}, 1),
        (["cache.resources.gpus_per_worker=1"], {"CPU": 8.0}, 1),
    ],
)
def test_the_task_slots_are_the_tasks_the_cluster_holds_at_once(monkeypatch, sets, cluster, slots):
    monkeypatch.setattr(cache.ray, "cluster_resources", lambda: cluster)  # what Ray reports of the cluster
    assert task_slots(load_config(None, sets)) == slots
