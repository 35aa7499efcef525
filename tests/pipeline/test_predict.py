"""What `lfme predict` reads from each kind of INPUT (pipeline.predict.collect): images, names and labels."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.predict import UNKNOWN, collect

CLASSES = ["ant", "bee", "cat"]


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def labels(source) -> list[int]:
    return source.images.labels.tolist()


def test_a_folder_named_by_class_is_labelled_and_any_other_is_not(tmp_path):
    write(tmp_path / "tree" / "bee" / "1.png", png(1))
    write(tmp_path / "tree" / "ant" / "2.jpg.png", png(2))
    write(tmp_path / "tree" / "ant" / "notes.txt", b"not an image")
    (tree,) = collect([str(tmp_path / "tree")], CLASSES, "RGB")
    assert [n.rsplit("/", 2)[-2:] for n in tree.names] == [["ant", "2.jpg.png"], ["bee", "1.png"]] and labels(tree) == [0, 1]
    write(tmp_path / "loose" / "dog" / "3.png", png(3))  # not a class of the student: no labels
    (loose,) = collect([str(tmp_path / "loose")], CLASSES, "RGB")
    assert labels(loose) == [UNKNOWN]
    (single,) = collect([str(tmp_path / "tree" / "bee" / "1.png")], CLASSES, "RGB")
    assert labels(single) == [UNKNOWN] and np.asarray(single.images.load(0)).max() == 1


def test_parquet_list_and_inat_inputs(tmp_path):
    table = pa.table({"image": [{"bytes": png(5), "path": None}, {"bytes": png(6), "path": None}], "label": [2, 0]})
    pq.write_table(table, tmp_path / "test.parquet")
    write(tmp_path / "img" / "a.png", png(7))
    (tmp_path / "list.txt").write_text("img/a.png 1\n")
    annotations = {
        "images": [{"id": 10, "file_name": "img/a.png"}, {"id": 11, "file_name": "img/a.png"}],
        "annotations": [{"id": 1, "image_id": 10, "category_id": 3}, {"id": 2, "image_id": 11, "category_id": 4}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "emu"}],
    }
    (tmp_path / "val.json").write_text(json.dumps(annotations))
    parquet, listed, inat = collect([str(tmp_path / "test.parquet"), str(tmp_path / "list.txt"), str(tmp_path / "val.json")], CLASSES, "L")
    assert parquet.names == [f"{tmp_path / 'test.parquet'} row 0", f"{tmp_path / 'test.parquet'} row 1"] and labels(parquet) == [2, 0]
    assert parquet.images.load(1).mode == "L" and np.asarray(parquet.images.load(1)).max() == 6
    assert listed.names == [str(tmp_path / "img" / "a.png")] and labels(listed) == [1]
    assert labels(inat) == [2, UNKNOWN]  # cat is the student's class 2; emu is not one of its classes


def test_an_input_that_is_not_there_or_not_readable_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png: no such file or folder"):
        collect([str(tmp_path / "nothing.png")], CLASSES, "RGB")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model.bin: not an image, a folder, a Parquet file, a .txt list or an iNaturalist .json"):
        collect([str(tmp_path / "model.bin")], CLASSES, "RGB")
