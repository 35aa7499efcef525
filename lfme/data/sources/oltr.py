"""The OLTR split lists of ImageNet-LT and Places-LT: `<relative path> <label>` per line under an image root."""

from __future__ import annotations

import re

import numpy as np

from lfme.data.sources.base import (
    VAL_ID_OFFSET,
    TEST_ID_OFFSET,
    FileStore,
    ImageList,
    SourceSplits,
    _ids,
    _existing,
    _check_labels,
    _numbered_lines,
)


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
