"""The data every stage shares: the source named by the config, cut by the split stage.

The split stage decides once which images form the long-tailed training set and
the validation set and saves their sample ids; every later stage (and every Ray
worker in it) rebuilds the same lists from the source and those ids, so all of
them agree on what "the training set" is without shipping images around.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.utils.data

from lfme import data as lfme_data
from lfme.data import BatchTransform, DeviceBatches, ImageDataset, ImageList, PixelDataset, SourceSplits, build_transform
from lfme.subsets import Subset
from pipeline.config import DataConfig
from lfme import storage

SPLIT_JSON = "split.json"
SAMPLES_PARQUET = "samples.parquet"


def _resolve(root: Optional[str], path: Optional[str]) -> Optional[str]:
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
    if cfg.source in ("cifar10", "cifar100"):
        return lfme_data.torchvision_cifar(cfg.source, cfg.root or "data", download=cfg.download)
    raise ValueError(f"data.source: unknown source '{cfg.source}'")


@dataclass
class SplitData:
    """The long-tailed training set, the validation and test sets, and the subsets."""

    train: ImageList
    val: ImageList
    test: ImageList
    class_names: list[str]
    class_counts: np.ndarray  # training images per class
    subsets: list[Subset]
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def save_samples(location: str, train: ImageList, val: ImageList) -> None:
    table = pa.table(
        {
            "sample_id": np.concatenate([train.sample_ids, val.sample_ids]).astype(np.int64),
            "label": np.concatenate([train.labels, val.labels]).astype(np.int64),
            "part": ["train"] * len(train) + ["val"] * len(val),
        }
    )
    with storage.atomic_file(location) as f:
        pq.write_table(table, f)


def _select(pool: ImageList, sample_ids: np.ndarray, what: str) -> ImageList:
    order = np.argsort(pool.sample_ids, kind="stable")
    sorted_ids = pool.sample_ids[order]
    pos = np.searchsorted(sorted_ids, sample_ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    missing = sample_ids[sorted_ids[pos] != sample_ids] if len(sorted_ids) else sample_ids
    if len(missing):
        raise ValueError(
            f"split/{SAMPLES_PARQUET} names {what} sample {int(missing[0])} that the data source no longer has: "
            "the data changed since the split stage; rerun it"
        )
    return pool.subset(order[pos])


def load_split(run_dir: str, cfg: DataConfig) -> SplitData:
    meta_path, samples_path = (storage.join(run_dir, "split", name) for name in (SPLIT_JSON, SAMPLES_PARQUET))
    for path in (meta_path, samples_path):
        if not storage.exists(path):
            raise FileNotFoundError(f"{path} is missing: run the split stage first (lfme run --stage split)")
    meta = storage.read_json(meta_path)
    samples = pq.read_table(pa.BufferReader(storage.read_bytes(samples_path))).to_pydict()
    ids = np.asarray(samples["sample_id"], dtype=np.int64)
    parts = np.asarray(samples["part"])
    source = load_source(cfg)
    # Validation images come from the source's own list when it has one, else
    # from the training images the long-tailed construction left unused.
    val_pool = source.train if source.val is None else source.val
    return SplitData(
        train=_select(source.train, ids[parts == "train"], "training"),
        val=_select(val_pool, ids[parts == "val"], "validation"),
        test=source.test,
        class_names=meta["class_names"],
        class_counts=np.asarray(meta["class_counts"], dtype=np.int64),
        subsets=[Subset(s["name"], tuple(s["classes"])) for s in meta["subsets"]],
        channels=source.channels,
    )


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
    sampler: Optional[torch.utils.data.Sampler] = None,
    every_epoch: bool = False,
    device: torch.device | str = "cpu",
) -> torch.utils.data.DataLoader | DeviceBatches:
    """Batches `(images, labels, sample_ids)`: training batches augmented, everything else the test transform.

    `every_epoch`: the loader is read once per epoch (training and validation
    loaders). With `data.decode_once` its images are then decoded here, once,
    rather than on each pass, and the loader collates their uint8 pixels;
    the transform then runs on whole batches on `device` (`BatchTransform`),
    yielding images there as float32 channels_last. A loader read once (cache,
    evaluation), or without `decode_once`, decodes and transforms each image
    in PIL as it goes and yields CPU tensors.
    """
    decode_once = every_epoch and cfg.decode_once
    if decode_once:
        dataset = PixelDataset(images.decoded(lfme_data.fixed_size_step(cfg.transform, cfg.image_size)))
    else:
        dataset = ImageDataset(images, build_transform(cfg.transform, train=train, image_size=cfg.image_size))
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
    return DeviceBatches(loader, BatchTransform(cfg.transform, train=train, image_size=cfg.image_size), device)
