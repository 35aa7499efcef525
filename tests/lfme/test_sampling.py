import numpy as np
import pytest

from lfme.sampling import ClassBalancedSampler, DistributedClassBalancedSampler, draw_weights

# Long-tailed labels: class c has 2**(5-c) instances (32, 16, 8, 4, 2, 1), shuffled.
LABELS = np.random.default_rng(1).permutation(np.repeat(np.arange(6), [32, 16, 8, 4, 2, 1]))


def groups_of(indices, k):
    return np.asarray(indices).reshape(-1, k)


def test_length_and_valid_indices():
    sampler = ClassBalancedSampler(LABELS)
    indices = list(sampler)
    assert len(sampler) == len(indices) == len(LABELS)
    assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in indices)


def test_groups_of_k_same_class_instances():
    sampler = ClassBalancedSampler(LABELS, samples_per_class=4, num_samples=400)
    groups = groups_of(list(sampler), 4)
    assert (LABELS[groups] == LABELS[groups][:, :1]).all()


def test_truncated_last_group():
    indices = list(ClassBalancedSampler(LABELS, samples_per_class=4, num_samples=10))
    assert len(indices) == 10


def test_classes_drawn_uniformly():
    sampler = ClassBalancedSampler(LABELS, samples_per_class=2, num_samples=2 * 6000)
    class_of_group = LABELS[groups_of(list(sampler), 2)[:, 0]]
    freq = np.bincount(class_of_group, minlength=6) / len(class_of_group)
    # 6000 multinomial draws at p = 1/6: sd = sqrt(p(1-p)/n) ~ 0.0048; 0.025 is > 5 sd
    assert np.abs(freq - 1 / 6).max() < 0.025


def test_cycles_cover_a_class_before_repeating():
    # Class 1 has 16 instances: each block of 16 of its draws is one shuffle of all of them.
    sampler = ClassBalancedSampler(LABELS, samples_per_class=4, num_samples=4000)
    indices = np.asarray(list(sampler))
    of_class = indices[LABELS[indices] == 1]
    blocks = of_class[: len(of_class) // 16 * 16].reshape(-1, 16)
    assert len(blocks) > 5
    expected = np.sort(np.flatnonzero(LABELS == 1))
    assert all((np.sort(b) == expected).all() for b in blocks)
    assert not all((b == blocks[0]).all() for b in blocks)  # reshuffled when exhausted


def test_deterministic_per_seed_and_epoch():
    a, b = ClassBalancedSampler(LABELS, seed=3), ClassBalancedSampler(LABELS, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again replays the epoch
    b.set_epoch(6)
    assert list(a) != list(b)
    c = ClassBalancedSampler(LABELS, seed=4)
    c.set_epoch(5)
    assert list(a) != list(c)


def test_global_rng_untouched():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    list(ClassBalancedSampler(LABELS))
    assert np.random.rand() == expected


@pytest.mark.parametrize("draw", ["cycle", "iid"])
@pytest.mark.parametrize("num_replicas,num_samples", [(1, 63), (3, 63), (4, 100), (5, 7)])
def test_distributed_shares(num_replicas, num_samples, draw):
    k = 4
    shares = []
    for rank in range(num_replicas):
        sampler = DistributedClassBalancedSampler(LABELS, num_replicas, rank, k, num_samples, seed=7, draw=draw)
        sampler.set_epoch(2)
        shares.append(groups_of(list(sampler), k))
        assert len(sampler) == shares[-1].size
    # equal length, padded to a multiple of R * k
    assert len({s.size for s in shares}) == 1
    padded = -(-num_samples // (num_replicas * k)) * num_replicas * k
    assert sum(s.size for s in shares) == padded
    # rank r holds groups r, r+R, ...: interleaving the shares rebuilds the global sequence,
    # which continues the single-process sequence of the same (seed, epoch)
    rebuilt = np.stack(shares, axis=1).reshape(-1)
    if draw == "iid":  # i.i.d. draws: a longer epoch of the same (seed, epoch) extends a shorter one
        reference = ClassBalancedSampler(LABELS, k, num_samples=padded, seed=7, draw=draw)
        reference.set_epoch(2)
        assert rebuilt.tolist() == list(reference)
    single = ClassBalancedSampler(LABELS, k, num_samples=num_samples, seed=7, draw=draw)
    single.set_epoch(2)
    assert rebuilt[:num_samples].tolist() == list(single)
    # each group is one class; positions of the global sequence are split disjointly
    for share in shares:
        assert (LABELS[share] == LABELS[share][:, :1]).all()


def test_validation():
    with pytest.raises(ValueError):
        ClassBalancedSampler(LABELS, samples_per_class=0)
    with pytest.raises(ValueError):
        ClassBalancedSampler([])
    with pytest.raises(ValueError):
        DistributedClassBalancedSampler(LABELS, num_replicas=2, rank=2)


def imagenet_lt_labels() -> np.ndarray:
    """Labels of ImageNet-LT's size: 115,846 images over 1,000 classes, the largest 1,280 (the synthetic source's profile)."""
    from lfme.data.sources import long_tailed_profile

    return np.repeat(np.arange(1000), long_tailed_profile(115_846, 1_000, 1_280))


@pytest.mark.parametrize("draw, low, high", [("cycle", 0.0, 2.5), ("iid", 19.0, 24.0)])
def test_per_class_counts_of_an_epoch_at_imagenet_lt_size(draw, low, high):
    """28,962 groups of 4 over 1,000 classes: the cycle gives each class 28 to 30 groups (an epoch starts
    and ends inside a round of the cycle); i.i.d. draws give Binomial(28,962, 1/1000) groups, sd sqrt(28.9)
    = 5.4 groups = 21.5 instances."""
    labels = imagenet_lt_labels()
    sampler = ClassBalancedSampler(labels, samples_per_class=4, seed=0, draw=draw)
    sampler.set_epoch(3)
    counts = np.bincount(labels[list(sampler)], minlength=1000)
    assert low <= counts.std() <= high
    if draw == "cycle":  # the epoch's full windows of C groups, plus at most one group in each partial window at its ends
        assert counts.max() - counts.min() <= 2 * 4


def test_the_class_cycle_runs_on_across_epochs():
    """Every window of C consecutive groups of the run, epoch boundaries included, holds each class once."""
    k, num_samples = 2, 2 * 15  # 15 groups an epoch over 6 classes: windows straddle epochs
    classes = []
    for epoch in range(4):
        sampler = ClassBalancedSampler(LABELS, samples_per_class=k, num_samples=num_samples, seed=5)
        sampler.set_epoch(epoch)
        classes += LABELS[groups_of(list(sampler), k)[:, 0]].tolist()
    windows = np.asarray(classes).reshape(-1, 6)
    assert all(sorted(w) == list(range(6)) for w in windows)
    assert len({tuple(w) for w in windows}) > 1  # reshuffled every C groups
    with pytest.raises(ValueError, match="draw must be one of"):
        ClassBalancedSampler(LABELS, draw="round-robin")


def test_draw_weights_are_how_often_each_sampler_draws_an_instance():
    by_hand = np.array([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])[LABELS]
    np.testing.assert_array_equal(draw_weights(LABELS, "class"), by_hand)
    np.testing.assert_array_equal(draw_weights(LABELS, "instance"), np.ones(LABELS.size))
    # Against the sampler itself: draws per instance over 100 epochs, averaged within each class, in proportion to 1 / n_c.
    sampler = ClassBalancedSampler(LABELS, seed=3)
    draws = np.zeros(LABELS.size)
    for epoch in range(100):
        sampler.set_epoch(epoch)
        np.add.at(draws, list(sampler), 1)
    per_instance = np.bincount(LABELS, weights=draws) / np.bincount(LABELS)
    per_class = 1 / np.array([32, 16, 8, 4, 2, 1])
    np.testing.assert_allclose(per_instance / per_instance.sum(), per_class / per_class.sum(), rtol=0.05)
    with pytest.raises(ValueError, match="'class' or 'instance'"):
        draw_weights(LABELS, "balanced")
