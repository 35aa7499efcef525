"""Using a finished run's student: load it, predict with it, export it (pipeline.student, .predict, .export).

The finished default run's student (digits, small_cnn) is loaded in this
process; `lfme predict` and `lfme export` run as a user runs them; each
exported file is loaded in a fresh interpreter that imports nothing of this
project and must give the student's logits on the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfme.data import digits
from pipeline.student import StudentError, load_student
from tests.pipeline.test_export import fresh_logits
from tests.pipeline_helpers import copy_run, run_lfme

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("on_shared_ray")]


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> Path:
    """The default run's test set (digits, 40 per class) as an ImageFolder tree of PNGs named by class."""
    root = tmp_path_factory.mktemp("digits-test")
    source = digits(test_per_class=40)
    for i in range(len(source.test)):
        folder = root / source.class_names[source.test.labels[i]]
        folder.mkdir(exist_ok=True)
        Image.fromarray(source.test.store.read(i)).save(folder / f"{i:04d}.png")
    return root


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "evaluate" / "report.json").read_text())["student"]


def test_load_student_brings_what_inference_needs(finished_run):
    student = load_student(str(finished_run))
    assert (student.arch, student.channels, student.transform, student.image_size) == ("small_cnn", 1, "digits", 8)
    assert student.class_names == [str(d) for d in range(10)]
    assert (student.mean, student.std, student.precision) == ((0.5,), (0.5,), "fp32")
    assert student.accuracy == report(finished_run)
    assert set(student.fingerprints) == {"split", "experts", "cache", "distill", "evaluate"}
    assert not student.model.training


def test_a_damaged_or_missing_student_is_named_in_one_line(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    weights = run_dir / "distill" / "student.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StudentError, match=r"student\.pt is damaged \(its SHA-256 is not the one the distill stage recorded\)"):
        load_student(str(run_dir))
    weights.unlink()
    with pytest.raises(StudentError, match=r"student\.pt is missing"):
        load_student(str(run_dir))
    result = run_lfme("predict", str(run_dir), str(tmp_path))
    assert result.returncode == 1 and result.stderr.startswith("lfme: error: StudentError: ") and "student.pt is missing" in result.stderr


def test_predict_on_the_test_set_gives_the_evaluate_stage_numbers(finished_run, test_images, tmp_path):
    (test_images / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # named, skipped, counted
    try:
        result = run_lfme("predict", str(finished_run), str(test_images), "--top-k", "3", "--out", str(tmp_path / "p.csv"))
    finally:
        (test_images / "3" / "broken.png").unlink()
    assert result.returncode == 0, result.stderr
    expected = report(finished_run)
    shots = expected["shots"]["inclusive"]
    line = next(line for line in result.stdout.splitlines() if line.startswith("top-1 "))
    assert line == (
        f"top-1 {100 * expected['overall']:.1f}%  many {100 * shots['many']:.1f}%  medium {100 * shots['medium']:.1f}%  "
        f"few {100 * shots['few']:.1f}%  (400 labelled images; {shots['rule']})"
    )
    assert "broken.png" in result.stderr and "1 image(s) skipped" in result.stderr and "Traceback" not in result.stderr
    import csv

    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 400 and list(rows[0]) == ["input", "label", *[f"{k}_{r}" for r in (1, 2, 3) for k in ("class", "name", "prob")]]
    hits = sum(row["class_1"] == row["label"] for row in rows)
    assert hits == round(expected["overall"] * 400)
    assert all(float(r["prob_1"]) >= float(r["prob_2"]) >= float(r["prob_3"]) for r in rows)

    # On Ray, in tasks of 128 images: the same rows in the same order, the same numbers.
    on_ray = run_lfme("predict", str(finished_run), str(test_images), "--top-k", "3", "--ray", "--chunk", "128", "--out", str(tmp_path / "r.csv"))
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert list(csv.DictReader((tmp_path / "r.csv").open())) == rows
    assert line in on_ray.stdout and "predict: 400 of 400 images" in on_ray.stdout


FRESH = {
    "torchscript": "import torch\nmodel = torch.jit.load('{file}')\nout = model(torch.from_numpy(x)).detach().numpy()",
    "onnx": "import onnxruntime\nout = onnxruntime.InferenceSession('{file}').run(['logits'], {{'images': x}})[0]",
}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_student_gives_the_same_logits_without_the_project(finished_run, test_images, tmp_path, fmt):
    out = tmp_path / "export"
    result = run_lfme("export", str(finished_run), str(out), "--format", fmt)
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model_card.json").read_text())
    student = load_student(str(finished_run))
    assert card["class_names"] == student.class_names and card["input"]["channels"] == 1 and card["input"]["size"] == [8, 8]
    assert card["test_accuracy"]["overall"] == report(finished_run)["overall"] and card["fingerprints"] == student.fingerprints
    assert card["lfme"]["temperature"] == 2.0 and (out / "README.md").read_text().startswith("# LFME student (small_cnn, 10 classes)")
    images = sorted(test_images.rglob("*.png"))[:16]
    batch = torch.stack([student.preprocess(Image.open(p)) for p in images])
    expected = student.logits(batch).numpy()
    got = fresh_logits(FRESH[fmt].format(file=card["file"]), out, batch.numpy())
    assert np.abs(got - expected).max() < 1e-4
