"""torchvision's CIFAR-10/100 pickled batches (`cifar-10-batches-py`, `cifar-100-python`), downloaded where online."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lfme.data.sources.base import (
    TEST_ID_OFFSET,
    ArrayStore,
    ImageList,
    SourceSplits,
    _ids,
    _check_labels,
)


def _unpickle(path: Path, *keys: str) -> list:
    """The entries `keys` of one CIFAR python pickle (a dict), or one ValueError naming the file.

    Unpickling a damaged or foreign file fails in many ways (UnpicklingError,
    EOFError, a stray KeyError from inside the data), so every failure of
    pickle.load is reported as this file's.
    """
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")
        except Exception as err:
            raise ValueError(f"{path} is not a CIFAR python pickle ({type(err).__name__}: {err})") from err
    missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
    if missing:
        have = sorted(entry) if isinstance(entry, dict) else f"a {type(entry).__name__}, not a dict"
        raise ValueError(f"{path} has no {' or '.join(map(repr, missing))} entry (it holds {have})")
    return [entry[key] for key in keys]


def _read_cifar_batch(path: Path, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(N x 32 x 32 x 3 uint8 images, labels) of one CIFAR python pickle batch."""
    data, labels = _unpickle(path, "data", labels_key)
    data = np.asarray(data, dtype=np.uint8)
    if data.shape != (len(labels), 3 * 32 * 32):
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected ({len(labels)}, 3072) for its labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def torchvision_cifar(name: str, root, download: bool = False) -> SourceSplits:
    """CIFAR-10/100 in torchvision's python-pickle layout under `root`, held in memory.

    torchvision fetches the archive (download=True). The batches are then read here
    using torchvision's own file lists, without its MD5 check: that check would
    reject any copy but the pristine archive, and the files are only pickled arrays.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    datasets = {"cifar10": (CIFAR10, "labels"), "cifar100": (CIFAR100, "fine_labels")}
    if name not in datasets:
        raise ValueError(f"unknown torchvision CIFAR data set {name!r}; expected one of {sorted(datasets)}")
    dataset, labels_key = datasets[name]
    root = Path(root).expanduser()
    if download:
        dataset(str(root), train=True, download=True)
    folder = root / dataset.base_folder
    needed = [folder / f for f, _ in dataset.train_list + dataset.test_list] + [folder / dataset.meta["filename"]]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{name} not found under {root} (missing {', '.join(missing)}); "
            "set download: true when online, or point root at a folder holding "
            f"{dataset.base_folder}/"
        )

    def split(files, offset):
        batches = [_read_cifar_batch(folder / f, labels_key) for f, _ in files]
        for (file, _), (_, labels) in zip(files, batches):
            _check_labels(labels, len(class_names), lambda j, file=file: f"{folder / file} image {j}", counted_by)
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return ImageList(_ids(len(labels), offset), labels, ArrayStore(images, str(folder)), "RGB")

    meta = folder / dataset.meta["filename"]
    class_names = list(_unpickle(meta, dataset.meta["key"])[0])
    counted_by = f", the classes of {meta}"
    train = split(dataset.train_list, 0)
    test = split(dataset.test_list, TEST_ID_OFFSET)
    return SourceSplits(train, None, test, class_names, channels=3)
