"""Data: sources -> long-tailed construction -> transforms -> datasets (no Ray)."""

from lfme.data.batch_transforms import BatchTransform, DeviceBatches
from lfme.data.datasets import ImageDataset, PixelDataset
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
    inat,
    oltr_lists,
    parquet,
    synthetic,
    torchvision_cifar,
)
from lfme.data.transforms import FAMILIES, KEEPS_DECODED, build_transform, fixed_size_step

__all__ = [
    "FAMILIES",
    "KEEPS_DECODED",
    "TEST_ID_OFFSET",
    "VAL_ID_OFFSET",
    "BatchTransform",
    "CorruptImageError",
    "DeviceBatches",
    "ImageDataset",
    "ImageList",
    "PixelDataset",
    "SourceSplits",
    "build_transform",
    "check_images",
    "class_counts",
    "digits",
    "fixed_size_step",
    "imagefolder",
    "inat",
    "ldam_counts",
    "make_long_tailed",
    "oltr_lists",
    "parquet",
    "synthetic",
    "torchvision_cifar",
]
