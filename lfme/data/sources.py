"""Image sources: read a data set from where users keep it into `SourceSplits`.

Every source turns its on-disk format into the same small structure: ordered
`ImageList`s for train / (own) val / test, the class names and the channel count.
An `ImageList` holds only what is needed to decode an image later (relative file
paths, encoded bytes or uint8 arrays), never an open file handle, because the
pipeline pickles it to ship it to Ray workers.

Sample ids follow docs/ARCHITECTURE.md: the train list gets its positions, the
source's own validation list `VAL_ID_OFFSET + position`, the test list
`TEST_ID_OFFSET + position`. They are the join key with the teacher cache, so they
depend only on the source's ordered lists, never on the long-tailed construction.
"""

from __future__ import annotations

import glob
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

VAL_ID_OFFSET = 1_000_000_000
TEST_ID_OFFSET = 2_000_000_000

# The extensions torchvision's ImageFolder accepts, so the same folder yields the same list.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class CorruptImageError(ValueError):
    """An image whose bytes cannot be decoded; the message names the file (or file and row)."""


# --------------------------------------------------------------------------- storage


@dataclass
class FileStore:
    """Images as files: `root` joined with each relative path (ImageFolder, OLTR lists)."""

    root: str
    paths: list[str]

    def read(self, i: int) -> bytes:
        # Reading the bytes outside the decoder keeps a missing file a FileNotFoundError
        # (naming the path) instead of letting it look like a corrupt image.
        with open(self.where(i), "rb") as f:
            return f.read()

    def where(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i])

    def take(self, indices: np.ndarray) -> FileStore:
        return FileStore(self.root, [self.paths[j] for j in indices])


@dataclass
class BytesStore:
    """Encoded images held in memory (Parquet), with the file and row each came from.

    `blobs` is a pyarrow BinaryArray: compact to pickle, and `take` copies only the
    selected images. `file_index`/`rows` exist only to name a corrupt image's origin.
    """

    blobs: pa.Array
    files: list[str]
    file_index: np.ndarray
    rows: np.ndarray

    def read(self, i: int) -> bytes:
        return self.blobs[i].as_py()

    def where(self, i: int) -> str:
        return f"{self.files[self.file_index[i]]} row {int(self.rows[i])}"

    def take(self, indices: np.ndarray) -> BytesStore:
        return BytesStore(
            self.blobs.take(pa.array(indices, type=pa.int64())),
            self.files,
            self.file_index[indices],
            self.rows[indices],
        )


@dataclass
class ArrayStore:
    """Decoded uint8 images in memory, N x H x W (grayscale) or N x H x W x 3 (torchvision CIFAR, digits)."""

    images: np.ndarray
    origin: str

    def read(self, i: int) -> np.ndarray:
        return self.images[i]

    def where(self, i: int) -> str:
        return f"{self.origin} image {i}"

    def take(self, indices: np.ndarray) -> ArrayStore:
        return ArrayStore(self.images[indices], self.origin)


@dataclass
class ImageList:
    """An ordered list of images with their labels and stable sample ids.

    `mode` is the PIL mode every image is converted to on load ("RGB" for 3-channel
    sources, so the odd grayscale JPEG in a colour data set still comes out RGB; "L"
    for digits).
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    store: FileStore | BytesStore | ArrayStore
    mode: str

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> Image.Image:
        """Decode image `i`; an undecodable one raises CorruptImageError naming its origin."""
        raw = self.store.read(i)
        if isinstance(raw, np.ndarray):
            return Image.fromarray(raw).convert(self.mode)
        try:
            with Image.open(io.BytesIO(raw)) as img:
                return img.convert(self.mode)
        except (OSError, SyntaxError, ValueError) as err:
            # PIL reports unreadable or truncated data as OSError (UnidentifiedImageError
            # included), and some decoders as SyntaxError or ValueError.
            raise CorruptImageError(f"cannot decode image {self.store.where(i)}: {err}") from err

    def where(self, i: int) -> str:
        """Where image `i` comes from (a path, or a Parquet file and row), for messages."""
        return self.store.where(i)

    def subset(self, indices) -> ImageList:
        """The images at `indices` (in that order), keeping their sample ids."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageList(self.sample_ids[indices], self.labels[indices], self.store.take(indices), self.mode)

    def decoded(self, step: Callable[[Image.Image], Image.Image] | None = None) -> ImageList:
        """The same list with every image decoded now, after `step` (e.g. a resize), kept as uint8 pixels.

        For loaders that read the same images every epoch: loading from the
        result costs no decoding. Memory: N x H x W x channels bytes, so the
        images must all come out of `step` at one size.
        """
        if isinstance(self.store, ArrayStore) and step is None:
            return self
        pixels = []
        for i in range(len(self)):
            image = self.load(i)
            pixels.append(np.asarray(image if step is None else step(image)))
        shapes = {p.shape for p in pixels}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot keep {len(self)} images decoded: they come in {len(shapes)} sizes "
                f"(e.g. {sorted(shapes)[:2]}), and only images of one size are kept (resize them first)"
            )
        images = np.stack(pixels) if pixels else np.zeros((0, 1, 1), dtype=np.uint8)
        return ImageList(self.sample_ids, self.labels, ArrayStore(images, "decoded images"), self.mode)


@dataclass
class SourceSplits:
    """What every source returns. `val` is the source's own validation list, if it has one."""

    train: ImageList
    val: ImageList | None
    test: ImageList
    class_names: list[str]
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_images(image_list: ImageList) -> None:
    """Decode every image so corrupt files are reported before any training starts.

    All undecodable images are collected and reported together (one CorruptImageError
    naming each), so a user fixes a damaged copy in one pass. A missing file is not
    collected: it raises FileNotFoundError at once, since the whole list is then suspect.
    """
    bad = []
    for i in range(len(image_list)):
        try:
            image_list.load(i)
        except CorruptImageError as err:
            bad.append(str(err))
    if bad:
        shown = "\n  ".join(bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise CorruptImageError(f"{len(bad)} of {len(image_list)} images cannot be decoded:\n  {shown}{more}")


# --------------------------------------------------------------------------- helpers


def _ids(n: int, offset: int) -> np.ndarray:
    return offset + np.arange(n, dtype=np.int64)


def _existing(path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _check_labels(labels: np.ndarray, num_classes: int | None, describe) -> None:
    """Raise ValueError naming the origin and value of the first label outside 0..C-1.

    `describe(j)` names entry j ("file line N", "file row N"); `num_classes` None
    checks only for negatives (the train list, which defines C).
    """
    too_big = labels >= num_classes if num_classes is not None else np.zeros(len(labels), dtype=bool)
    bad = np.flatnonzero((labels < 0) | too_big)
    if len(bad):
        j = int(bad[0])
        valid = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
        raise ValueError(f"{describe(j)}: label {int(labels[j])} is out of range ({valid})")


# --------------------------------------------------------------------------- ImageFolder


def _scan_imagefolder(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, paths relative to folder, labels), class-major, files sorted by name."""
    folder = _existing(folder, "image folder")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise ValueError(f"image folder {folder} has no class subfolders")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            entry.name
            for entry in os.scandir(folder / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(f"{name}/{f}" for f in files)
        labels.extend([label] * len(files))
    return classes, paths, np.asarray(labels, dtype=np.int64)


def imagefolder(root, train: str = "train", val: str | None = None, test: str = "test") -> SourceSplits:
    """A torchvision-ImageFolder tree `root/<split>/<class>/<file>`.

    Classes are the sorted subfolders of the train folder; val and test must have
    exactly the same class folders, because a label is only an index into that list.
    """
    root = _existing(root, "data root")

    def split(name: str, offset: int, class_names: list[str] | None):
        folder = root / name
        classes, paths, labels = _scan_imagefolder(folder)
        if class_names is not None and classes != class_names:
            missing = sorted(set(class_names) - set(classes))
            extra = sorted(set(classes) - set(class_names))
            raise ValueError(
                f"class folders of {folder} differ from the train folder's: "
                f"missing {missing}, unexpected {extra}"
            )
        images = ImageList(_ids(len(paths), offset), labels, FileStore(str(folder), paths), "RGB")
        return images, classes

    train_list, class_names = split(train, 0, None)
    val_list = split(val, VAL_ID_OFFSET, class_names)[0] if val is not None else None
    test_list = split(test, TEST_ID_OFFSET, class_names)[0]
    return SourceSplits(train_list, val_list, test_list, class_names, channels=3)


# --------------------------------------------------------------------------- OLTR lists


def _read_oltr_list(path) -> tuple[list[str], np.ndarray, list[int]]:
    """(relative paths, labels, line numbers) of a `relative/path label` list file."""
    path = _existing(path, "split list")
    paths, labels, lines = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            # rsplit keeps a path containing spaces intact: the label is the last field.
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path} line {number}: expected 'relative/path label', got {line!r}")
            paths.append(parts[0])
            labels.append(int(parts[1]))
            lines.append(number)
    return paths, np.asarray(labels, dtype=np.int64), lines


def oltr_lists(image_root, train_list, val_list, test_list) -> SourceSplits:
    """ImageNet-LT / Places-LT style split lists (OLTR): one `relative/path label` per line.

    The lists already are long-tailed (train) and balanced (val, test), so the
    long-tailed construction is not applied to them. Classes are 0..max train label;
    names are the label numbers since the lists carry none. `val_list` may be None.
    """
    root = str(_existing(image_root, "image root"))

    train_paths, train_labels, train_lines = _read_oltr_list(train_list)
    if not train_paths:
        raise ValueError(f"split list {train_list} has no entries")
    _check_labels(train_labels, None, lambda j: f"{train_list} line {train_lines[j]}")
    num_classes = int(train_labels.max()) + 1

    def split(list_path, offset):
        paths, labels, lines = _read_oltr_list(list_path)
        _check_labels(labels, num_classes, lambda j: f"{list_path} line {lines[j]}")
        return ImageList(_ids(len(paths), offset), labels, FileStore(root, paths), "RGB")

    train = ImageList(_ids(len(train_paths), 0), train_labels, FileStore(root, train_paths), "RGB")
    val = split(val_list, VAL_ID_OFFSET) if val_list is not None else None
    test = split(test_list, TEST_ID_OFFSET)
    return SourceSplits(train, val, test, [str(c) for c in range(num_classes)], channels=3)


# --------------------------------------------------------------------------- Parquet


def _parquet_files(pattern) -> list[str]:
    """A single file, or the sorted shards a glob pattern matches."""
    pattern = str(Path(pattern).expanduser())
    if any(c in pattern for c in "*?["):
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"no Parquet file matches {pattern}")
        return files
    return [str(_existing(pattern, "Parquet file"))]


def _read_parquet_split(pattern) -> tuple[pa.Array, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(encoded image bytes, labels, files, file index, row within file) of one split."""
    files = _parquet_files(pattern)
    blobs, labels, file_index, rows = [], [], [], []
    for k, file in enumerate(files):
        table = pq.read_table(file, columns=["image", "label"])
        image = table.column("image").combine_chunks()
        # flatten() folds a null `image` struct into its fields, so both kinds of gap show as null bytes.
        images = image.flatten()[image.type.get_field_index("bytes")]
        missing = np.flatnonzero(images.is_null().to_numpy(zero_copy_only=False))
        if len(missing):
            raise ValueError(
                f"{file} row {int(missing[0])}: image has no embedded bytes "
                "(images stored by path only are not supported; embed them in the Parquet file)"
            )
        blobs.append(images)
        labels.append(table.column("label").to_numpy().astype(np.int64))
        file_index.append(np.full(len(table), k, dtype=np.int32))
        rows.append(np.arange(len(table), dtype=np.int64))
    return (
        pa.concat_arrays(blobs),
        np.concatenate(labels),
        files,
        np.concatenate(file_index),
        np.concatenate(rows),
    )


def _read_classes_file(path) -> list[str]:
    """Class names from `label<TAB>wnid<TAB>name` lines, labels 0..C-1 in order."""
    path = _existing(path, "classes file")
    names = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3 or parts[0] != str(len(names)):
                raise ValueError(
                    f"{path} line {number}: expected '{len(names)}<TAB>wnid<TAB>name', got {line!r}"
                )
            names.append(parts[2])
    return names


def _metadata_class_names(file: str) -> list[str] | None:
    """Class names stored in the schema metadata: `class_names` if present, else `classes` (wnids)."""
    metadata = pq.read_schema(file).metadata or {}
    for key in (b"class_names", b"classes"):
        if key in metadata:
            return metadata[key].decode("utf-8").splitlines()
    return None


def parquet(train, test, val=None, classes_file=None) -> SourceSplits:
    """Hugging Face `datasets` image layout: `image` = struct<bytes, path>, `label` = int64.

    Each of train/val/test is a file path or a glob of shards (sorted, concatenated).
    The encoded JPEG bytes are kept in memory: the data sets this is meant for are a
    few hundred MB at most, and bytes pickle to Ray workers without any shared disk.
    """
    train_data = _read_parquet_split(train)
    train_files = train_data[2]
    if classes_file is not None:
        class_names = _read_classes_file(classes_file)
    else:
        class_names = _metadata_class_names(train_files[0])
    if class_names is None:
        class_names = [str(c) for c in range(int(train_data[1].max()) + 1)]
    num_classes = len(class_names)

    def image_list(data, offset):
        blobs, labels, files, file_index, rows = data
        _check_labels(labels, num_classes, lambda j: f"{files[file_index[j]]} row {int(rows[j])}")
        return ImageList(_ids(len(labels), offset), labels, BytesStore(blobs, files, file_index, rows), "RGB")

    train_list = image_list(train_data, 0)
    val_list = image_list(_read_parquet_split(val), VAL_ID_OFFSET) if val is not None else None
    test_list = image_list(_read_parquet_split(test), TEST_ID_OFFSET)
    return SourceSplits(train_list, val_list, test_list, class_names, channels=3)


# --------------------------------------------------------------------------- torchvision CIFAR


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N x 32 x 32 x 3 uint8 images, labels) of one CIFAR python pickle batch."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def torchvision_cifar(name: str, root, download: bool = False) -> SourceSplits:
    """CIFAR-10/100 in torchvision's python-pickle layout under `root`, held in memory.

    torchvision fetches the archive (download=True). The batches are then read here
    using torchvision's own file lists, without its MD5 check: that check would
    reject any copy but the pristine archive, and the files are only pickled arrays.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    datasets = {"cifar10": CIFAR10, "cifar100": CIFAR100}
    if name not in datasets:
        raise ValueError(f"unknown torchvision CIFAR data set {name!r}; expected one of {sorted(datasets)}")
    dataset = datasets[name]
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
        batches = [_read_cifar_batch(folder / f) for f, _ in files]
        for (file, _), (_, labels) in zip(files, batches):
            _check_labels(labels, len(class_names), lambda j: f"{folder / file} image {j}")
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return ImageList(_ids(len(labels), offset), labels, ArrayStore(images, str(folder)), "RGB")

    with open(folder / dataset.meta["filename"], "rb") as f:
        class_names = list(pickle.load(f, encoding="latin1")[dataset.meta["key"]])
    train = split(dataset.train_list, 0)
    test = split(dataset.test_list, TEST_ID_OFFSET)
    return SourceSplits(train, None, test, class_names, channels=3)


# --------------------------------------------------------------------------- digits


def digits(test_per_class: int = 40) -> SourceSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download): the default tiny run.

    The balanced test split is the first `test_per_class` images of each class in
    dataset order, the rest is train; both keep dataset order. Pixel values 0..16
    are scaled to uint8 0..255 so the usual ToTensor/Normalize apply.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    counts = np.bincount(labels)
    if not 0 < test_per_class < counts.min():
        raise ValueError(f"test_per_class must be in 1..{counts.min() - 1}, got {test_per_class}")
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(len(counts)):
        is_test[np.flatnonzero(labels == c)[:test_per_class]] = True
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    origin = "sklearn.datasets.load_digits"
    train = ImageList(_ids(len(train_idx), 0), labels[train_idx], ArrayStore(images[train_idx], origin), "L")
    test = ImageList(
        _ids(len(test_idx), TEST_ID_OFFSET), labels[test_idx], ArrayStore(images[test_idx], origin), "L"
    )
    return SourceSplits(train, None, test, [str(c) for c in range(len(counts))], channels=1)
