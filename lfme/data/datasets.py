"""Torch Datasets over an ImageList, yielding `(image, label, sample_id)`.

The sample id travels with every image so that teacher outputs cached once can be
joined back to the image they belong to, whatever the sampler's order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.data

from lfme.data.sources import ArrayStore, ImageList


class ImageDataset(torch.utils.data.Dataset):
    """Items `(transform(image), label: int, sample_id: int)`.

    Images come out of `ImageList.load` already in the source's mode (RGB for colour
    sources, so a stray grayscale JPEG is converted there).
    """

    def __init__(self, image_list: ImageList, transform: Callable):
        self.image_list = image_list
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_list)

    def __getitem__(self, i: int):
        image = self.transform(self.image_list.load(i))
        return image, int(self.image_list.labels[i]), int(self.image_list.sample_ids[i])


class PixelDataset(torch.utils.data.Dataset):
    """Items `(uint8 pixels: H x W or H x W x C tensor, label: int, sample_id: int)` of a decoded ImageList.

    For `lfme.data.batch_transforms.BatchTransform`, which transforms whole
    batches after collation, so no image goes through PIL.
    """

    def __init__(self, image_list: ImageList):
        store = image_list.store
        if not isinstance(store, ArrayStore):
            raise TypeError(f"PixelDataset needs decoded images (ImageList.decoded), got a {type(store).__name__}")
        self.image_list = image_list
        self.store = store

    def __len__(self) -> int:
        return len(self.image_list)

    def __getitem__(self, i: int):
        pixels = torch.from_numpy(self.store.images[i])
        return pixels, int(self.image_list.labels[i]), int(self.image_list.sample_ids[i])
