"""Stored augmented views (lfme.data.views): drawn as the training transform draws, replayed pixel for pixel.

The independent reference is torchvision itself: `draw_views` seeds a
generator per image and calls the same parameter samplers in the same order
as the family's training transform, so the training transform run from that
seed must give the very pixels `replay_pil` makes from the stored views.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from lfme import data as lfme_data
from lfme.data import build_transform
from lfme.data.views import VIEW_FIELDS, StoredViews, _view_seed, allot_views, chosen_views, draw_views, replay_pil
from lfme.engine import Batch
from lfme.models import build_model
from lfme.sampling import ClassBalancedSampler, draw_weights
from lfme.subsets import Subset
from lfme.teacher_cache import VIEW_WIDTH, map_cache, read_cache, write_cache
from lfme.teachers import CachedTeachers, LiveTeachers, score_batches
from rundir.config import Config
from rundir.sections import CacheConfig, DataConfig
from rundir.data import make_loader, views_loader
from stages.cache import part_rows, part_views, score_rows


def test_a_view_is_as_wide_as_the_cache_stores_it():
    assert len(VIEW_FIELDS) == VIEW_WIDTH == 9


def test_the_epochs_view_is_uniform_deterministic_and_changes_with_the_epoch():
    ids = np.arange(200_000) * 3 + 11
    first = chosen_views(7, 1, ids, 4)
    counts = np.bincount(first, minlength=4)
    # Binomial(200000, 1/4): sd 194, so 4 sd = 775 from 50,000.
    assert np.abs(counts - 50_000).max() < 800
    np.testing.assert_array_equal(first, chosen_views(7, 1, ids, 4))
    np.testing.assert_array_equal(first[::-1], chosen_views(7, 1, ids[::-1], 4))  # per sample, not per position
    again = (first == chosen_views(7, 2, ids, 4)).mean()
    assert abs(again - 0.25) < 0.01  # another epoch: an independent draw, equal 1 time in 4
    assert abs((first == chosen_views(8, 1, ids, 4)).mean() - 0.25) < 0.01


def test_views_are_allotted_in_proportion_to_the_students_draws_at_least_one_each():
    # Classes of 6, 3 and 1 images, K = 2: 20 views. Class sampling: shares 20/3 per class, 1.11, 2.22 and
    # 6.67 views an image; floors 1, 2, 6 (18 views); the 2 left by largest remainder: the 1-image class
    # (.67), then the first image of the 3-image class (.22; ties to the earlier image).
    labels = np.repeat([0, 1, 2], [6, 3, 1])
    views = allot_views(draw_weights(labels, "class"), 20)
    np.testing.assert_array_equal(views, [1, 1, 1, 1, 1, 1, 3, 2, 2, 7])
    # A head class whose share is under a view an image takes one each; the rest is shared again:
    # 30 + 1 + 1 images, K = 2: 64 views, 30 for the head, (64 - 30) / 2 = 17 for each one-image class.
    labels = np.repeat([0, 1, 2], [30, 1, 1])
    np.testing.assert_array_equal(allot_views(draw_weights(labels, "class"), 64), [1] * 30 + [17, 17])
    # Instance sampling draws every image alike: K each, the uniform cache's count.
    np.testing.assert_array_equal(allot_views(draw_weights(labels, "instance"), 3 * 32), [3] * 32)
    # CIFAR-10-LT (imbalance 100), K = 8: 8 x 12,406 views; about 2 for a head image, 199 for a tail one.
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    labels = np.repeat(np.arange(10), counts)
    views = allot_views(draw_weights(labels, "class"), 8 * labels.size)
    assert views.sum() == 8 * labels.size and views.min() >= 1
    assert (views[labels == 0] == 2).all() and (views[labels == 9] == 199).all()
    np.testing.assert_array_equal(views, allot_views(draw_weights(labels, "class"), 8 * labels.size))
    with pytest.raises(ValueError, match="at least one view per image"):
        allot_views(np.ones(5), 4)


def test_an_images_draws_in_an_epoch_cycle_through_all_its_stored_views_before_any_repeats():
    counts = np.array([1, 3, 40])
    ids = np.array([5, 9, 12])
    # View v of image k has params (k, v, 0, ...): what `of` returns tells image and view apart.
    params = np.concatenate([np.stack([np.full(n, k), np.arange(n)] + [np.zeros(n)] * 7, axis=1) for k, n in enumerate(counts)])
    views = StoredViews(ids, counts, params, seed=4)
    for epoch in (0, 1, 2):
        chosen = views.choose(epoch, np.full(100, 12), np.arange(100))
        assert sorted(chosen[:40]) == list(range(40))  # the first 40 draws: each of the 40 views once
        np.testing.assert_array_equal(chosen[40:], chosen[:60])  # then the same cycle again
        assert chosen[0] == chosen_views(4, epoch, [12], 40)[0]
        np.testing.assert_array_equal(views.of(np.full(100, 12), chosen)[:, :2], np.stack([np.full(100, 2), chosen], axis=1))
    starts = [views.choose(epoch, [12], [0])[0] for epoch in range(20)]
    assert len(set(starts)) > 5  # each epoch starts the cycle elsewhere
    assert (views.choose(3, [5, 5, 9, 9, 9, 9], [0, 1, 0, 1, 2, 3]) == np.r_[0, 0, (views.choose(3, [9], [0])[0] + np.arange(4)) % 3]).all()
    with pytest.raises(IndexError, match="beyond the image's stored views"):
        views.of([9], [3])
    with pytest.raises(KeyError):
        views.choose(0, [6], [0])


def _image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "family, size, image",
    [("cifar", 32, _image(32, 32)), ("cifar", 16, _image(24, 20)), ("digits", 8, _image(8, 8).convert("L")), ("imagenet", 24, _image(50, 37))],
)
@pytest.mark.parametrize("block", [0, 2])
def test_replayed_views_are_the_training_transforms_pixels_from_the_same_seed(family, size, image, block):
    seed, sample_id, k = 3, 1234, 5
    views = draw_views(family, size, seed, sample_id, image, k, block)
    assert views.shape == (k, 9) and views.dtype == np.float32
    train = build_transform(family, train=True, image_size=size)
    to_tensor = build_transform("digits" if family == "digits" else family, train=False, image_size=size).transforms[-2:]
    torch.manual_seed(_view_seed(seed, sample_id, block))
    for view in views:  # the v-th view of a block is the transform's v-th draw from the block's seed
        expected = train(image)
        replayed = replay_pil(family, size, image, view)
        for step in to_tensor:
            replayed = step(replayed)
        assert torch.equal(replayed, expected)
    # Block 0 is the one block of a uniform cache, seeded as before blocks existed (the value of commit 82a4396);
    # other blocks are draws of their own.
    assert _view_seed(seed, sample_id) == _view_seed(seed, sample_id, 0) == 6030847789340150801
    if block:
        assert not np.array_equal(views, draw_views(family, size, seed, sample_id, image, k))
    # The draws leave the caller's random state alone and do not depend on it.
    torch.manual_seed(99)
    before = torch.get_rng_state()
    np.testing.assert_array_equal(draw_views(family, size, seed, sample_id, image, k, block), views)
    assert torch.equal(torch.get_rng_state(), before)


def test_views_follow_the_families_distributions():
    image = _image(32, 32)
    cifar = np.concatenate([draw_views("cifar", 32, 0, i, image, 4) for i in range(500)])
    assert set(np.unique(cifar[:, 0])) == set(range(9)) and set(np.unique(cifar[:, 1])) == set(range(9))  # p = 32 // 8
    assert (cifar[:, 2:4] == 32).all() and abs(cifar[:, 4].mean() - 0.5) < 0.05
    digits = np.concatenate([draw_views("digits", 8, 0, i, image.convert("L"), 4) for i in range(100)])
    assert set(np.unique(digits[:, 0])) == {0, 1, 2} and (digits[:, 4] == 0).all()  # a mirrored digit is another glyph
    imagenet = np.concatenate([draw_views("imagenet", 24, 0, i, _image(60, 40), 4) for i in range(300)])
    area = imagenet[:, 2] * imagenet[:, 3] / (60 * 40)
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1.0 and (imagenet[:, 0] + imagenet[:, 2] <= 40).all()
    assert ((imagenet[:, 5:8] >= 0.6) & (imagenet[:, 5:8] <= 1.4)).all() and set(np.unique(imagenet[:, 8])) == set(range(6))


# ------------------------------------------------------- the cache and the student


def _setup(family, size, decode_once):
    splits = lfme_data.synthetic(60, 4, 30, 2, size, seed=1)
    cfg = DataConfig(source="synthetic", transform=family, image_size=size, decode_once=decode_once)
    subsets = [Subset("head", (0, 1)), Subset("tail", (2, 3))]
    torch.manual_seed(0)
    experts = [build_model("small_cnn", 2, in_channels=3).eval() for _ in subsets]
    return splits.train, cfg, subsets, LiveTeachers(experts, subsets, 4)


@pytest.mark.parametrize("allot", ["uniform", "draws"])
@pytest.mark.parametrize("family, size, decode_once", [("cifar", 16, True), ("cifar", 16, False), ("imagenet", 16, False)])
def test_the_student_trains_on_the_pixels_its_cached_teachers_scored(family, size, decode_once, allot, tmp_path):
    images, cfg, subsets, teachers = _setup(family, size, decode_once)
    # The cache stage's rows (stages.cache: part_rows, score_rows), in shards of 7 rows (allot draws: a
    # tail image's views straddle shards), read back through the node-local mapped copy as the student reads it.
    config = Config(seed=5, data=cfg, cache=CacheConfig(batch_size=16, views=3, allot=allot))
    positions, blocks = part_rows(config, "train", images.sample_ids, images.labels)
    rows = score_rows(config, teachers, images, positions, blocks, part_views(config, "train"), subsets, "cpu")
    write_cache(tmp_path, {"train": rows}, fingerprint="fp-views", subsets=subsets, experts={"head": "a" * 64, "tail": "b" * 64}, shard_rows=7)
    stored = map_cache(tmp_path, "train", local_dir=str(tmp_path / "local"))
    views = StoredViews.of_rows(stored, seed=5)
    assert views.counts.sum() == 3 * len(images) and stored.logits.size == 3 * len(images) * 4
    if allot == "draws":  # the 4 images of the smallest class are drawn most: the most views
        rare = np.isin(views.sample_ids, images.sample_ids[images.labels == np.bincount(images.labels).argmin()])
        assert views.counts[rare].min() > 3 > views.counts[~rare].min() >= 1
    cached = CachedTeachers(stored)
    # Class-balanced: the 4 images of the smallest classes come up several times an epoch.
    sampler = ClassBalancedSampler(images.labels, num_samples=40, seed=0)
    loader = make_loader(images, cfg, True, 8, sampler=sampler, views=views)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        seen, replayed = 0, {}
        for pixels, labels, sample_ids, chosen in loader:
            live = teachers(pixels)  # the experts, live, on the very batch the student trains on
            read = cached.targets(Batch(pixels, labels, sample_ids, chosen))
            # Equal to the cache's float16 rounding (half a float16 unit, 2**-11 relative): the cache stage's experts ran
            # on PIL's contiguous tensors, these on a channels-last batch with decode_once, whose float32 sums may round
            # across a float16 boundary. Another view's pixels would be off by percents.
            np.testing.assert_allclose(read.numpy(), live.numpy(), rtol=2**-11 + 1e-6, atol=1e-6)
            for i, v in zip(sample_ids.tolist(), chosen.tolist()):
                replayed.setdefault(i, []).append(v)
            seen += len(labels)
        assert seen == 40
        # An image's d-th draw of the epoch replays view (first + d) mod V_i: repeats move on to its other views.
        for i, draws in replayed.items():
            count = views.counts[np.searchsorted(views.sample_ids, i)]
            assert draws == [(draws[0] + d) % count for d in range(len(draws))], (i, draws)
        assert max(len(d) for d in replayed.values()) > 1
    with pytest.raises(ValueError, match="the batch must say which it replays"):
        cached.targets(Batch(pixels, labels, sample_ids))
    # p_i comes from the un-augmented image: the experts on the test transform's pixels, the same on every row
    # of an image. With decode_once the loader's batched transform gives the same pixels in a channels-last
    # tensor, whose convolutions may round differently from PIL's contiguous one: equal to float32 rounding.
    test_rows = score_batches(teachers, make_loader(images, cfg, False, 16), subsets, None, "cpu")
    first = stored.rows_for(np.sort(images.sample_ids))
    np.testing.assert_allclose(stored.confidence[first], test_rows.confidence[np.argsort(test_rows.sample_ids)], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(stored.confidence, stored.confidence[stored.rows_for(stored.sample_ids)])


def test_a_views_cache_with_top_k_keeps_each_views_largest_logits(tmp_path):
    images, cfg, subsets, teachers = _setup("cifar", 16, True)
    full = score_batches(teachers, views_loader(images, cfg, 16, seed=2, views=2), subsets, None, "cpu", views=2)
    top = score_batches(teachers, views_loader(images, cfg, 16, seed=2, views=2), subsets, 1, "cpu", views=2)
    write_cache(tmp_path, {"train": top}, fingerprint="fp-top", subsets=subsets, experts={"head": "a" * 64, "tail": "b" * 64})
    back = read_cache(tmp_path, "train")
    assert back.topk.values.shape == (len(images), 2 * 2)  # k=1 of each of 2 experts, 2 views
    positions, chosen = np.arange(len(back)), np.arange(len(back)) % 2
    full_logits = full.dense(np.argsort(full.sample_ids), chosen)
    rebuilt = back.dense(positions, chosen)
    # Each expert's largest logit is kept exactly (to float16); the other class of a 2-class subset is its own rest.
    for s in subsets:
        cols = list(s.classes)
        np.testing.assert_allclose(rebuilt[:, cols].max(1), full_logits[:, cols].max(1), atol=1e-6)
        np.testing.assert_allclose(rebuilt[:, cols].min(1), full_logits[:, cols].min(1), atol=1e-6)
    with pytest.raises(ValueError, match="name the view"):
        back.dense(positions)
