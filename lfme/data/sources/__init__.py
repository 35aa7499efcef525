"""Image sources: read a data set from where users keep it into `SourceSplits`, one module per format.

`base` holds what every source shares (the `ImageList` and its stores, the
sample-id offsets, the checks of labels and images); each other module reads
one on-disk format: `imagefolder`, `oltr` (ImageNet-LT / Places-LT lists),
`parquet`, `inat` (iNaturalist JSON), `cifar` (torchvision's batches),
`digits` (scikit-learn) and `synthetic`.
"""

from lfme.data.sources.base import (
    TEST_ID_OFFSET,
    VAL_ID_OFFSET,
    ArrayStore,
    BytesStore,
    CorruptImageError,
    FileStore,
    ImageList,
    SourceSplits,
    SyntheticStore,
    check_images,
    decoder_reason,
)
from lfme.data.sources.cifar import torchvision_cifar
from lfme.data.sources.digits import digits
from lfme.data.sources.imagefolder import imagefolder
from lfme.data.sources.inat import INAT_SECTIONS, inat, read_inat_file
from lfme.data.sources.oltr import oltr_lists, read_oltr_list
from lfme.data.sources.parquet import parquet
from lfme.data.sources.synthetic import check_profile, long_tailed_profile, synthetic

__all__ = [
    "INAT_SECTIONS",
    "TEST_ID_OFFSET",
    "VAL_ID_OFFSET",
    "ArrayStore",
    "BytesStore",
    "CorruptImageError",
    "FileStore",
    "ImageList",
    "SourceSplits",
    "SyntheticStore",
    "check_images",
    "check_profile",
    "decoder_reason",
    "digits",
    "imagefolder",
    "inat",
    "long_tailed_profile",
    "oltr_lists",
    "parquet",
    "read_inat_file",
    "read_oltr_list",
    "synthetic",
    "torchvision_cifar",
]
