"""A torch Dataset over an ImageList, yielding `(image_tensor, label, sample_id)`.

The sample id travels with every image so that teacher outputs cached once can be
joined back to the image they belong to, whatever the sampler's order.
"""

from __future__ import annotations

from typing import Callable

import torch.utils.data

from lfme.data.sources import ImageList


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
