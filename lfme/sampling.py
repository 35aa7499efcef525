"""Class-balanced ("class-aware") sampling, single process and distributed.

The LFME student is trained with the official class-aware sampler
(docs/METHOD.md section 8): pick a class, then take the next
`samples_per_class` (4) instances of that class from a per-class shuffled
cycle that is reshuffled whenever it is exhausted. How the class is picked:

- `draw="cycle"` (the official code's, as OLTR's and the decoupling paper's
  ClassAwareSampler): the classes in a shuffled order, each once per C
  groups, a new shuffle after every C groups, and the position carried from
  one epoch into the next. Over an epoch every class gets its share of groups
  to within one.
- `draw="iid"`: each group's class drawn uniformly and independently; per-class
  counts then vary binomially (at ImageNet-LT size a standard deviation of
  about 21 instances an epoch against about 1 with the cycle).

Epoch length: `num_samples` defaults to len(labels), so a class-balanced epoch
costs the same as an instance-sampled one and epoch counts compare directly
with plain training. The official code uses max_count * C draws per epoch
(much longer on ImageNet-LT: 1280 * 1000 vs 115,846); pass
num_samples=max_count * C to reproduce it.

Each epoch's sequence is a deterministic function of (seed, epoch) alone,
drawn from numpy Generators seeded with SeedSequence((seed, epoch)), never
the global RNG, so resumed or re-run epochs see the same batches. The class
cycle too: epoch e holds the groups e*G .. e*G+G-1 of one endless sequence
of class shuffles (the r-th seeded by (seed, "classes", r)), G the epoch's
group count, so it continues where epoch e-1 stopped. Each class's instance
cycle starts afresh every epoch (a difference from the official sampler,
whose instance iterators also run on; within an epoch both visit a class's
instances without repeats until all were seen). The class
draws and each class's cycle use separate child streams, which makes a longer
sequence extend a shorter one: the distributed sampler pads by continuing the
draws and its global sequence starts with the single-process one.
"""

import math

import numpy as np
import torch


CLASS_DRAWS = ("cycle", "iid")
CLASS_STREAM = 0x636C  # keys the class shuffles apart from the per-epoch streams


def _class_indices(labels) -> list[np.ndarray]:
    """Instance indices of each class that has at least one instance (only those can be drawn)."""
    labels = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def _shuffled_cycle(rng: np.random.Generator, indices: np.ndarray, length: int) -> np.ndarray:
    """The first `length` items of back-to-back independent shuffles of `indices`."""
    if length == 0:
        return indices[:0]
    reps = math.ceil(length / indices.size)
    return np.concatenate([rng.permutation(indices) for _ in range(reps)])[:length]


class ClassBalancedSampler(torch.utils.data.Sampler[int]):
    """Official class-aware sampling: uniform class, then `samples_per_class` of its instances.

    The class is drawn among the classes present in `labels` (a class without
    training instances cannot be sampled). Yields `num_samples` (default len(labels)) dataset indices per epoch; the
    last class group is cut short when num_samples is not a multiple of
    samples_per_class. Call set_epoch(epoch) before each epoch.
    """

    def __init__(self, labels, samples_per_class: int = 4, num_samples: int | None = None, seed: int = 0, draw: str = "cycle"):
        self.class_indices = _class_indices(labels)
        if draw not in CLASS_DRAWS:
            raise ValueError(f"draw must be one of {CLASS_DRAWS}, got {draw!r}")
        self.draw = draw
        num_samples = len(labels) if num_samples is None else num_samples
        if int(samples_per_class) != samples_per_class or samples_per_class < 1:
            raise ValueError(f"samples_per_class must be a positive integer, got {samples_per_class}")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        self.samples_per_class = int(samples_per_class)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _sequence(self, num_groups: int) -> np.ndarray:
        """`num_groups` class groups of this epoch, flattened: shape (num_groups * samples_per_class,)."""
        k = self.samples_per_class
        num_classes = len(self.class_indices)
        class_stream, *cycle_streams = np.random.SeedSequence((self.seed, self.epoch)).spawn(num_classes + 1)
        if self.draw == "cycle":
            # Offset by the unpadded epoch, so a distributed sampler's global sequence starts with this one.
            group_class = self._class_cycle(self.epoch * math.ceil(self.num_samples / k), num_groups)
        else:
            group_class = np.random.default_rng(class_stream).integers(0, num_classes, size=num_groups)
        groups_per_class = np.bincount(group_class, minlength=num_classes)
        cycles = [
            _shuffled_cycle(np.random.default_rng(stream), indices, n * k)
            for stream, indices, n in zip(cycle_streams, self.class_indices, groups_per_class)
        ]
        # The j-th group of class c takes items j*k .. j*k+k-1 of c's cycle.
        by_class = np.argsort(group_class, kind="stable")
        first_group = np.concatenate(([0], np.cumsum(groups_per_class)[:-1]))
        occurrence = np.empty(num_groups, dtype=np.int64)
        occurrence[by_class] = np.arange(num_groups) - first_group[group_class[by_class]]
        start = np.concatenate(([0], np.cumsum(groups_per_class * k)[:-1]))[group_class] + occurrence * k
        return np.concatenate(cycles)[start[:, None] + np.arange(k)].ravel()

    def _class_cycle(self, start: int, num_groups: int) -> np.ndarray:
        """Groups start .. start+num_groups-1 of the endless sequence of class shuffles."""
        num_classes = len(self.class_indices)
        groups = np.arange(start, start + num_groups)
        rounds = groups // num_classes
        shuffles = {
            int(r): np.random.default_rng(np.random.SeedSequence((self.seed, CLASS_STREAM, int(r)))).permutation(num_classes)
            for r in np.unique(rounds)
        }
        return np.concatenate([shuffles[int(r)][groups[rounds == r] % num_classes] for r in np.unique(rounds)])

    def __iter__(self):
        num_groups = math.ceil(self.num_samples / self.samples_per_class)
        return iter(self._sequence(num_groups)[: self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples


class DistributedClassBalancedSampler(ClassBalancedSampler):
    """Class-aware sampling sharded over `num_replicas` ranks, by whole class groups.

    Every rank computes the same global sequence, padded by further draws to a
    multiple of num_replicas * samples_per_class, and rank r keeps groups
    r, r + R, r + 2R, ...: shares are disjoint, of equal length, their union is
    the global sequence, and each rank still sees k instances of a class in a
    row. `num_samples` (default len(labels)) is the global length before
    padding; len() is the per-rank length.
    """

    def __init__(
        self,
        labels,
        num_replicas: int,
        rank: int,
        samples_per_class: int = 4,
        num_samples: int | None = None,
        seed: int = 0,
        draw: str = "cycle",
    ):
        super().__init__(labels, samples_per_class, num_samples, seed, draw)
        if int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.groups_per_rank = math.ceil(self.num_samples / (self.num_replicas * self.samples_per_class))

    def __iter__(self):
        groups = self._sequence(self.groups_per_rank * self.num_replicas).reshape(-1, self.samples_per_class)
        return iter(groups[self.rank :: self.num_replicas].ravel().tolist())

    def __len__(self) -> int:
        return self.groups_per_rank * self.samples_per_class


def draw_weights(labels, sampling: str) -> np.ndarray:
    """float64 (N,): how often the student's sampler draws each instance, relative to the others.

    `sampling` is `distill.sampling`. class: each class with instances gets the
    same share of the draws, spread over its n_c instances, so an instance's
    weight is 1 / n_c of its class (a 50-image class's images are drawn 100
    times as often as a 5,000-image class's). instance: every instance alike.
    The teacher cache allots its stored views by these weights
    (`cache.allot: draws`, `lfme.data.views.allot_views`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if sampling == "instance":
        return np.ones(labels.size)
    if sampling != "class":
        raise ValueError(f"sampling must be 'class' or 'instance', got {sampling!r}")
    return 1.0 / np.bincount(labels)[labels]
