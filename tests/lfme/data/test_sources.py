"""Sources: the real data at ../shared/data (when present) and tmp_path fixtures for every error."""

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lfme.data import (
    TEST_ID_OFFSET,
    VAL_ID_OFFSET,
    CorruptImageError,
    DeviceBatches,
    ImageDataset,
    build_transform,
    check_images,
    digits,
    imagefolder,
    inat,
    oltr_lists,
    parquet,
    torchvision_cifar,
)
from lfme.data.sources import ArrayStore
from lfme.data.sources.digits import bundled_digits
from tests.pipeline_helpers import REPO

DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared data folder {DATA} is not on this machine")


def jpeg_bytes(color, mode="RGB", size=(4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="JPEG")
    return buf.getvalue()


def make_imagefolder(root: Path, splits: dict[str, dict[str, list[str]]]) -> Path:
    """root/<split>/<class>/<file> with small solid JPEGs."""
    for split, classes in splits.items():
        for name, files in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for f in files:
                (root / split / name / f).write_bytes(jpeg_bytes((200, 30, 30)))
    return root


# --------------------------------------------------------------------------- real data


@needs_data
def test_real_cifar10_imagefolder():
    s = imagefolder(DATA / "cifar10")
    assert s.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (len(s.train), len(s.test), s.val, s.channels) == (50_000, 10_000, None, 3)
    np.testing.assert_array_equal(s.train.labels, np.repeat(np.arange(10), 5000))
    np.testing.assert_array_equal(s.test.labels, np.repeat(np.arange(10), 1000))
    np.testing.assert_array_equal(s.train.sample_ids, np.arange(50_000))
    np.testing.assert_array_equal(s.test.sample_ids, TEST_ID_OFFSET + np.arange(10_000))
    assert s.train.where(5001) == str(DATA / "cifar10" / "train" / "automobile" / "0001.jpg")
    image = s.train.load(0)
    assert (image.mode, image.size) == ("RGB", (32, 32))
    # Stable: a second scan gives the same order.
    again = imagefolder(DATA / "cifar10")
    assert again.train.store.paths == s.train.store.paths


@needs_data
def test_real_tiny_imagenet_parquet():
    root = DATA / "tiny-imagenet-100"
    s = parquet(root / "train.parquet", root / "val.parquet", classes_file=root / "classes.txt")
    assert (len(s.class_names), len(s.train), len(s.test), s.channels) == (100, 50_000, 5_000, 3)
    assert s.class_names[0] == "goldfish, Carassius auratus"
    np.testing.assert_array_equal(np.bincount(s.train.labels), np.full(100, 500))
    np.testing.assert_array_equal(s.train.sample_ids, np.arange(50_000))
    # The first grayscale JPEG (scanning headers only) must come out RGB, also through the Dataset.
    gray = next(i for i in range(len(s.train)) if Image.open(io.BytesIO(s.train.store.read(i))).mode == "L")
    image = s.train.load(gray)
    assert (image.mode, image.size) == ("RGB", (64, 64))
    tensor, label, sample_id = ImageDataset(s.train, build_transform("cifar", False, 64))[gray]
    assert tensor.shape == (3, 64, 64) and sample_id == gray and label == s.train.labels[gray]
    # Without a classes file the schema metadata names the classes.
    assert parquet(root / "val.parquet", root / "val.parquet").class_names[0] == "goldfish, Carassius auratus"


@needs_data
def test_real_places_lt_lists(tmp_path):
    lists = DATA / "splits" / "Places_LT"
    s = oltr_lists(tmp_path, lists / "Places_LT_train.txt", lists / "Places_LT_val.txt", lists / "Places_LT_test.txt")
    assert (len(s.train), len(s.val), len(s.test), len(s.class_names)) == (62_500, 7_300, 36_500, 365)
    assert s.train.where(0) == str(tmp_path / "data_256/a/airfield/00004851.jpg")
    np.testing.assert_array_equal(s.val.sample_ids, VAL_ID_OFFSET + np.arange(7_300))


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_order_ids_and_filter(tmp_path):
    root = make_imagefolder(
        tmp_path,
        {
            "train": {"b": ["2.jpg", "1.jpg"], "a": ["z.jpg", "y.png"]},
            "val": {"a": ["v.jpg"], "b": ["w.jpg"]},
            "test": {"a": ["t.jpg"], "b": ["u.jpg"]},
        },
    )
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    s = imagefolder(root, val="val")
    assert s.class_names == ["a", "b"]
    assert s.train.store.paths == ["a/y.png", "a/z.jpg", "b/1.jpg", "b/2.jpg"]
    np.testing.assert_array_equal(s.train.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(s.train.sample_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(s.val.sample_ids, VAL_ID_OFFSET + np.arange(2))
    np.testing.assert_array_equal(s.test.sample_ids, TEST_ID_OFFSET + np.arange(2))
    assert s.train.load(3).getpixel((0, 0))[0] > 150


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        imagefolder(tmp_path / "nowhere")


def test_imagefolder_missing_test_folder(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"]}})
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "test"))):
        imagefolder(tmp_path)


def test_imagefolder_class_mismatch(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"], "b": ["0.jpg"]}, "test": {"a": ["0.jpg"], "c": ["0.jpg"]}})
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'test'))}.*missing \['b'\], unexpected \['c'\]"):
        imagefolder(tmp_path)


def test_imagefolder_train_class_folder_without_images(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"], "b": []}, "test": {"a": ["0.jpg"], "b": ["0.jpg"]}})
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    message = f"class folder {tmp_path / 'train' / 'b'} has no images; every training class needs at least one"
    with pytest.raises(ValueError, match=re.escape(message) + r" \(image files end in \.jpg, \.jpeg, \.png"):
        imagefolder(tmp_path)
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "test" / "c").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"class folder {tmp_path / 'train' / 'b'} (and 1 other) has no images;")):
        imagefolder(tmp_path)


def test_imagefolder_test_class_may_be_empty_but_not_the_whole_split(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"], "b": ["0.jpg"]}, "test": {"a": ["0.jpg"], "b": []}})
    np.testing.assert_array_equal(imagefolder(tmp_path).test.labels, [0])  # class b scores null, no error
    (tmp_path / "test" / "a" / "0.jpg").unlink()
    with pytest.raises(ValueError, match=re.escape(f"image folder {tmp_path / 'test'} has no images in its 2 class folders")):
        imagefolder(tmp_path)


def test_grayscale_jpeg_in_colour_source_comes_out_rgb(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"]}, "test": {"a": ["0.jpg"]}})
    (tmp_path / "train" / "a" / "0.jpg").write_bytes(jpeg_bytes(128, mode="L"))
    s = imagefolder(tmp_path)
    assert s.train.load(0).mode == "RGB"
    tensor, _, _ = ImageDataset(s.train, build_transform("cifar", False, 4))[0]
    assert tensor.shape == (3, 4, 4)


# --------------------------------------------------------------------------- corrupt images


def test_corrupt_jpeg_reported_by_check_images_and_load(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg", "1.jpg", "2.jpg"]}, "test": {"a": ["0.jpg"]}})
    bad = tmp_path / "train" / "a" / "1.jpg"
    bad.write_bytes(np.random.RandomState(0).bytes(500))
    s = imagefolder(tmp_path)
    check_images(s.test)  # the clean split passes
    with pytest.raises(CorruptImageError, match=rf"(?s)1 of 3 images.*{re.escape(str(bad))}"):
        check_images(s.train)
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))):
        s.train.load(1)
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))):
        ImageDataset(s.train, build_transform("cifar", False, 4))[1]
    assert issubclass(CorruptImageError, ValueError)


def test_truncated_jpeg_is_corrupt(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"]}, "test": {"a": ["0.jpg"]}})
    path = tmp_path / "train" / "a" / "0.jpg"
    path.write_bytes(jpeg_bytes((1, 2, 3), size=(64, 64))[:200])
    with pytest.raises(CorruptImageError, match=re.escape(str(path))):
        imagefolder(tmp_path).train.load(0)


@pytest.mark.parametrize("keep, reason", [(40, "not an image format PIL recognises"), (600, "image file is truncated")])
def test_a_truncated_png_names_the_file_and_the_decoder_reason_only(tmp_path, keep, reason):
    make_imagefolder(tmp_path, {"train": {"a": ["0.png"]}, "test": {"a": ["0.png"]}})
    path = tmp_path / "train" / "a" / "0.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:keep])
    with pytest.raises(CorruptImageError) as info:
        check_images(imagefolder(tmp_path).train)
    message = str(info.value)
    assert f"cannot decode image {path}: {reason}" in message
    assert "BytesIO" not in message and " at 0x" not in message


def test_missing_image_file_is_file_not_found(tmp_path):
    make_imagefolder(tmp_path, {"train": {"a": ["0.jpg"]}, "test": {"a": ["0.jpg"]}})
    s = imagefolder(tmp_path)
    (tmp_path / "train" / "a" / "0.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="0.jpg"):
        check_images(s.train)


# --------------------------------------------------------------------------- OLTR lists


def write_lists(tmp_path, train="a.jpg 0\n\nb.jpg 1\nc d.jpg 1\n", val="e.jpg 0\n", test="f.jpg 1\n"):
    for name, text in (("train.txt", train), ("val.txt", val), ("test.txt", test)):
        (tmp_path / name).write_text(text)
    return [tmp_path / n for n in ("train.txt", "val.txt", "test.txt")]


def test_oltr_lists_parse(tmp_path):
    train, val, test = write_lists(tmp_path)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes((0, 0, 255)))
    s = oltr_lists(tmp_path, train, val, test)
    assert s.train.store.paths == ["a.jpg", "b.jpg", "c d.jpg"]
    np.testing.assert_array_equal(s.train.labels, [0, 1, 1])
    assert s.class_names == ["0", "1"]
    assert s.train.load(0).mode == "RGB"
    np.testing.assert_array_equal(s.test.sample_ids, [TEST_ID_OFFSET])
    assert oltr_lists(tmp_path, train, None, test).val is None


def test_oltr_malformed_line(tmp_path):
    train, val, test = write_lists(tmp_path, train="a.jpg 0\n\nb.jpg one\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(train))} line 3"):
        oltr_lists(tmp_path, train, val, test)
    train, val, test = write_lists(tmp_path, train="a.jpg 0\nlonely\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(train))} line 2"):
        oltr_lists(tmp_path, train, val, test)


def test_oltr_line_without_a_label_is_shown(tmp_path):
    train, val, test = write_lists(tmp_path, train="a.jpg 0\nlonely\n")
    with pytest.raises(ValueError, match=re.escape(f"{train} line 2: expected 'relative/path label', got 'lonely'")):
        oltr_lists(tmp_path, train, val, test)


@pytest.mark.parametrize("label", ["one", "1.0", "--1", "-", "+1", "1_0", "\u00b2"])
def test_oltr_label_not_an_integer(tmp_path, label):
    train, val, test = write_lists(tmp_path, val=f"e.jpg 0\n\nb c.jpg {label}\n")
    with pytest.raises(ValueError, match=re.escape(f"{val} line 3: label {label!r} is not an integer, in 'b c.jpg {label}'")):
        oltr_lists(tmp_path, train, val, test)


def test_oltr_label_out_of_range(tmp_path):
    train, val, test = write_lists(tmp_path, test="f.jpg 1\ng.jpg 7\n")
    message = f"{test} line 2: label 7 is out of range (0..1, up to the largest label in {train})"
    with pytest.raises(ValueError, match=re.escape(message)):
        oltr_lists(tmp_path, train, val, test)
    train, val, test = write_lists(tmp_path, train="a.jpg 0\nb.jpg -1\n")
    with pytest.raises(ValueError, match=re.escape(f"{train} line 2: label -1 is out of range (class indices start at 0)")):
        oltr_lists(tmp_path, train, val, test)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_oltr_empty_list(tmp_path, which):
    texts = ["a.jpg 0\n", "e.jpg 0\n", "f.jpg 0\n"]
    texts[which] = "\n  \n"
    lists = write_lists(tmp_path, *texts)
    with pytest.raises(ValueError, match=re.escape(f"split list {lists[which]} has no entries")):
        oltr_lists(tmp_path, *lists)


def test_oltr_list_not_utf8_names_the_line(tmp_path):
    train, val, test = write_lists(tmp_path)
    test.write_bytes(b"f.jpg 1\n" + "caf\u00e9.jpg 0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{test} line 2: not UTF-8 text (invalid continuation byte): b'caf\\xe9.jpg 0'")):
        oltr_lists(tmp_path, train, val, test)


def test_oltr_missing_list_and_root(tmp_path):
    train, val, test = write_lists(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent_val.txt"))):
        oltr_lists(tmp_path, train, tmp_path / "absent_val.txt", test)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "no_images"))):
        oltr_lists(tmp_path / "no_images", train, val, test)


# --------------------------------------------------------------------------- Parquet


def write_parquet(path: Path, blobs: list[bytes], labels: list[int], classes: str | None = None) -> Path:
    image = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(blobs)])
    table = pa.table({"image": image, "label": pa.array(labels, type=pa.int64())})
    if classes is not None:
        table = table.replace_schema_metadata({"classes": classes})
    pq.write_table(table, path)
    return path


def test_parquet_shards_metadata_and_classes_file(tmp_path):
    write_parquet(tmp_path / "train-0.parquet", [jpeg_bytes((255, 0, 0))] * 2, [0, 1], classes="n01\nn02\nn03")
    write_parquet(tmp_path / "train-1.parquet", [jpeg_bytes(60, mode="L")], [2], classes="n01\nn02\nn03")
    test = write_parquet(tmp_path / "test.parquet", [jpeg_bytes((0, 255, 0))], [2])
    s = parquet(tmp_path / "train-*.parquet", test)
    assert s.class_names == ["n01", "n02", "n03"]
    np.testing.assert_array_equal(s.train.labels, [0, 1, 2])
    assert s.train.where(2) == f"{tmp_path / 'train-1.parquet'} row 0"
    assert s.train.load(2).mode == "RGB"
    (tmp_path / "classes.txt").write_text("0\tn01\tone\n1\tn02\ttwo\n2\tn03\tthree\n")
    assert parquet(tmp_path / "train-*.parquet", test, classes_file=tmp_path / "classes.txt").class_names == [
        "one",
        "two",
        "three",
    ]
    plain = parquet(tmp_path / "test.parquet", test)  # no metadata, no classes file
    assert plain.class_names == ["0", "1", "2"]
    # Pickles cheaply and round-trips; a subset keeps its sample ids and origins.
    sub = pickle.loads(pickle.dumps(s.train.subset([2, 0])))
    np.testing.assert_array_equal(sub.sample_ids, [2, 0])
    assert sub.where(0) == f"{tmp_path / 'train-1.parquet'} row 0" and sub.load(1).getpixel((0, 0))[0] > 200


def test_parquet_label_out_of_range(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", [jpeg_bytes((1, 1, 1))] * 2, [0, 1])
    test = write_parquet(tmp_path / "test.parquet", [jpeg_bytes((1, 1, 1))] * 2, [1, 5])
    message = f"{test} row 1: label 5 is out of range (0..1, up to the largest label in {train})"
    with pytest.raises(ValueError, match=re.escape(message)):
        parquet(train, test)
    negative = write_parquet(tmp_path / "negative.parquet", [jpeg_bytes((1, 1, 1))] * 2, [0, -3])
    with pytest.raises(ValueError, match=re.escape(f"{negative} row 1: label -3 is out of range (class indices start at 0)")):
        parquet(negative, train)


def test_parquet_label_beyond_the_classes_file_or_metadata(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", [jpeg_bytes((1, 1, 1))] * 3, [0, 1, 2], classes="n01\nn02")
    classes = tmp_path / "classes.txt"
    classes.write_text("0\tn01\tone\n1\tn02\ttwo\n")
    message = f"{train} row 2: label 2 is out of range (0..1, the classes of {classes})"
    with pytest.raises(ValueError, match=re.escape(message)):
        parquet(train, train, classes_file=classes)
    message = f"{train} row 2: label 2 is out of range (0..1, the classes in the schema metadata of {train})"
    with pytest.raises(ValueError, match=re.escape(message)):
        parquet(train, train)
    classes.write_text("\n")
    with pytest.raises(ValueError, match=re.escape(f"classes file {classes} has no entries")):
        parquet(train, train, classes_file=classes)


def image_column(n: int) -> pa.Array:
    return pa.array([{"bytes": jpeg_bytes((1, 1, 1)), "path": f"{i}.jpg"} for i in range(n)])


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"image": image_column(2)}, " has no column 'label' (it has: image)"),
        ({"label": pa.array([0, 1])}, " has no column 'image' (it has: label)"),
        ({"pixels": pa.array([b"x", b"y"])}, " has no column 'image' or 'label' (it has: pixels)"),
        (
            {"image": pa.array([b"x", b"y"]), "label": pa.array([0, 1])},
            ": column 'image' has type binary, expected struct<bytes, path> (the Hugging Face datasets Image feature)",
        ),
        (
            {"image": image_column(2), "label": pa.array(["cat", "dog"])},
            ": column 'label' has type string (row 0: 'cat'), expected integer class indices",
        ),
        (
            {"image": image_column(2), "label": pa.array([0.0, 1.5])},
            ": column 'label' has type double (row 0: 0.0), expected integer class indices",
        ),
        ({"image": image_column(2), "label": pa.array([0, None], type=pa.int64())}, " row 1: label is missing (null)"),
    ],
)
def test_parquet_bad_columns_name_file_and_column(tmp_path, columns, message):
    good = write_parquet(tmp_path / "good.parquet", [jpeg_bytes((1, 1, 1))], [0])
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), bad)
    with pytest.raises(ValueError, match=re.escape(f"{bad}{message}")):
        parquet(good, bad)


def test_parquet_not_a_parquet_file_or_no_rows(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", [jpeg_bytes((1, 1, 1))], [0])
    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    with pytest.raises(ValueError, match=re.escape(f"{text} is not a readable Parquet file: ")):
        parquet(good, text)
    no_rows = pa.table({"image": pa.array([], type=image_column(1).type), "label": pa.array([], type=pa.int64())})
    for shard in ("empty-0.parquet", "empty-1.parquet"):
        pq.write_table(no_rows, tmp_path / shard)
    with pytest.raises(ValueError, match=re.escape(f"Parquet split {tmp_path / 'empty-*.parquet'} has no rows")):
        parquet(good, tmp_path / "empty-*.parquet")


def test_parquet_corrupt_bytes(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", [jpeg_bytes((1, 1, 1)), b"not a jpeg"], [0, 1])
    s = parquet(train, train)
    with pytest.raises(CorruptImageError, match=rf"{re.escape(str(train))} row 1"):
        s.train.load(1)
    with pytest.raises(CorruptImageError, match=rf"{re.escape(str(train))} row 1"):
        check_images(s.train)


def test_parquet_missing_files(tmp_path):
    train = write_parquet(tmp_path / "train.parquet", [jpeg_bytes((1, 1, 1))], [0])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "test.parquet"))):
        parquet(train, tmp_path / "test.parquet")
    with pytest.raises(FileNotFoundError, match="shard-"):
        parquet(tmp_path / "shard-*.parquet", train)
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        parquet(train, train, classes_file=tmp_path / "classes.txt")


# --------------------------------------------------------------------------- iNaturalist JSON

# Category ids deliberately out of order and with gaps: labels are the ranks by id
# (2 -> 0 Ant, 5 -> 1 Zebra, 9 -> 2 Bee), never the ids themselves.
INAT_CATEGORIES = [
    {"id": 5, "name": "Zebra", "supercategory": "Animalia", "kingdom": "Animalia"},
    {"id": 2, "name": "Ant", "supercategory": "Insecta", "kingdom": "Animalia"},
    {"id": 9, "name": "Bee", "supercategory": "Insecta", "kingdom": "Animalia"},
]
INAT_TRAIN = [(10, 5), (11, 2), (12, 9), (13, 5), (14, 5), (15, 2)]  # (image id, category id), file order
INAT_VAL = [(20, 2), (21, 9)]
INAT_TEST = [(30, 9), (31, 5), (32, 2)]


def inat_doc(images, categories=INAT_CATEGORIES) -> dict:
    """The official train2018.json layout; annotations listed in reverse image order, ids 1000 + image id."""
    entries = [
        {"id": i, "file_name": f"train_val2018/Animalia/{c}/{i:04x}.png", "width": 4, "height": 3, "license": 1}
        for i, c in images
    ]
    annotations = [{"id": 1000 + i, "image_id": i, "category_id": c} for i, c in reversed(images)]
    return {
        "info": {"year": 2018},
        "images": entries,
        "annotations": annotations,
        "categories": [dict(c) for c in categories],
        "licenses": [],
    }


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def write_inat(root: Path, val: bool = True) -> tuple[Path, Path | None, Path]:
    """train2018.json, val.json (optional) and val2018.json (the test set) under root, with tiny PNGs."""
    splits = [("train2018.json", INAT_TRAIN), ("val2018.json", INAT_TEST)] + ([("val.json", INAT_VAL)] if val else [])
    for name, images in splits:
        doc = write_json(root / name, inat_doc(images))
        for entry in json.loads(doc.read_text())["images"]:
            (root / entry["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 3), (entry["id"], 40, 80)).save(root / entry["file_name"])
    return root / "train2018.json", (root / "val.json" if val else None), root / "val2018.json"


def test_inat_ids_labels_names_and_images(tmp_path):
    train, val, test = write_inat(tmp_path)
    s = inat(tmp_path, train, test, val=val)
    assert s.class_names == ["Ant", "Zebra", "Bee"] and (s.num_classes, s.channels) == (3, 3)
    np.testing.assert_array_equal(s.train.labels, [1, 0, 2, 1, 1, 0])
    np.testing.assert_array_equal(s.train.sample_ids, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(s.val.labels, [0, 2])
    np.testing.assert_array_equal(s.val.sample_ids, [VAL_ID_OFFSET, VAL_ID_OFFSET + 1])
    np.testing.assert_array_equal(s.test.labels, [2, 1, 0])
    np.testing.assert_array_equal(s.test.sample_ids, TEST_ID_OFFSET + np.arange(3))
    assert s.train.store.paths[2] == "train_val2018/Animalia/9/000c.png"
    assert s.train.where(2) == str(tmp_path / "train_val2018/Animalia/9/000c.png")
    image = s.train.load(2)
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (4, 3), (12, 40, 80))
    check_images(s.test)
    assert s.train.labels.dtype == np.int64 and inat(tmp_path, train, test).val is None
    # A category without a name is named by its id.
    doc = inat_doc(INAT_TRAIN, [{"id": 5}, *INAT_CATEGORIES[1:]])
    assert inat(tmp_path, write_json(tmp_path / "unnamed.json", doc), test).class_names == ["Ant", "5", "Bee"]


def test_inat_through_the_preset_and_load_source(tmp_path):
    from rundir.config import load_config
    from rundir.data import load_source

    _, val, _ = write_inat(tmp_path)
    preset = REPO / "configs" / "inat2018.yaml"
    cfg = load_config(preset, [f"data.root={tmp_path}"]).data
    assert (cfg.source, cfg.transform, cfg.train, cfg.test) == ("inat", "imagenet", "train2018.json", "val2018.json")
    s = load_source(cfg)
    assert s.class_names == ["Ant", "Zebra", "Bee"] and s.val is None
    np.testing.assert_array_equal(s.train.labels, [1, 0, 2, 1, 1, 0])
    np.testing.assert_array_equal(s.test.sample_ids, TEST_ID_OFFSET + np.arange(3))
    assert s.test.where(0) == str(tmp_path / "train_val2018/Animalia/9/001e.png")
    # data.val: relative to data.root, or absolute.
    for given in ("val.json", str(val)):
        s = load_source(load_config(preset, [f"data.root={tmp_path}", f"data.val={given}"]).data)
        np.testing.assert_array_equal(s.val.sample_ids, [VAL_ID_OFFSET, VAL_ID_OFFSET + 1])
        np.testing.assert_array_equal(s.val.labels, [0, 2])


def test_inat_config_needs_root_and_json_files():
    from rundir.fields import ConfigError
    from rundir.sections import DataConfig

    with pytest.raises(ConfigError, match=re.escape("data.root: required for source 'inat'")):
        DataConfig(source="inat", train="t.json", test="v.json").check("data")
    with pytest.raises(ConfigError, match=re.escape("data.train and data.test: required JSON annotation files for source 'inat'")):
        DataConfig(source="inat", root="r", train="t.json").check("data")


def test_inat_missing_files(tmp_path):
    train, val, test = write_inat(tmp_path)
    missing = tmp_path / "absent2018.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"iNaturalist annotation file not found: {missing}")):
        inat(tmp_path, train, missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"iNaturalist annotation file not found: {missing}")):
        inat(tmp_path, train, test, val=missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"image root not found: {tmp_path / 'images'}")):
        inat(tmp_path / "images", train, test)


def test_inat_not_valid_json_names_file_and_position(tmp_path):
    train, val, test = write_inat(tmp_path)
    test.write_text('{"images": [\n  {"id": 1,}\n]}')
    message = f"{test} line 2 column 12 (char 24): not valid JSON: Expecting property name enclosed in double quotes"
    inat_refuses(tmp_path, train, test, message)
    test.write_bytes(b'{"images": ["caf\xe9"]}')
    inat_refuses(tmp_path, train, test, f"{test} byte 16: not UTF-8 text (invalid continuation byte)")
    write_json(test, [1, 2])
    message = f"{test}: the top level is a JSON array, expected an object with 'images', 'annotations', 'categories'"
    inat_refuses(tmp_path, train, test, message)


def inat_refuses(tmp_path, train, test, message: str, write: tuple[Path, object] | None = None) -> None:
    """The source refuses the files (after writing `write` = (file, document)) with a ValueError holding `message`."""
    if write is not None:
        write_json(*write)
    with pytest.raises(ValueError, match=re.escape(message)):
        inat(tmp_path, train, test)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_inat_missing_top_level_key(tmp_path, key):
    train, _, test = write_inat(tmp_path, val=False)
    doc = inat_doc(INAT_TRAIN)
    del doc[key]
    write_json(train, doc)
    have = ", ".join(k for k in ("info", "images", "annotations", "categories", "licenses") if k != key)
    inat_refuses(tmp_path, train, test, f"{train} has no key '{key}' (it has: {have}); the iNaturalist/COCO")


def test_inat_sections_and_fields_are_checked(tmp_path):
    train, _, test = write_inat(tmp_path, val=False)
    cases = [
        (lambda d: d.update(images={}), f"{train}: 'images' is a JSON object, expected an array"),
        (lambda d: d.update(images=[]), f"{train} has no images"),
        (lambda d: d["images"][1].pop("file_name"), f"{train} images[1] has no 'file_name' (it has: id, width, height, license)"),
        (lambda d: d["images"][2].update(id="12"), f"{train} images[2]: 'id' is '12' (a JSON string), expected an integer"),
        (lambda d: d["annotations"][0].update(category_id=5.0), f"{train} annotations[0]: 'category_id' is 5.0 (a JSON number), expected an integer"),
        (lambda d: d["categories"].__setitem__(1, "Ant"), f"{train} categories[1]: is a JSON string, expected an object"),
        (lambda d: d["images"][4].update(id=11), f"{train}: image id 11 appears twice (images[1] and images[4])"),
        (lambda d: d["categories"][2].update(id=5), f"{train}: category id 5 appears twice (categories[0] and categories[2])"),
    ]
    for change, message in cases:
        doc = inat_doc(INAT_TRAIN)
        change(doc)
        write_json(train, doc)
        inat_refuses(tmp_path, train, test, message)


def test_inat_image_needs_exactly_one_annotation(tmp_path):
    train, _, test = write_inat(tmp_path, val=False)
    doc = inat_doc(INAT_TRAIN)
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 13]
    message = (
        f"{train} image id 13 (train_val2018/Animalia/5/000d.png, images[3]) has no annotation; "
        "every image needs exactly one (its category)"
    )
    inat_refuses(tmp_path, train, test, message, write=(train, doc))
    doc = inat_doc(INAT_TRAIN)
    doc["annotations"].append({"id": 2000, "image_id": 13, "category_id": 2})
    message = (
        f"{train} image id 13 (train_val2018/Animalia/5/000d.png, images[3]) has 2 annotations "
        "(annotation id 1013 (annotations[2]), annotation id 2000 (annotations[6])); every image needs exactly one"
    )
    inat_refuses(tmp_path, train, test, message, write=(train, doc))


def test_inat_annotation_naming_an_unknown_image_or_category(tmp_path):
    train, _, test = write_inat(tmp_path, val=False)
    doc = inat_doc(INAT_TEST)
    doc["annotations"][1]["image_id"] = 77  # annotation id 1031
    message = f"{test} annotation id 1031 (annotations[1]): image id 77 is not among the file's 3 images"
    inat_refuses(tmp_path, train, test, message, write=(test, doc))
    write_json(test, inat_doc(INAT_TEST))
    doc = inat_doc(INAT_TRAIN)
    doc["annotations"][3]["category_id"] = 8142  # annotation id 1012
    message = f"{train} annotation id 1012 (annotations[3]): category id out of range: 8142 is not among the file's 3 categories (ids 2..9)"
    inat_refuses(tmp_path, train, test, message, write=(train, doc))
    del doc["annotations"][3]["id"]
    inat_refuses(tmp_path, train, test, f"{train} annotations[3]: category id out of range: 8142", write=(train, doc))


@pytest.mark.parametrize("which", ["val", "test"])
def test_inat_val_and_test_categories_must_be_training_ones(tmp_path, which):
    train, val, test = write_inat(tmp_path)
    path = val if which == "val" else test
    moth = {"id": 11, "name": "Moth", "supercategory": "Insecta"}
    write_json(path, inat_doc([(40, 2), (41, 11)], [*INAT_CATEGORIES, moth]))
    message = (
        f"{path} annotation id 1041 (annotations[0]): category id 11 is not among the training categories "
        f"of {train} (3 categories, ids 2..9)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        inat(tmp_path, train, test, val=val)
    # Listing a category that train lacks is harmless while no image uses it.
    write_json(path, inat_doc([(40, 2)], [*INAT_CATEGORIES, moth]))
    s = inat(tmp_path, train, test, val=val)
    np.testing.assert_array_equal((s.val if which == "val" else s.test).labels, [0])


def test_inat_training_categories_need_images_and_the_same_names(tmp_path):
    train, _, test = write_inat(tmp_path, val=False)
    write_json(train, inat_doc([(10, 5), (11, 2)]))
    message = f"{train}: category id 9 (Bee) has no image; every training class needs at least one"
    inat_refuses(tmp_path, train, test, message)
    write_json(train, inat_doc(INAT_TRAIN))
    renamed = [dict(INAT_CATEGORIES[0], name="Horse"), *INAT_CATEGORIES[1:]]
    write_json(test, inat_doc(INAT_TEST, renamed))
    message = f"{test}: category id 5 is named 'Horse', but 'Zebra' in {train}; are the files from the same iNaturalist release?"
    inat_refuses(tmp_path, train, test, message)


# --------------------------------------------------------------------------- torchvision CIFAR


def write_fake_cifar10(root: Path) -> Path:
    """torchvision's cifar-10-batches-py layout, 2 images per batch, pixels R=10+k G=20 B=30."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]):
        data = np.concatenate([np.full(1024, 10 + k), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
        entry = {"data": np.stack([data, data]), "labels": [k % 10, (k + 1) % 10]}
        (folder / name).write_bytes(pickle.dumps(entry))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return folder


def test_torchvision_cifar_reads_pickle_layout(tmp_path):
    write_fake_cifar10(tmp_path)
    s = torchvision_cifar("cifar10", tmp_path)
    assert (len(s.train), len(s.test), s.class_names[9], s.channels) == (10, 2, "truck", 3)
    np.testing.assert_array_equal(s.train.labels, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    np.testing.assert_array_equal(s.test.sample_ids, TEST_ID_OFFSET + np.arange(2))
    image = s.train.load(2)  # from data_batch_2
    assert (image.mode, image.size, image.getpixel((5, 7))) == ("RGB", (32, 32), (11, 20, 30))
    assert pickle.loads(pickle.dumps(s.test)).load(0).getpixel((0, 0)) == (15, 20, 30)


def test_torchvision_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((3, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps({"data": data, "fine_labels": [0, 99, 5]}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    s = torchvision_cifar("cifar100", tmp_path)
    assert len(s.class_names) == 100
    np.testing.assert_array_equal(s.train.labels, [0, 99, 5])


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("data_batch_3", b"garbage", " is not a CIFAR python pickle (UnpicklingError: "),
        ("data_batch_3", pickle.dumps([1, 2]), " has no 'data' or 'labels' entry (it holds a list, not a dict)"),
        ("test_batch", pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), " has no 'labels' entry (it holds ['data'])"),
        (
            "data_batch_1",
            pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}),
            ": 'data' has shape (2, 100), expected (2, 3072) for its labels",
        ),
        ("batches.meta", pickle.dumps({"names": []}), " has no 'label_names' entry (it holds ['names'])"),
    ],
)
def test_torchvision_cifar_damaged_file_is_named(tmp_path, file, content, message):
    folder = write_fake_cifar10(tmp_path)
    (folder / file).write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"{folder / file}{message}")):
        torchvision_cifar("cifar10", tmp_path)


def test_torchvision_cifar_label_beyond_the_meta_classes(tmp_path):
    folder = write_fake_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 10]}))
    message = f"{folder / 'test_batch'} image 1: label 10 is out of range (0..9, the classes of {folder / 'batches.meta'})"
    with pytest.raises(ValueError, match=re.escape(message)):
        torchvision_cifar("cifar10", tmp_path)


def test_torchvision_cifar_missing_says_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'cifar'))}.*download: true"):
        torchvision_cifar("cifar10", tmp_path / "cifar")
    with pytest.raises(ValueError, match="cifar1000"):
        torchvision_cifar("cifar1000", tmp_path)


# --------------------------------------------------------------------------- digits and dispatch


def test_digits_balanced_test_split():
    s = digits(test_per_class=40)
    assert (len(s.train) + len(s.test), s.channels, s.class_names) == (1797, 1, [str(c) for c in range(10)])
    np.testing.assert_array_equal(np.bincount(s.test.labels), np.full(10, 40))
    image = s.train.load(0)
    assert (image.mode, image.size) == ("L", (8, 8))
    assert s.train.store.images.dtype == np.uint8 and s.train.store.images.max() == 255
    # The bundled CSV read directly is scikit-learn's data set, image for image.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bundled_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    # The test split is the first 40 of each class in dataset order: digits image 0 is a 0.
    first = np.rint(bunch.images[0] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(s.test.load(0)), first)
    tensor, label, sample_id = ImageDataset(s.test, build_transform("digits", True, 8))[0]
    assert tensor.shape == (1, 8, 8) and (label, sample_id) == (0, TEST_ID_OFFSET)
    assert isinstance(tensor, torch.Tensor)


def test_parquet_without_embedded_bytes(tmp_path):
    image = pa.array([{"bytes": jpeg_bytes((1, 1, 1)), "path": "0.jpg"}, {"bytes": None, "path": "1.jpg"}])
    path = tmp_path / "by_path.parquet"
    pq.write_table(pa.table({"image": image, "label": pa.array([0, 0], type=pa.int64())}), path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} row 1: image has no embedded bytes"):
        parquet(path, path)


# --------------------------------------------------------------------------- decoded once


def _random_pngs(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        (folder / "train" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "train" / f"c{i % 2}" / f"{i}.png")
    for c in ("c0", "c1"):  # a test split needs images too
        (folder / "test" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "test" / c / "0.png")
    return folder


def test_decoded_images_give_the_cifar_transforms_the_same_pixels(tmp_path):
    from lfme.data import fixed_size_step

    images = imagefolder(_random_pngs(tmp_path, [(40, 36), (36, 40), (40, 36), (50, 50)]), test="test").train
    kept = images.decoded(fixed_size_step("cifar", 32))
    assert kept.store.images.shape == (4, 32, 32, 3) and kept.store.images.dtype == np.uint8
    for i in range(len(images)):
        with Image.open(images.where(i)) as original:
            assert np.array_equal(kept.store.images[i], np.asarray(original.convert("RGB").resize((32, 32), Image.BILINEAR)))
    assert np.array_equal(kept.sample_ids, images.sample_ids) and np.array_equal(kept.labels, images.labels)
    for train in (True, False):
        transform = build_transform("cifar", train, 32)
        for i in range(len(images)):
            torch.manual_seed(i)  # the same crop and flip draws for both
            decoding = ImageDataset(images, transform)[i]
            torch.manual_seed(i)
            decoded = ImageDataset(kept, transform)[i]
            assert torch.equal(decoding[0], decoded[0]) and decoding[1:] == decoded[1:]


def test_decoded_needs_one_size_and_keeps_arrays_as_they_are(tmp_path):
    images = imagefolder(_random_pngs(tmp_path, [(40, 36), (36, 40)]), test="test").train
    with pytest.raises(ValueError, match="2 sizes"):
        images.decoded()
    digit_images = digits().train
    assert digit_images.decoded() is digit_images


def _loader_config(root: Path, decode_once: bool, loader_workers: int = 0):
    from rundir.sections import DataConfig

    return DataConfig(
        source="imagefolder", root=str(root), transform="cifar", image_size=32, decode_once=decode_once, loader_workers=loader_workers
    )


def _cifar_crop(image: Image.Image, top: int, left: int, flip: bool) -> torch.Tensor:
    """The PIL path's training transform, at given offsets and flip, by torchvision's functional ops."""
    from torchvision.transforms import functional as TF

    from lfme.data.transforms import CIFAR_MEAN, CIFAR_STD

    crop = TF.crop(TF.pad(image, 4, fill=0), top, left, 32, 32)
    return TF.normalize(TF.to_tensor(TF.hflip(crop) if flip else crop), CIFAR_MEAN, CIFAR_STD)


def test_decode_once_evaluation_batches_equal_the_pil_path(tmp_path):
    from rundir.data import make_loader

    images = imagefolder(_random_pngs(tmp_path, [(40, 36)] * 6), test="test").train
    batches = {}
    for decode_once in (False, True):
        loader = make_loader(images, _loader_config(tmp_path, decode_once), train=False, batch_size=4)
        assert isinstance(loader, DeviceBatches) == decode_once
        batches[decode_once] = [b for epoch in range(2) for b in loader]
    for (x, y, ids), (x1, y1, ids1) in zip(batches[False], batches[True], strict=True):
        assert x1.dtype == torch.float32 and x1.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x1, x, rtol=0, atol=1e-6)
        assert torch.equal(y, y1) and torch.equal(ids, ids1)


def test_decode_once_digits_batches_are_one_channel_and_equal_the_pil_path_in_evaluation():
    from rundir.sections import DataConfig
    from rundir.data import make_loader

    images = digits().test.subset(np.arange(50))
    batches = {}
    for decode_once in (False, True):
        cfg = DataConfig(source="digits", transform="digits", image_size=8, decode_once=decode_once)
        batches[decode_once] = list(make_loader(images, cfg, train=False, batch_size=16))
        train = list(make_loader(images, cfg, train=True, batch_size=16))
        assert [x.shape for x, _, _ in train] == [(16, 1, 8, 8)] * 3 + [(2, 1, 8, 8)]
    for (x, y, ids), (x1, y1, ids1) in zip(batches[False], batches[True], strict=True):
        torch.testing.assert_close(x1, x, rtol=0, atol=1e-6)
        assert torch.equal(y, y1) and torch.equal(ids, ids1)


@pytest.mark.parametrize("loader_workers", [0, 1])
def test_decode_once_training_batches_are_the_drawn_crops_of_the_pil_path_images(tmp_path, loader_workers):
    from torch.utils.data import DistributedSampler

    from lfme.data import fixed_size_step
    from rundir.data import make_loader

    images = imagefolder(_random_pngs(tmp_path, [(40, 36)] * 7), test="test").train
    sampler = DistributedSampler(range(len(images)), num_replicas=1, rank=0, shuffle=True, seed=0)
    pil = make_loader(images, _loader_config(tmp_path, False), True, batch_size=3, sampler=sampler)
    batched = make_loader(images, _loader_config(tmp_path, True, loader_workers), True, batch_size=3, sampler=sampler)
    assert isinstance(batched.loader.dataset.image_list.store, ArrayStore)
    assert len(batched) == len(pil) == 3
    drawn = []
    draw = batched.transform.draw
    batched.transform.draw = lambda n: drawn.append(draw(n)) or drawn[-1]
    # What the PIL path crops: each image decoded and resized on its own.
    resized = [fixed_size_step("cifar", 32)(images.load(i)) for i in range(len(images))]
    orders = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        reference, got = list(pil), list(batched)
        for (x, y, ids), (_, y0, ids0), (tops, lefts, flips) in zip(got, reference, drawn[-3:], strict=True):
            assert x.shape == (len(ids), 3, 32, 32) and x.dtype == torch.float32
            assert x.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(y, y0) and torch.equal(ids, ids0)
            for j, sample_id in enumerate(ids.tolist()):  # imagefolder train ids are positions
                expected = _cifar_crop(resized[sample_id], int(tops[j]), int(lefts[j]), bool(flips[j]))
                torch.testing.assert_close(x[j], expected, rtol=0, atol=1e-6)
        orders.append(torch.cat([ids for _, _, ids in got]))
    assert not torch.equal(orders[0], orders[1])  # set_epoch reached the sampler


def test_decode_once_training_batches_follow_the_seed_and_resume_from_rng_state(tmp_path):
    from torch.utils.data import DistributedSampler

    from lfme.engine import rng_state, seed_everything, set_rng_state
    from rundir.data import make_loader

    images = imagefolder(_random_pngs(tmp_path, [(40, 36)] * 7), test="test").train
    sampler = DistributedSampler(range(len(images)), num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = make_loader(images, _loader_config(tmp_path, True), True, batch_size=3, sampler=sampler)

    def epoch(e: int) -> torch.Tensor:
        sampler.set_epoch(e)
        return torch.cat([x for x, _, _ in loader])

    seed_everything(0)
    first = epoch(1)
    state = rng_state()
    second = epoch(2)
    seed_everything(0)
    assert torch.equal(epoch(1), first)
    set_rng_state(state)
    assert torch.equal(epoch(2), second)
    seed_everything(1)
    assert not torch.equal(epoch(1), first)  # the same images in the same order, other crops


# ------------------------------------------------------------------ synthetic


def test_long_tailed_profile_has_the_imitated_ends_and_total():
    from lfme.data.sources import long_tailed_profile

    counts = long_tailed_profile(437_513, 8_142, 1_000)  # iNaturalist 2018
    assert counts.sum() == 437_513 and len(counts) == 8_142
    assert counts.max() == 1_000 and counts.min() == 2
    assert np.all(np.diff(counts) <= 0)  # class 0 is the head
    with pytest.raises(ValueError, match="cannot make 10 classes of 2..5 images"):
        long_tailed_profile(100, 10, 5)
    # A head of 1,280 and 999 classes of at least 2 need 1,280 + 1,998 = 3,278 images.
    with pytest.raises(ValueError, match="between 3278 and 1280000 can"):
        long_tailed_profile(2_100, 1_000, 1_280)
    counts = long_tailed_profile(3_278, 1_000, 1_280)
    assert counts[0] == 1_280 and counts[1:].tolist() == [2] * 999
    counts = long_tailed_profile(1_000 + 2 * 8_141, 8_142, 1_000)  # iNaturalist's classes, the fewest images
    assert counts[0] == 1_000 and counts.sum() == 17_282 and counts.min() == 2


def test_synthetic_images_are_made_from_their_id_and_class():
    from lfme.data.sources import synthetic

    source = synthetic(600, 20, 100, test_per_class=2, image_size=8, seed=3)
    assert len(source.train) == 600 and len(source.test) == 40 and source.num_classes == 20
    assert source.train.sample_ids.tolist() == list(range(600))
    assert (source.test.sample_ids >= TEST_ID_OFFSET).all()
    first = np.asarray(source.train.load(5))
    assert first.shape == (8, 8, 3) and first.dtype == np.uint8
    # Same id, same pixels, also through a subset; another id of the same class differs but shares its colour.
    np.testing.assert_array_equal(np.asarray(source.train.subset([7, 5]).load(1)), first)
    same_class = np.flatnonzero(source.train.labels == source.train.labels[5])
    other = np.asarray(source.train.load(int(same_class[same_class != 5][0])))
    assert not np.array_equal(other, first)
    assert np.abs(other.reshape(-1, 3).mean(0) - first.reshape(-1, 3).mean(0)).max() < 40
    again = synthetic(600, 20, 100, test_per_class=2, image_size=8, seed=3)
    np.testing.assert_array_equal(np.asarray(again.train.load(5)), first)


def test_synthetic_source_from_the_config_and_its_errors():
    from rundir.config import load_config
    from rundir.fields import ConfigError
    from rundir.data import load_source

    config = load_config(None, ["data.source=synthetic", "data.synthetic.images=500", "data.synthetic.classes=10",
                                "data.synthetic.max_count=100", "data.image_size=4"])
    source = load_source(config.data)
    assert len(source.train) == 500 and source.num_classes == 10 and np.asarray(source.train.load(0)).shape == (4, 4, 3)
    with pytest.raises(ConfigError, match=r"data.synthetic.images: 5000 images cannot make 10 classes of 2..100 images .*\(between 118 and 1000 can\)"):
        load_config(None, ["data.source=synthetic", "data.synthetic.images=5000", "data.synthetic.classes=10",
                           "data.synthetic.max_count=100"])
