import numpy as np
import pytest

from lfme.sampling import ClassBalancedSampler, DistributedClassBalancedSampler

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


@pytest.mark.parametrize("num_replicas,num_samples", [(1, 63), (3, 63), (4, 100), (5, 7)])
def test_distributed_shares(num_replicas, num_samples):
    k = 4
    shares = []
    for rank in range(num_replicas):
        sampler = DistributedClassBalancedSampler(LABELS, num_replicas, rank, k, num_samples, seed=7)
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
    reference = ClassBalancedSampler(LABELS, k, num_samples=padded, seed=7)
    reference.set_epoch(2)
    assert rebuilt.tolist() == list(reference)
    single = ClassBalancedSampler(LABELS, k, num_samples=num_samples, seed=7)
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
