"""Augmented views written down: drawn once, stored beside the teachers' logits, replayed by the student.

A teacher cache of the un-augmented image is not the signal the official code
distils: its experts run on the augmented training batch, the very crop and
flip the student sees (docs/METHOD.md section 4). FKD (Shen & Xing, ECCV 2022)
and Apple's ml-dr keep the cache and the faithfulness by storing, for each
training image, the teachers' outputs on K augmented views together with
each view's parameters; the student's loader then replays exactly those views.

A view is `VIEW_FIELDS`, nine float32 numbers (exact for every integer they hold):

    top, left, height, width   the crop box. cifar and digits: the offsets into
                               the image zero-padded by p (each 0..2p) and the
                               output size; imagenet: RandomResizedCrop's box in
                               the original image
    flip                       1.0 for a horizontal flip
    brightness, contrast,      ColorJitter's factors (imagenet; 1.0 = unchanged)
    saturation
    order                      the order the three are applied in, an index into
                               `JITTER_ORDERS`

`draw_views` draws K of them for one image from its own seeded torch
generator state, with torchvision's own parameter samplers
(`RandomCrop`'s offsets, `RandomResizedCrop.get_params`,
`ColorJitter.get_params`): the training transform's distribution, and the same
views whichever shard or worker draws them. `replay_pil` turns an image and a
view into the view's pixels (the PIL path); `BatchTransform.apply` does the
same for decoded cifar and digits batches, on the device (`DrawPixels`,
`DeviceBatches`). Which of its V_i views a draw of an image replays: view
(hash(seed, epoch, sample id) + d) mod V_i for the image's d-th draw of the
epoch (`chosen_views`, `StoredViews.choose`, `DrawTagged`), so an image drawn
again within an epoch (class-balanced sampling draws tail images many times)
moves on to its next view, through all V_i before any repeats; the view
index travels with the batch to the teacher lookup
(`lfme.engine.Batch.views`).

How many views an image has (`cache.allot`): K each (uniform), or
`allot_views`, K x N in all shared in proportion to how often the student
draws each image (`lfme.sampling.draw_weights`), at least one each. With
K each, class-balanced sampling gives a tail image K distinct inputs for
the hundreds of times it is drawn, and the tail overfits them
(docs/RESULTS.md, issue 20); the allotment gives it about as many views as
draws, the head one or two. An image's views come in blocks, block b drawn
from a generator seeded by (seed, sample id, b) so that any block is drawn
without the ones before it: a uniform cache stores block 0 of K views per
image (seeded as before blocks existed), an allotted one V_i blocks of one
view.

Plain PyTorch and numpy, no Ray.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import torch
import torch.utils.data
from PIL import Image

from lfme.data.datasets import PixelDataset
from lfme.data.sources import ImageList
from lfme.data.transforms import IMAGENET_JITTER, KEEPS_DECODED, build_transform, crop_padding, fixed_size_step, flips_in, normalized_tensor

VIEW_FIELDS = ("top", "left", "height", "width", "flip", "brightness", "contrast", "saturation", "order")
# ColorJitter applies brightness (0), contrast (1) and saturation (2) in a random order.
JITTER_ORDERS = tuple(itertools.permutations(range(3)))
JITTER_FNS = ("adjust_brightness", "adjust_contrast", "adjust_saturation")  # in torchvision.transforms.functional


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64: a cheap hash whose outputs look independent for consecutive inputs."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash(*keys) -> np.ndarray:
    """One uint64 per element of the last key, mixing in the keys before it."""
    h = np.zeros((), np.uint64)
    for key in keys:
        h = _mix(h ^ np.asarray(key, dtype=np.int64).astype(np.uint64))
    return h


def chosen_views(seed: int, epoch: int, sample_ids, views) -> np.ndarray:
    """int64 index in 0..views-1 of the view each sample is trained on in `epoch`.

    `views`: how many each sample has (one number for all, or one per sample).
    Uniform over a sample's views, independent across samples and epochs, and
    a pure function of its arguments: the loader replaying a view and the
    teacher lookup reading its logits compute the same index apart.
    """
    ids = np.asarray(sample_ids, dtype=np.int64)
    return (_hash(seed, epoch, ids) % np.asarray(views, dtype=np.uint64)).astype(np.int64)


def _view_seed(seed: int, sample_id: int, block: int = 0) -> int:
    """The seed of block `block` of an image's views; block 0, the one block of a uniform cache, is seeded as before blocks existed."""
    keys = (seed, -1, sample_id) if block == 0 else (seed, -1, sample_id, block)
    return int(_hash(*keys) >> np.uint64(1))  # torch.manual_seed takes < 2**63


def allot_views(weights, budget: int) -> np.ndarray:
    """int64 (N,): how many views to store of each image, in proportion to `weights`, at least one each, `budget` in all.

    `cache.allot: draws` gives an image as many distinct views as the student
    draws it, relatively: `weights` are `lfme.sampling.draw_weights`, `budget`
    is K x N (the storage of K views per image). Water-filling: V_i = max(1,
    s w_i) with s such that the V_i sum to `budget` (the images whose share is
    under one view get one, and s is worked out again over the others until
    none is under), then rounded by largest remainder, ties to the earlier
    image, so that the total is exactly `budget`.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or (w <= 0).any() or budget < w.size:
        raise ValueError(f"views are allotted by positive weights, at least one view per image: {w.size} weights, budget {budget}")
    floored = np.zeros(w.size, dtype=bool)
    while True:
        scale = (budget - floored.sum()) / w[~floored].sum()
        under = ~floored & (scale * w < 1 - 1e-9)  # a share of exactly one view, give or take rounding, is not under
        if not under.any():
            break
        floored |= under
    share = np.where(floored, 1.0, scale * w)
    views = np.floor(share).astype(np.int64)
    views[np.argsort(views - share, kind="stable")[: budget - views.sum()]] += 1
    return views


def draw_views(family: str, image_size: int, seed: int, sample_id: int, image: Image.Image, views: int, block: int = 0) -> np.ndarray:
    """(views, 9) float32: `views` training views of `image` (`VIEW_FIELDS`), from its own seeded draws.

    `image` is the image as loaded (imagenet needs its size for the crop box);
    `block`: which block of the image's views (its own seed: a block is drawn
    without drawing the ones before it). The draws do not touch the caller's
    random state.
    """
    out = np.zeros((views, len(VIEW_FIELDS)), np.float32)
    out[:, 5:8] = 1.0  # no colour change unless the family jitters
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_view_seed(seed, sample_id, block))
        for v in range(views):
            if family in KEEPS_DECODED:
                reach = 2 * crop_padding(family, image_size) + 1
                top, left = (int(torch.randint(0, reach, size=(1,))) for _ in range(2))
                out[v, :4] = (top, left, image_size, image_size)
                out[v, 4] = float(flips_in(family) and torch.rand(1) < 0.5)
            elif family == "imagenet":
                from torchvision import transforms as T  # imported where needed: lfme.data.transforms says why

                out[v, :4] = T.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
                out[v, 4] = float(torch.rand(1) < 0.5)
                jitter = T.ColorJitter(**IMAGENET_JITTER)
                order, b, c, s, _ = T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
                out[v, 5:8] = (b, c, s)
                out[v, 8] = JITTER_ORDERS.index(tuple(int(i) for i in order if i < 3))
            else:
                raise ValueError(f"no views for transform family {family!r}")
    return out


def replay_pil(family: str, image_size: int, image: Image.Image, view: np.ndarray) -> Image.Image:
    """The pixels of `view` (one row of `draw_views`) of `image`: the training transform with its draws given."""
    from torchvision.transforms import functional as TF  # imported where needed: lfme.data.transforms says why

    top, left, height, width, flip = (int(x) for x in view[:5])
    if family in KEEPS_DECODED:
        step = fixed_size_step(family, image_size)
        image = step(image) if step is not None else image
        image = TF.crop(TF.pad(image, crop_padding(family, image_size)), top, left, height, width)
    elif family == "imagenet":
        image = TF.resized_crop(image, top, left, height, width, [image_size, image_size], antialias=True)
    else:
        raise ValueError(f"no views for transform family {family!r}")
    if flip:
        image = TF.hflip(image)
    if family == "imagenet":
        for fn in JITTER_ORDERS[int(view[8])]:
            image = getattr(TF, JITTER_FNS[fn])(image, float(view[5 + fn]))
    return image


class ViewsOfImages(torch.utils.data.Dataset):
    """The cache stage's items: `(test-view tensor, (K, ...) view tensors, (K, 9) views, label, sample_id)`.

    The test view is the un-augmented image p_i is computed on; the K views
    are drawn here (`draw_views`) and replayed through the same function the
    student's PIL path uses.

    `blocks` (`cache.allot: draws`), int (n, 2): item i is instead block
    `blocks[i, 1]` of the views of image `blocks[i, 0]`, without the test
    view: `((K, ...) view tensors, (K, 9) views, label, sample_id)`; p_i is
    then computed once per image, not once per block. An image's blocks are
    consecutive items, so the last image decoded is kept: a tail image of a
    hundred blocks is decoded about once per loader worker.
    """

    def __init__(self, images: ImageList, family: str, image_size: int, seed: int, views: int, blocks: np.ndarray | None = None):
        self.images, self.family, self.image_size, self.seed, self.views = images, family, image_size, seed, views
        self.blocks = None if blocks is None else np.asarray(blocks, dtype=np.int64).reshape(-1, 2)
        self.test = build_transform(family, train=False, image_size=image_size)
        self.to_tensor = normalized_tensor(family)
        self._last: tuple[int, Image.Image] | None = None  # (sample id, image) of the last item

    def __len__(self) -> int:
        return len(self.images) if self.blocks is None else len(self.blocks)

    def _load(self, i: int) -> Image.Image:
        sample_id = int(self.images.sample_ids[i])
        if self._last is None or self._last[0] != sample_id:
            self._last = (sample_id, self.images.load(i))
        return self._last[1]

    def __getitem__(self, item: int):
        i, block = (item, 0) if self.blocks is None else (int(self.blocks[item, 0]), int(self.blocks[item, 1]))
        image, sample_id, label = self._load(i), int(self.images.sample_ids[i]), int(self.images.labels[i])
        drawn = draw_views(self.family, self.image_size, self.seed, sample_id, image, self.views, block)
        crops = torch.stack([self.to_tensor(replay_pil(self.family, self.image_size, image, view)) for view in drawn])
        if self.blocks is not None:
            return crops, torch.from_numpy(drawn), label, sample_id
        return self.test(image), crops, torch.from_numpy(drawn), label, sample_id


class StoredViews:
    """The views a teacher cache stored for its training images, and which one each draw of an image replays.

    `sample_ids` sorted ascending; `counts[k]` views of image k (K each in a
    uniform cache, V_i with `cache.allot: draws`), whose parameters are
    `params` float32 (sum of counts, 9), image after image.
    """

    def __init__(self, sample_ids: np.ndarray, counts: np.ndarray, params: np.ndarray, seed: int):
        self.sample_ids = np.asarray(sample_ids, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.params = np.asarray(params, dtype=np.float32)
        self.first = np.cumsum(self.counts) - self.counts  # the position of each image's view 0 in `params`
        self.seed = int(seed)
        if self.counts.shape != self.sample_ids.shape or (self.counts < 1).any():
            raise ValueError(f"views: {self.counts.size} counts of at least one view for {self.sample_ids.size} samples")
        if self.params.shape != (int(self.counts.sum()), len(VIEW_FIELDS)):
            raise ValueError(f"views must be ({int(self.counts.sum())}, {len(VIEW_FIELDS)}) for {self.counts.sum()} views, got {self.params.shape}")

    @classmethod
    def of_rows(cls, rows, seed: int) -> StoredViews:
        """The views of a teacher cache's training rows (`lfme.teacher_cache.TeacherRows` of augmented views).

        Rows are blocks of `rows.views` views, an image's blocks consecutive
        and in view order (one block each in a uniform cache).
        """
        ids, blocks = np.unique(rows.sample_ids, return_counts=True)
        return cls(ids, blocks * rows.views, np.asarray(rows.view_params).reshape(len(rows) * rows.views, len(VIEW_FIELDS)), seed)

    def _positions(self, sample_ids) -> np.ndarray:
        ids = np.asarray(sample_ids, dtype=np.int64)
        rows = np.searchsorted(self.sample_ids, ids)
        if ids.size and (rows.max() >= self.sample_ids.size or (self.sample_ids[rows] != ids).any()):
            raise KeyError(f"the teacher cache stores no views for some of sample ids {ids[:4].tolist()}...")
        return rows

    def choose(self, epoch: int, sample_ids, draws) -> np.ndarray:
        """int64 view index of each draw: view (hash(seed, epoch, id) + d) mod V_i for the image's d-th draw of the epoch.

        An image drawn again within an epoch moves on to its next view, so its
        first V_i draws of an epoch replay V_i distinct views.
        """
        ids = np.asarray(sample_ids, dtype=np.int64)
        counts = self.counts[self._positions(ids)]
        return (chosen_views(self.seed, epoch, ids, counts) + np.asarray(draws, dtype=np.int64)) % counts

    def of(self, sample_ids, views) -> np.ndarray:
        """(n, 9) the parameters of view `views[k]` of image `sample_ids[k]`."""
        positions = self._positions(sample_ids)
        views = np.asarray(views, dtype=np.int64)
        if views.size and ((views < 0) | (views >= self.counts[positions])).any():
            raise IndexError(f"a view index beyond the image's stored views: {views[:4].tolist()}...")
        return self.params[self.first[positions] + views]


class DrawTagged(torch.utils.data.Sampler):
    """`sampler`'s indices as (index, epoch, draw) keys: draw = how often the index came up before in this epoch.

    A dataset in a loader worker process thus knows which view a draw replays.
    Class-balanced sampling draws a tail image many times an epoch; each
    repeat moves on to its next stored view instead of replaying the same
    pixels, as a fresh random crop would not.
    """

    def __init__(self, sampler):
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return int(self.sampler.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch, seen = self.epoch, collections.Counter()
        for i in self.sampler:
            i = int(i)
            yield i, epoch, seen[i]
            seen[i] += 1


class ReplayedImages(torch.utils.data.Dataset):
    """Training items `(view tensor, label, sample_id, view)` for `DrawTagged` keys: the draw's stored view, in PIL."""

    def __init__(self, images: ImageList, family: str, image_size: int, views: StoredViews):
        self.images, self.family, self.image_size, self.views = images, family, image_size, views
        self.to_tensor = normalized_tensor(family)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int]):
        i, epoch, draw = key
        sample_id = int(self.images.sample_ids[i])
        view = int(self.views.choose(epoch, [sample_id], [draw])[0])
        image = replay_pil(self.family, self.image_size, self.images.load(i), self.views.of([sample_id], [view])[0])
        return self.to_tensor(image), int(self.images.labels[i]), sample_id, view


class DrawPixels(torch.utils.data.Dataset):
    """Training items `(uint8 pixels, label, sample_id, view)` for `DrawTagged` keys.

    `DeviceBatches` given the `StoredViews` crops and flips the whole batch
    with the parameters of each item's view.
    """

    def __init__(self, pixels: PixelDataset, views: StoredViews):
        self.pixels, self.views = pixels, views

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: tuple[int, int, int]):
        i, epoch, draw = key
        pixels, label, sample_id = self.pixels[i]
        return pixels, label, sample_id, int(self.views.choose(epoch, [sample_id], [draw])[0])


__all__ = [
    "JITTER_ORDERS",
    "VIEW_FIELDS",
    "DrawTagged",
    "ReplayedImages",
    "DrawPixels",
    "StoredViews",
    "ViewsOfImages",
    "allot_views",
    "chosen_views",
    "draw_views",
    "replay_pil",
]
