"""An ImageFolder tree (`root/<split>/<class>/<image>`), listed as torchvision's ImageFolder lists it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lfme.choices import IMAGE_EXTENSIONS
from lfme.data.sources.base import (
    VAL_ID_OFFSET,
    TEST_ID_OFFSET,
    FileStore,
    ImageList,
    SourceSplits,
    _ids,
    _existing,
)


def _scan_imagefolder(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, paths relative to folder, labels), class-major, files sorted by name."""
    folder = _existing(folder, "image folder")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise ValueError(f"image folder {folder} has no class subfolders")
    paths: list[str] = []
    labels: list[int] = []
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
