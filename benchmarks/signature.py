"""What signing a data set's files costs at iNaturalist 2018 size (rundir.inputs).

Before each `lfme run` skips the split, and in `lfme verify`, the files the
split read are signed again: the annotation JSON by content, every image by
size and modification time. This builds a tree of iNaturalist 2018's shape in
a temporary folder (437,513 training and 24,426 validation images as empty
files in 8,142 class folders, and the two JSON files with every image,
annotation and category), then times, in one process:

- `data_signature` on it: the whole cost the runner adds (cold: the first
  call after building the tree; warm: the same call again);
- reading the same JSON files the way the split's source reader does
  (`lfme.data.inat`), for scale: what every stage pays anyway.

    python -m benchmarks.signature [--out docs/results/signature.json] [--images 437513]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rundir.sections import DataConfig
from rundir.inputs import data_signature

INAT_TRAIN, INAT_VAL, INAT_CLASSES = 437_513, 24_426, 8_142


def write_inat_tree(root: Path, train: int, val: int, classes: int) -> DataConfig:
    """Empty image files in class folders and the two annotation files naming them."""
    for name, count, offset in (("train2018.json", train, 0), ("val2018.json", val, train)):
        images, annotations = [], []
        for i in range(count):
            label = i % classes
            file_name = f"train_val2018/Plantae/{label}/{offset + i:08d}.jpg"
            images.append({"id": offset + i, "file_name": file_name, "width": 800, "height": 600, "license": 1})
            annotations.append({"id": offset + i, "image_id": offset + i, "category_id": label})
        categories = [{"id": c, "name": f"species {c}", "supercategory": "Plantae"} for c in range(classes)]
        (root / name).write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        for image in images:
            path = root / image["file_name"]
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True)
            path.touch()
    return DataConfig(source="inat", root=str(root), train="train2018.json", test="val2018.json", transform="imagenet")


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=INAT_TRAIN, help="training images (validation and classes scale with it)")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()
    train = args.images
    val = max(1, round(train * INAT_VAL / INAT_TRAIN))
    classes = max(1, round(train * INAT_CLASSES / INAT_TRAIN))
    with tempfile.TemporaryDirectory(prefix="lfme-signature-") as folder:
        build_s, cfg = timed(write_inat_tree, Path(folder), train, val, classes)
        cold_s, signature = timed(data_signature, cfg)
        warm_s, _ = timed(data_signature, cfg)

        from lfme.data import inat  # torch comes with lfme.data; the signature itself needs none

        read_s, _ = timed(inat, folder, os.path.join(folder, "train2018.json"), os.path.join(folder, "val2018.json"))
        json_bytes = sum(os.path.getsize(os.path.join(folder, n)) for n in ("train2018.json", "val2018.json"))
    figures = {
        "images": train + val,
        "classes": classes,
        "json_bytes": json_bytes,
        "signature_entries": len(signature["entries"]),
        "signature_bytes": len(json.dumps(signature)),
        "build_tree_s": round(build_s, 2),
        "signature_cold_s": round(cold_s, 2),
        "signature_warm_s": round(warm_s, 2),
        "source_read_s": round(read_s, 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
