"""The iNaturalist 2017/2018 JSON annotation files: images, annotations and categories, checked field by field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lfme.data.sources.base import (
    VAL_ID_OFFSET,
    TEST_ID_OFFSET,
    FileStore,
    ImageList,
    SourceSplits,
    _ids,
    _existing,
)


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


def _inat_sections(path: Path, data) -> tuple[list, list, list]:
    """The file's images, annotations and categories arrays, each there and a list; images and categories not empty."""
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
    return images, annotations, categories


def _check_one_annotation_per_image(image_positions: np.ndarray, num_images: int, image, annotation) -> None:
    """Every image has exactly one annotation (its category); `image(k)` and `annotation(j)` name them in errors."""
    per_image = np.bincount(image_positions, minlength=num_images)
    if (per_image != 1).any():
        k = int(np.flatnonzero(per_image != 1)[0])
        if per_image[k] == 0:
            raise ValueError(f"{image(k)} has no annotation; every image needs exactly one (its category)")
        mine = np.flatnonzero(image_positions == k)
        which = ", ".join(annotation(int(j), in_file=False) for j in mine)
        raise ValueError(
            f"{image(k)} has {int(per_image[k])} annotations ({which}); every image needs exactly one (its category)"
        )


def _read_inat_file(path, train: _InatFile | None = None) -> _InatFile:
    """Parse and check one file; with `train`, every annotated category must also be one of train's.

    Checks: the three sections exist and are lists, images and categories are not
    empty, ids are integers and unique, every annotation names one of the file's
    images and categories, every image has exactly one annotation.
    """
    path, data = _read_json(path, "iNaturalist annotation file")
    images, annotations, categories = _inat_sections(path, data)

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
    _check_one_annotation_per_image(image_positions, len(images), image, annotation)
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
