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
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from lfme.choices import IMAGE_EXTENSIONS

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
        valid = f"0..{num_classes - 1}{counted_by}" if labels[j] >= 0 else "class indices start at 0"
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


def _check_found_images(folder: Path, classes: list[str], labels: np.ndarray, every_class: bool) -> None:
    """Raise ValueError naming an image-less class folder (`every_class`: the train split) or split folder.

    Every training class needs images: an empty one would otherwise surface only
    after the long-tailed construction, blamed on its settings. A val/test class
    may lack images (its accuracy is reported as null), but a split with none at
    all is a wrong folder.
    """
    accepted = f"image files end in {', '.join(IMAGE_EXTENSIONS)}"
    empty = np.flatnonzero(np.bincount(labels, minlength=len(classes)) == 0)
    if every_class and len(empty):
        others = f" (and {len(empty) - 1} other)" if len(empty) > 1 else ""
        raise ValueError(
            f"class folder {folder / classes[empty[0]]}{others} has no images; "
            f"every training class needs at least one ({accepted})"
        )
    if not len(labels):
        raise ValueError(f"image folder {folder} has no images in its {len(classes)} class folders ({accepted})")


def imagefolder(root, train: str = "train", val: str | None = None, test: str = "test") -> SourceSplits:
    """A torchvision-ImageFolder tree `root/<split>/<class>/<file>`.

    Classes are the sorted subfolders of the train folder; val and test must have
    exactly the same class folders, because a label is only an index into that list.
    Every train class folder must hold images; a val/test one may be empty.
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
        _check_found_images(folder, classes, labels, every_class=class_names is None)
        images = ImageList(_ids(len(paths), offset), labels, FileStore(str(folder), paths), "RGB")
        return images, classes

    train_list, class_names = split(train, 0, None)
    val_list = split(val, VAL_ID_OFFSET, class_names)[0] if val is not None else None
    test_list = split(test, TEST_ID_OFFSET, class_names)[0]
    return SourceSplits(train_list, val_list, test_list, class_names, channels=3)


# --------------------------------------------------------------------------- OLTR lists


def read_oltr_list(path) -> tuple[list[str], np.ndarray, list[int]]:
    """(relative paths, labels, line numbers) of a `relative/path label` list file with at least one entry."""
    path = _existing(path, "split list")
    paths, labels, lines = [], [], []
    for number, line in _numbered_lines(path):
        line = line.strip()
        if not line:
            continue
        # rsplit keeps a path containing spaces intact: the label is the last field.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path} line {number}: expected 'relative/path label', got {line!r}")
        # Plain ASCII digits only: int() would also take '+1', '1_0' or other scripts' digits.
        if not re.fullmatch(r"-?[0-9]+", parts[1]):
            raise ValueError(f"{path} line {number}: label {parts[1]!r} is not an integer, in {line!r}")
        paths.append(parts[0])
        labels.append(int(parts[1]))
        lines.append(number)
    if not paths:
        raise ValueError(f"split list {path} has no entries")
    return paths, np.asarray(labels, dtype=np.int64), lines


def oltr_lists(image_root, train_list, val_list, test_list) -> SourceSplits:
    """ImageNet-LT / Places-LT style split lists (OLTR): one `relative/path label` per line.

    The lists already are long-tailed (train) and balanced (val, test), so the
    long-tailed construction is not applied to them. Classes are 0..max train label;
    names are the label numbers since the lists carry none. `val_list` may be None.
    """
    root = str(_existing(image_root, "image root"))

    train_paths, train_labels, train_lines = read_oltr_list(train_list)
    _check_labels(train_labels, None, lambda j: f"{train_list} line {train_lines[j]}")
    num_classes = int(train_labels.max()) + 1
    counted_by = f", up to the largest label in {train_list}"

    def split(list_path, offset):
        paths, labels, lines = read_oltr_list(list_path)
        _check_labels(labels, num_classes, lambda j: f"{list_path} line {lines[j]}", counted_by)
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


def _check_parquet_schema(file: str, schema: pa.Schema) -> None:
    """Raise ValueError naming the file and column that is missing or not the `datasets` image struct.

    Checked on the schema, before reading, because pyarrow reports a missing column
    as a FieldRef error followed by a dump of the schema.
    """
    missing = [name for name in ("image", "label") if name not in schema.names]
    if missing:
        have = ", ".join(schema.names) or "no columns"
        raise ValueError(f"{file} has no column {' or '.join(map(repr, missing))} (it has: {have})")
    image_type = schema.field("image").type
    if not pa.types.is_struct(image_type) or image_type.get_field_index("bytes") < 0:
        raise ValueError(
            f"{file}: column 'image' has type {image_type}, expected struct<bytes, path> "
            "(the Hugging Face datasets Image feature)"
        )


def _read_parquet_file(file: str) -> pa.Table:
    """The `image` and `label` columns of one file; a file Parquet cannot read is named in a ValueError."""
    try:
        with pq.ParquetFile(file) as reader:
            _check_parquet_schema(file, reader.schema_arrow)
            return reader.read(columns=["image", "label"])
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{file} is not a readable Parquet file: {err}") from err


def _parquet_labels(file: str, column: pa.ChunkedArray) -> np.ndarray:
    """The `label` column as int64; a float, string or null label is no class index and raises ValueError."""
    if not pa.types.is_integer(column.type):
        first = f" (row 0: {column[0].as_py()!r})" if len(column) else ""
        raise ValueError(f"{file}: column 'label' has type {column.type}{first}, expected integer class indices")
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy())[0])
        raise ValueError(f"{file} row {row}: label is missing (null)")
    return column.to_numpy().astype(np.int64)


def _read_parquet_split(pattern) -> tuple[pa.Array, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(encoded image bytes, labels, files, file index, row within file) of one split with at least one row."""
    files = _parquet_files(pattern)
    blobs, labels, file_index, rows = [], [], [], []
    for k, file in enumerate(files):
        table = _read_parquet_file(file)
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
        labels.append(_parquet_labels(file, table.column("label")))
        file_index.append(np.full(len(table), k, dtype=np.int32))
        rows.append(np.arange(len(table), dtype=np.int64))
    if not sum(len(part) for part in labels):
        raise ValueError(f"Parquet split {pattern} has no rows")
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
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] != str(len(names)):
            raise ValueError(f"{path} line {number}: expected '{len(names)}<TAB>wnid<TAB>name', got {line!r}")
        names.append(parts[2])
    if not names:
        raise ValueError(f"classes file {path} has no entries")
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
        counted_by = f", the classes of {classes_file}"
    else:
        class_names = _metadata_class_names(train_files[0])
        counted_by = f", the classes in the schema metadata of {train_files[0]}"
    if class_names is None:
        class_names = [str(c) for c in range(int(train_data[1].max()) + 1)]
        counted_by = f", up to the largest label in {train}"
    num_classes = len(class_names)

    def image_list(data, offset):
        blobs, labels, files, file_index, rows = data
        _check_labels(labels, num_classes, lambda j: f"{files[file_index[j]]} row {int(rows[j])}", counted_by)
        return ImageList(_ids(len(labels), offset), labels, BytesStore(blobs, files, file_index, rows), "RGB")

    train_list = image_list(train_data, 0)
    val_list = image_list(_read_parquet_split(val), VAL_ID_OFFSET) if val is not None else None
    test_list = image_list(_read_parquet_split(test), TEST_ID_OFFSET)
    return SourceSplits(train_list, val_list, test_list, class_names, channels=3)


# --------------------------------------------------------------------------- iNaturalist JSON

INAT_SECTIONS = ("images", "annotations", "categories")

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _json_type(value) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _read_json(path, what: str) -> tuple[Path, object]:
    """(path, parsed content) of a UTF-8 JSON file; bad bytes or syntax raise ValueError naming file and position."""
    path = _existing(path, what)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} byte {err.start}: not UTF-8 text ({err.reason})") from err
    del raw
    try:
        return path, json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} line {err.lineno} column {err.colno} (char {err.pos}): not valid JSON: {err.msg}"
        ) from err


def _json_field(path: Path, entries: list, section: str, key: str, kind: type):
    """Field `key` of every entry of `section`: an int64 array (`kind` int) or a list of str.

    One list comprehension, then one type pass: no per-entry object is kept. A
    missing field or a value of another type raises ValueError naming the file,
    the entry (`images[3]`) and the value.
    """
    try:
        values = [entry[key] for entry in entries]
    except (KeyError, TypeError):
        for j, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"{path} {section}[{j}]: is a JSON {_json_type(entry)}, expected an object") from None
            if key not in entry:
                have = ", ".join(map(str, entry)) or "no keys"
                raise ValueError(f"{path} {section}[{j}] has no {key!r} (it has: {have})") from None
        raise
    if not all(type(v) is kind for v in values):  # type(): a JSON true is no id, 1.0 no integer id
        j = next(j for j, v in enumerate(values) if type(v) is not kind)
        expected = "an integer" if kind is int else "a string"
        raise ValueError(
            f"{path} {section}[{j}]: {key!r} is {values[j]!r} (a JSON {_json_type(values[j])}), expected {expected}"
        )
    if kind is not int:
        return values
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        j = next(j for j, v in enumerate(values) if not -(2**63) <= v < 2**63)
        raise ValueError(f"{path} {section}[{j}]: {key!r} is {values[j]}, beyond 64-bit integers") from None


def _unique_ids(path: Path, ids: np.ndarray, section: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(order, ids[order]): the ids sorted ascending; a repeated id raises ValueError naming both entries."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(repeated):
        k = int(repeated[0])
        first, second = int(order[k]), int(order[k + 1])
        raise ValueError(
            f"{path}: {what} id {int(sorted_ids[k])} appears twice ({section}[{first}] and {section}[{second}])"
        )
    return order, sorted_ids


def _lookup(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in sorted_ids, found mask) of `wanted`; positions of the unfound are meaningless."""
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == wanted


def _id_range(sorted_ids: np.ndarray) -> str:
    return f"ids {int(sorted_ids[0])}..{int(sorted_ids[-1])}"


@dataclass
class _InatFile:
    """One iNaturalist JSON file, reduced to arrays: images in file order, categories by ascending id."""

    path: Path
    file_names: list[str]
    image_categories: np.ndarray  # the category id of each image
    category_ids: np.ndarray  # ascending
    category_names: list[str | None]  # same order; None where a category has no "name"


def _read_inat_file(path, train: _InatFile | None = None) -> _InatFile:
    """Parse and check one file; with `train`, every annotated category must also be one of train's.

    Checks: the three sections exist and are lists, images and categories are not
    empty, ids are integers and unique, every annotation names one of the file's
    images and categories, every image has exactly one annotation.
    """
    path, data = _read_json(path, "iNaturalist annotation file")
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: the top level is a JSON {_json_type(data)}, expected an object with "
            f"{', '.join(map(repr, INAT_SECTIONS))} (the iNaturalist/COCO layout)"
        )
    missing = [key for key in INAT_SECTIONS if key not in data]
    if missing:
        have = ", ".join(map(str, data)) or "no keys"
        raise ValueError(
            f"{path} has no key {' or '.join(map(repr, missing))} (it has: {have}); "
            f"the iNaturalist/COCO layout has {', '.join(map(repr, INAT_SECTIONS))}"
        )
    for key in INAT_SECTIONS:
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: {key!r} is a JSON {_json_type(data[key])}, expected an array")
    images, annotations, categories = (data[key] for key in INAT_SECTIONS)
    if not images:
        raise ValueError(f"{path} has no images")
    if not categories:
        raise ValueError(f"{path} has no categories")

    image_ids = _json_field(path, images, "images", "id", int)
    file_names = _json_field(path, images, "images", "file_name", str)
    image_order, sorted_image_ids = _unique_ids(path, image_ids, "images", "image")
    category_ids = _json_field(path, categories, "categories", "id", int)
    category_order, sorted_category_ids = _unique_ids(path, category_ids, "categories", "category")
    names = [categories[j].get("name") for j in category_order]
    category_names = [None if name is None else str(name) for name in names]

    def annotation(j: int, in_file: bool = True) -> str:
        entry = annotations[j]
        name = f"annotation id {entry['id']} (annotations[{j}])" if "id" in entry else f"annotations[{j}]"
        return f"{path} {name}" if in_file else name

    def image(k: int) -> str:
        return f"{path} image id {int(image_ids[k])} ({file_names[k]}, images[{k}])"

    if annotations:
        annotated = _json_field(path, annotations, "annotations", "image_id", int)
        annotated_categories = _json_field(path, annotations, "annotations", "category_id", int)
    else:
        annotated = annotated_categories = np.zeros(0, dtype=np.int64)
    pos, found = _lookup(sorted_image_ids, annotated)
    if not found.all():
        j = int(np.flatnonzero(~found)[0])
        raise ValueError(f"{annotation(j)}: image id {int(annotated[j])} is not among the file's {len(images)} images")
    _, found = _lookup(sorted_category_ids, annotated_categories)
    if not found.all():
        j = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"{annotation(j)}: category id out of range: {int(annotated_categories[j])} is not among the file's "
            f"{len(categories)} categories ({_id_range(sorted_category_ids)})"
        )
    if train is not None:
        _, found = _lookup(train.category_ids, annotated_categories)
        if not found.all():
            j = int(np.flatnonzero(~found)[0])
            raise ValueError(
                f"{annotation(j)}: category id {int(annotated_categories[j])} is not among the training categories "
                f"of {train.path} ({len(train.category_ids)} categories, {_id_range(train.category_ids)})"
            )
        _check_same_category_names(path, sorted_category_ids, category_names, train)

    image_positions = image_order[pos]
    per_image = np.bincount(image_positions, minlength=len(images))
    if (per_image != 1).any():
        k = int(np.flatnonzero(per_image != 1)[0])
        if per_image[k] == 0:
            raise ValueError(f"{image(k)} has no annotation; every image needs exactly one (its category)")
        mine = np.flatnonzero(image_positions == k)
        which = ", ".join(annotation(int(j), in_file=False) for j in mine)
        raise ValueError(
            f"{image(k)} has {int(per_image[k])} annotations ({which}); every image needs exactly one (its category)"
        )
    image_categories = np.empty(len(images), dtype=np.int64)
    image_categories[image_positions] = annotated_categories
    return _InatFile(path, file_names, image_categories, sorted_category_ids, category_names)


def read_inat_file(path) -> tuple[list[str], list[str]]:
    """(file names, each image's category name; the id as text where a category has none) of one iNaturalist JSON file."""
    parsed = _read_inat_file(path)
    names = [name if name is not None else str(int(c)) for c, name in zip(parsed.category_ids, parsed.category_names)]
    by_id = dict(zip(parsed.category_ids.tolist(), names))
    return parsed.file_names, [by_id[int(c)] for c in parsed.image_categories]


def _check_same_category_names(path: Path, category_ids: np.ndarray, names: list, train: _InatFile) -> None:
    """A category id both files list under two different names: the files are from different releases."""
    pos, found = _lookup(train.category_ids, category_ids)
    for k in np.flatnonzero(found):
        mine, theirs = names[k], train.category_names[pos[k]]
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"{path}: category id {int(category_ids[k])} is named {mine!r}, but {theirs!r} in {train.path}; "
                "are the files from the same iNaturalist release?"
            )


def inat(image_root, train, test, val=None) -> SourceSplits:
    """iNaturalist (2017/2018/2019) JSON annotation files: COCO-like `images`, `annotations`, `categories`.

    `train`, `test` and optionally `val` are the JSON files (e.g. the official
    train2018.json, and val2018.json as the test set as in the long-tail
    literature; test2018.json carries no annotations and cannot be used). Each
    image's `file_name` is relative to `image_root` (the official ones look like
    train_val2018/Plantae/7477/3b60c9486db1d2ee875f11a669fbde4a.jpg). Images are
    not opened here (the split stage's check_images decodes them).

    Classes are the train file's categories in ascending category id, labels
    0..C-1 their ranks, names their `name` (the id as text where a category has
    none). iNat 2018's ids happen to be 0..8141, so there a label equals the
    category id; nothing relies on it. Each list keeps the file's image order;
    every image needs exactly one annotation; val/test images may use only the
    training categories, and every training category needs an image.

    Memory: the JSON is parsed once and reduced to int64 arrays plus the list of
    file names (437,513 images for iNat 2018); no per-image object is kept.
    """
    root = str(_existing(image_root, "image root"))
    train_file = _read_inat_file(train)
    num_classes = len(train_file.category_ids)
    labels = np.searchsorted(train_file.category_ids, train_file.image_categories)
    empty = np.flatnonzero(np.bincount(labels, minlength=num_classes) == 0)
    if len(empty):
        k = int(empty[0])
        others = f" (and {len(empty) - 1} other)" if len(empty) > 1 else ""
        name = train_file.category_names[k]
        raise ValueError(
            f"{train_file.path}: category id {int(train_file.category_ids[k])}"
            f"{f' ({name})' if name is not None else ''}{others} has no image; every training class needs at least one"
        )
    class_names = [
        name if name is not None else str(int(c)) for c, name in zip(train_file.category_ids, train_file.category_names)
    ]

    def image_list(parsed: _InatFile, offset: int) -> ImageList:
        labels = np.searchsorted(train_file.category_ids, parsed.image_categories).astype(np.int64)
        return ImageList(_ids(len(labels), offset), labels, FileStore(root, parsed.file_names), "RGB")

    train_list = image_list(train_file, 0)
    val_list = image_list(_read_inat_file(val, train_file), VAL_ID_OFFSET) if val is not None else None
    test_list = image_list(_read_inat_file(test, train_file), TEST_ID_OFFSET)
    return SourceSplits(train_list, val_list, test_list, class_names, channels=3)


# --------------------------------------------------------------------------- torchvision CIFAR


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


# ------------------------------------------------------------------------ synthetic


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


def check_profile(num_images: int, num_classes: int, max_count: int, min_count: int = 2) -> None:
    """ValueError unless `long_tailed_profile` can make these sizes: a head of `max_count`, no class under `min_count`."""
    least, most = max_count + min_count * (num_classes - 1), max_count * num_classes
    if not least <= num_images <= most:
        raise ValueError(
            f"{num_images} images cannot make {num_classes} classes of {min_count}..{max_count} images each "
            f"with a head class of {max_count} (between {least} and {most} can)"
        )


def long_tailed_profile(num_images: int, num_classes: int, max_count: int, min_count: int = 2) -> np.ndarray:
    """Class sizes falling from `max_count` to `min_count` and summing to `num_images`.

    n_c = floor(min + (max - min) * (1 - c / (C - 1))^q), with q found by
    bisection so the sizes add up to about `num_images`; the rounding rest
    goes to the head classes. Both ends and the total are those of the data
    set imitated: iNaturalist 2018 (437,513 images, 8,142 classes, 1000..2)
    gives q ~ 18, a head of a few large classes and a long tail.
    """
    check_profile(num_images, num_classes, max_count, min_count)
    x = np.arange(num_classes, dtype=np.float64) / max(num_classes - 1, 1)

    def counts(q: float) -> np.ndarray:
        return np.floor(min_count + (max_count - min_count) * (1 - x) ** q).astype(np.int64)

    # counts(q) falls as q grows; at q = 1e9 every tail class is at min_count for any C up to ~10^7
    # ((1 - 1/(C-1))^q (max - min) < 1 needs q > ~C ln(max)), the least total check_profile admits.
    low, high = 0.0, 1e9
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if counts(mid).sum() > num_images else (low, mid)
    out = counts(high)
    rest = num_images - int(out.sum())
    for c in range(num_classes):  # rest >= 0: check_profile leaves a q whose sizes sum to at most num_images
        if rest == 0:
            break
        add = min(rest, max_count - int(out[c]))
        out[c] += add
        rest -= add
    return out


def synthetic(num_images: int, num_classes: int, max_count: int, test_per_class: int, image_size: int, seed: int = 0) -> SourceSplits:
    """A generated long-tailed data set of `num_images` training images (`long_tailed_profile`) and a balanced test set.

    For measuring the pipeline at sizes no file here has (benchmarks/scale.py:
    ImageNet-LT, iNaturalist 2018); the images carry little more than their
    class's colour.
    """
    train_labels = np.repeat(np.arange(num_classes, dtype=np.int64), long_tailed_profile(num_images, num_classes, max_count))
    test_labels = np.repeat(np.arange(num_classes, dtype=np.int64), test_per_class)
    train_ids, test_ids = _ids(len(train_labels), 0), _ids(len(test_labels), TEST_ID_OFFSET)
    train = ImageList(train_ids, train_labels, SyntheticStore(train_ids, train_labels, image_size, seed), "RGB")
    test = ImageList(test_ids, test_labels, SyntheticStore(test_ids, test_labels, image_size, seed), "RGB")
    return SourceSplits(train, None, test, [f"class{c}" for c in range(num_classes)], channels=3)
