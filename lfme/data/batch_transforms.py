"""The digits and cifar transforms applied to whole uint8 batches, on the training device.

`build_transform` augments one PIL image at a time; on images kept decoded
(`ImageList.decoded`) that per-image work is most of what is left of a data
step. Here the same transform runs on a batch of uint8 pixels as tensors:

- train: a crop of the image zero-padded by p (1 for digits, image_size // 8
  for cifar), each offset uniform over 0..2p, then (cifar only) a horizontal
  flip with probability 1/2, drawn independently per image; crop and flip
  of the whole batch are one gather of pixels;
- then, train and eval, ToTensor + Normalize with the family's mean and std.

The output is float32 (B, C, H, W) in channels_last memory format, which
convolutions run faster on and which the NHWC pixels give without a copy.
Offsets and flips come from torch's global CPU generator, so
`lfme.engine.seed_everything` and the checkpointed `rng_state` make batches
reproducible and resumable as with the PIL transforms (whose draws they do not
replicate: the same seed gives other crops than the PIL path).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torch.utils.data

from lfme.devices import DeviceCopies, to_device
from lfme.data.transforms import CIFAR_MEAN, CIFAR_STD, DIGITS_MEAN, DIGITS_STD, KEEPS_DECODED, crop_padding, flips_in


class BatchTransform:
    """uint8 pixels (B, H, W) or (B, H, W, C), H = W = image_size -> normalised float32 (B, C, H, W), channels_last."""

    def __init__(self, family: str, train: bool, image_size: int):
        if family not in KEEPS_DECODED:
            raise ValueError(f"no batched transform for family {family!r}; families that have one: {list(KEEPS_DECODED)}")
        self.train = train
        self.image_size = image_size
        self.padding = crop_padding(family, image_size)
        self.flips = flips_in(family)
        mean, std = (DIGITS_MEAN, DIGITS_STD) if family == "digits" else (CIFAR_MEAN, CIFAR_STD)
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self._copies = DeviceCopies()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.train:
            return self.normalize(self._nhwc(batch))
        return self.apply(batch, *self.draw(len(batch)))

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image (tops, lefts, flips) from torch's global CPU generator: int64, int64, bool."""
        tops = torch.randint(0, 2 * self.padding + 1, (batch_size,))
        lefts = torch.randint(0, 2 * self.padding + 1, (batch_size,))
        flips = torch.rand(batch_size) < 0.5 if self.flips else torch.zeros(batch_size, dtype=torch.bool)
        return tops, lefts, flips

    def apply(self, batch: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop image i of the zero-padded batch at (tops[i], lefts[i]), each in 0..2p, mirror it where flips[i], normalise."""
        pixels = self._nhwc(batch)
        b, h, w, c = pixels.shape
        p, device = self.padding, pixels.device
        padded = F.pad(pixels, (0, 0, p, p, p, p))
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        # Crop, then flip: output column j of a flipped image is crop column w - 1 - j.
        cols = torch.where(to_device(flips, device)[:, None], cols.flip(0), cols)
        rows = to_device(tops, device)[:, None] + rows
        cols = to_device(lefts, device)[:, None] + cols
        # A flat (image, row, column) index into the padded batch: one index_select
        # of C-byte pixels, three times faster on CPU than indexing with three grids.
        images = torch.arange(b, device=device)[:, None, None]
        index = (images * (h + 2 * p) + rows[:, :, None]) * (w + 2 * p) + cols[:, None, :]
        cropped = padded.reshape(-1, c).index_select(0, index.view(-1)).view(b, h, w, c)
        return self.normalize(cropped)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) -> ToTensor + Normalize, same operations, as (B, C, H, W) channels_last."""
        mean, std = (self._copies.get(name, t, pixels.device) for name, t in (("mean", self.mean), ("std", self.std)))
        return pixels.float().div_(255).sub_(mean).div_(std).permute(0, 3, 1, 2)

    def _nhwc(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8 or batch.dim() not in (3, 4):
            raise ValueError(f"expected uint8 pixels (B, H, W) or (B, H, W, C), got {batch.dtype} {tuple(batch.shape)}")
        pixels = batch[..., None] if batch.dim() == 3 else batch
        if pixels.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {tuple(pixels.shape[1:3])}")
        return pixels


class DeviceBatches:
    """`loader`'s (uint8 pixels, labels, sample_ids) batches with the pixels moved to `device` and transformed there.

    Each iteration iterates `loader` anew, so its sampler's `set_epoch` still
    takes effect; labels and sample ids stay where the loader made them.
    `views` (`lfme.data.views.StoredViews`): the loader's items carry the
    index of the stored view each draw replays (`lfme.data.views.DrawPixels`);
    each image gets that view's crop and flip instead of new draws, and the
    batches are (images, labels, sample_ids, views).
    """

    def __init__(self, loader: torch.utils.data.DataLoader, transform: BatchTransform, device: torch.device | str, views=None):
        self.loader = loader
        self.transform = transform
        self.device = torch.device(device)
        self.views = views

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for pixels, labels, sample_ids, *views in self.loader:
            pixels = pixels.to(self.device, non_blocking=True)
            if self.views is None:
                yield self.transform(pixels), labels, sample_ids
                continue
            view = torch.from_numpy(self.views.of(sample_ids.numpy(), views[0].numpy()))
            yield self.transform.apply(pixels, view[:, 0].long(), view[:, 1].long(), view[:, 4] > 0), labels, sample_ids, views[0]
