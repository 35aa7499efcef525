"""The data a config names: its source, an expert's view of it, and the loaders every stage uses.

Which images form the long-tailed training and validation sets is decided once
by the split stage and read back through `rundir.layout.load_split`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch.utils.data

from lfme import data as lfme_data
from lfme.data import BatchTransform, DeviceBatches, ImageDataset, ImageList, PixelDataset, SourceSplits, build_transform
from lfme.data.views import DrawPixels, DrawTagged, ReplayedImages, StoredViews, ViewsOfImages
from rundir.sections import DataConfig


def _resolve(root: str | None, path: str | None) -> str | None:
    if path is None:
        return None
    return path if Path(path).is_absolute() or root is None else str(Path(root) / path)


def load_source(cfg: DataConfig) -> SourceSplits:
    """The source the config names, with relative file names taken relative to `root`."""
    if cfg.source == "digits":
        return lfme_data.digits(test_per_class=cfg.test_per_class)
    if cfg.source == "imagefolder":
        return lfme_data.imagefolder(cfg.root, train=cfg.train or "train", val=cfg.val, test=cfg.test or "test")
    if cfg.source == "oltr":
        return lfme_data.oltr_lists(
            cfg.root, _resolve(cfg.root, cfg.train), _resolve(cfg.root, cfg.val), _resolve(cfg.root, cfg.test)
        )
    if cfg.source == "parquet":
        return lfme_data.parquet(
            _resolve(cfg.root, cfg.train),
            _resolve(cfg.root, cfg.test),
            val=_resolve(cfg.root, cfg.val),
            classes_file=_resolve(cfg.root, cfg.classes_file),
        )
    if cfg.source == "inat":
        return lfme_data.inat(
            cfg.root, _resolve(cfg.root, cfg.train), _resolve(cfg.root, cfg.test), val=_resolve(cfg.root, cfg.val)
        )
    if cfg.source == "synthetic":
        g = cfg.synthetic
        return lfme_data.synthetic(g.images, g.classes, g.max_count, g.test_per_class, cfg.image_size, g.seed)
    if cfg.source in ("cifar10", "cifar100"):
        return lfme_data.torchvision_cifar(cfg.source, cfg.root or "data", download=cfg.download)
    raise ValueError(f"data.source: unknown source '{cfg.source}'")


def restrict_to_subset(images: ImageList, classes: tuple[int, ...]) -> ImageList:
    """The images of `classes`, labels re-indexed 0..len(classes)-1 (an expert's label space)."""
    classes_arr = np.asarray(classes, dtype=np.int64)
    keep = np.flatnonzero(np.isin(images.labels, classes_arr))
    subset = images.subset(keep)
    local = np.searchsorted(classes_arr, subset.labels)
    return dataclasses.replace(subset, labels=local.astype(np.int64))


def make_loader(
    images: ImageList,
    cfg: DataConfig,
    train: bool,
    batch_size: int,
    sampler: torch.utils.data.Sampler | None = None,
    device: torch.device | str = "cpu",
    views: StoredViews | None = None,
) -> torch.utils.data.DataLoader | DeviceBatches:
    """Batches `(images, labels, sample_ids)`: training batches augmented, everything else the test transform.

    `views`: training batches replay these stored views (`lfme.data.views`)
    instead of drawing new crops, the view of each draw chosen from the epoch
    of `sampler` (required then); the batches then carry each image's view
    index too: `(images, labels, sample_ids, views)`.

    `data.decode_once`: the images are decoded here, once, and the loader
    collates their uint8 pixels; the transform then runs on whole batches on
    `device` (`BatchTransform`), yielding images there as float32
    channels_last. A loader read every epoch (training, validation) saves a
    decode per epoch; one read once (cache, evaluation) decodes as much either
    way, and takes the batched path for its test transform (no torchvision in its
    worker: its import costs about 2 CPU-seconds). Without `decode_once`, each
    image is decoded and transformed in PIL as it goes, yielding CPU tensors.
    """
    decode_once = cfg.decode_once
    pixels = PixelDataset(images.decoded(lfme_data.fixed_size_step(cfg.transform, cfg.image_size))) if decode_once else None
    dataset: torch.utils.data.Dataset
    if pixels is not None:
        dataset = pixels
    else:
        dataset = ImageDataset(images, build_transform(cfg.transform, train=train, image_size=cfg.image_size))
    if views is not None:
        if not train or sampler is None:
            raise ValueError("stored views replace the training augmentation: a training loader with a sampler is needed")
        sampler = DrawTagged(sampler)  # the view a draw replays depends on its epoch and repeat, also in loader workers
        dataset = DrawPixels(pixels, views) if pixels is not None else ReplayedImages(images, cfg.transform, cfg.image_size, views)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=cfg.loader_workers,
        persistent_workers=cfg.loader_workers > 0,
        # From pinned memory the copy to the GPU is asynchronous (DeviceBatches copies non_blocking).
        pin_memory=decode_once and torch.device(device).type == "cuda",
        drop_last=False,
    )
    if not decode_once:
        return loader
    return DeviceBatches(loader, BatchTransform(cfg.transform, train=train, image_size=cfg.image_size), device, views)


def views_loader(
    images: ImageList, cfg: DataConfig, batch_size: int, seed: int, views: int, blocks: np.ndarray | None = None
) -> torch.utils.data.DataLoader:
    """The cache stage's batches over training images with `views` augmented views each (`lfme.data.views.ViewsOfImages`);
    `blocks` (n, 2): item i is block blocks[i, 1] of `views` views of image blocks[i, 0] (`cache.allot: draws`)."""
    return torch.utils.data.DataLoader(
        ViewsOfImages(images, cfg.transform, cfg.image_size, seed, views, blocks),
        batch_size=batch_size,
        shuffle=False,
        num_workers=cfg.loader_workers,
    )
