"""Data: sources -> long-tailed construction -> transforms -> datasets (no Ray)."""

from lfme.data.datasets import ImageDataset
from lfme.data.longtail import class_counts, ldam_counts, make_long_tailed
from lfme.data.sources import (
    TEST_ID_OFFSET,
    VAL_ID_OFFSET,
    CorruptImageError,
    ImageList,
    SourceSplits,
    check_images,
    digits,
    imagefolder,
    oltr_lists,
    parquet,
    torchvision_cifar,
)
from lfme.data.transforms import FAMILIES, build_transform

__all__ = [
    "FAMILIES",
    "TEST_ID_OFFSET",
    "VAL_ID_OFFSET",
    "CorruptImageError",
    "ImageDataset",
    "ImageList",
    "SourceSplits",
    "build_transform",
    "check_images",
    "class_counts",
    "digits",
    "imagefolder",
    "ldam_counts",
    "make_long_tailed",
    "oltr_lists",
    "parquet",
    "torchvision_cifar",
]
