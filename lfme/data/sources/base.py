"""Image sources: read a data set from where users keep it into `SourceSplits`; what every source shares.

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

import io
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError


VAL_ID_OFFSET = 1_000_000_000
TEST_ID_OFFSET = 2_000_000_000



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
class SyntheticStore:
    """Images generated from their sample id on read: no files, any size of data set.

    Image i is its class's colour (a fixed function of the label) plus noise
    seeded by its sample id, so the same id always gives the same pixels and
    the classes are learnable. Pickles as ids and labels only.
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    size: int
    seed: int

    def read(self, i: int) -> np.ndarray:
        colour = np.random.default_rng([self.seed, int(self.labels[i])]).integers(0, 256, 3)
        noise = np.random.default_rng([self.seed, 1 << 40, int(self.sample_ids[i])]).normal(0, 40, (self.size, self.size, 3))
        return np.clip(colour + noise, 0, 255).astype(np.uint8)

    def where(self, i: int) -> str:
        return f"synthetic image {int(self.sample_ids[i])}"

    def take(self, indices: np.ndarray) -> SyntheticStore:
        return SyntheticStore(self.sample_ids[indices], self.labels[indices], self.size, self.seed)


@dataclass
class ImageList:
    """An ordered list of images with their labels and stable sample ids.

    `mode` is the PIL mode every image is converted to on load ("RGB" for 3-channel
    sources, so the odd grayscale JPEG in a colour data set still comes out RGB; "L"
    for digits).
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    store: FileStore | BytesStore | ArrayStore | SyntheticStore
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
            raise CorruptImageError(f"cannot decode image {self.store.where(i)}: {decoder_reason(err)}") from err

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


def decoder_reason(err: BaseException) -> str:
    """Why PIL could not decode an image, without the in-memory buffer it names (`<_io.BytesIO object at 0x...>`)."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL recognises (an empty, truncated or damaged header)"
    return str(err) or type(err).__name__


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


def _check_labels(labels: np.ndarray, num_classes: int | None, describe, counted_by: str = "") -> None:
    """Raise ValueError naming the origin and value of the first label outside 0..C-1.

    `describe(j)` names entry j ("file line N", "file row N"); `num_classes` None
    checks only for negatives (the train list, which defines C). `counted_by` says
    where C comes from (a classes file, the largest train label), so the message
    tells whether the label or the class list is the one to fix.
    """
    too_big = labels >= num_classes if num_classes is not None else np.zeros(len(labels), dtype=bool)
    bad = np.flatnonzero((labels < 0) | too_big)
    if len(bad):
        j = int(bad[0])
        if labels[j] < 0:
            valid = "class indices start at 0"
        else:
            assert num_classes is not None, "a label is too large only against a known C"
            valid = f"0..{num_classes - 1}{counted_by}"
        raise ValueError(f"{describe(j)}: label {int(labels[j])} is out of range ({valid})")


def _numbered_lines(path: Path):
    """(line number, line without its line break) of a UTF-8 text file.

    Decoding line by line names the line that is not UTF-8 (a list saved in
    another encoding) instead of a bare UnicodeDecodeError with a byte offset.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} line {number}: not UTF-8 text ({err.reason}): {raw.rstrip()!r}") from err
