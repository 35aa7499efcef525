"""Parquet files of encoded images and integer labels (the Hugging Face layout), with optional class names."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lfme.data.sources.base import (
    VAL_ID_OFFSET,
    TEST_ID_OFFSET,
    BytesStore,
    ImageList,
    SourceSplits,
    _ids,
    _existing,
    _check_labels,
    _numbered_lines,
)


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
    names: list[str] = []
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
    class_names: list[str] | None
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
