"""Tests for lfme.report (Markdown, JSON, PNG plots, text table)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from lfme import report as rep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INCLUSIVE_RULE = "many N>=100, few N<=20"
STRICT_RULE = "many N>100, few N<20"


def _acc(many, medium, few, rule, counts):
    return {"rule": rule, "many": many, "medium": medium, "few": few,
            "classes": dict(zip(("many", "medium", "few"), counts))}


@pytest.fixture
def report():
    per_class = [0.91, 0.85, 0.7, 0.62, 0.5, None, 0.2, 0.1]
    return {
        "student": {
            "overall": 0.4567,
            "num_samples": 800,
            "subsets": {"head": 0.8123, "middle": 0.333, "tail": None},
            "shots": {
                "inclusive": _acc(0.9012, 0.5555, None, INCLUSIVE_RULE, (2, 3, 0)),
                "strict": _acc(0.8765, 0.4321, 0.1234, STRICT_RULE, (1, 3, 4)),
            },
            "per_class": per_class,
        },
        "experts": {
            "head": {"classes": [0, 1, 2], "accuracy": 0.9876, "num_samples": 300, "student_accuracy_within_subset": 0.9},
            "middle": {"classes": [3, 4, 5], "accuracy": 0.7001, "num_samples": 300},
            "tail": {"classes": [6, 7], "accuracy": 0.6049, "num_samples": 200},
        },
        "subsets": [{"name": "head", "classes": [0, 1, 2]},
                    {"name": "middle", "classes": [3, 4, 5]},
                    {"name": "tail", "classes": [6, 7]}],
        "class_names": [f"c{i}" for i in range(8)],
        "train_counts": [500, 300, 120, 60, 40, 25, 10, 5],
        "w_history": [
            {"epoch": 1, "weights": {"head": 1.0, "middle": 1.0, "tail": 1.0}},
            {"epoch": 2, "weights": {"head": 0.75, "middle": 0.9, "tail": 1.0}},
            {"epoch": 3, "weights": {"head": 0.3141, "middle": 0.6, "tail": 0.95}},
        ],
        "config": {"distill": {"epochs": 3, "temperature": 2.0}},
    }


def _section(md: str, title: str) -> str:
    """The text of one '## title' section of the Markdown."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start:] if end < 0 else md[start:end]


def _row(section: str, first_cell: str) -> list[str]:
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{section}")


# --------------------------------------------------------------------------- formatting

@pytest.mark.parametrize("value, text", [(0.4567, "45.7"), (1.0, "100.0"), (0.0, "0.0"),
                                         (0.99951, "100.0"), (0.8765, "87.7"),
                                         (-0.0001, "0.0"), (np.float32(0.25), "25.0"), (None, "n/a"), (float("nan"), "n/a")])
def test_format_percent(value, text):
    assert rep.format_percent(value) == text


@pytest.mark.parametrize("value, text", [(0.123456, "0.1235"), (12345.678, "1.235e+04"), (3, "3"),
                                         (np.int64(7), "7"), (np.float32(0.5), "0.5"), (None, "n/a"),
                                         ("abc", "abc"), (True, "True")])
def test_format_value(value, text):
    assert rep.format_value(value) == text


# --------------------------------------------------------------------------- markdown

def test_markdown_student_table(report):
    md = rep.render_markdown(report)
    assert md.startswith("# ")
    student = _section(md, "Student")
    header = _row(student, "Model")
    assert header[1:] == ["Overall", "head", "middle", "tail"]
    assert _row(student, "Student")[1:] == ["45.7", "81.2", "33.3", "n/a"]
    assert "800" in student


def test_markdown_shot_conventions_state_rules_and_class_counts(report):
    md = rep.render_markdown(report)
    shots = _section(md, "Many / Medium / Few")
    inclusive = _row(shots, "inclusive")
    strict = _row(shots, "strict")
    assert inclusive[1] == INCLUSIVE_RULE
    assert strict[1] == STRICT_RULE
    assert inclusive[2:] == ["90.1 (2 classes)", "55.6 (3 classes)", "n/a (0 classes)"]
    assert strict[2:] == ["87.7 (1 classes)", "43.2 (3 classes)", "12.3 (4 classes)"]


def test_markdown_expert_rows_next_to_student(report):
    md = rep.render_markdown(report)
    experts = _section(md, "Experts")
    head = _row(experts, "head")
    assert head[1:5] == ["3: 0-2", "300", "98.8", "81.2"]
    assert head[5] == "-17.5"
    # The student among the subset's classes only, on equal terms with the expert: 90.0 - 98.8 = -8.8 points.
    assert head[6:8] == ["90.0", "-8.8"]
    tail = _row(experts, "tail")
    assert tail[1:] == ["2: 6-7", "200", "60.5", "n/a", "n/a", "n/a", "n/a"]
    assert _row(experts, "middle")[3:5] == ["70.0", "33.3"]


def test_markdown_final_spes_weights(report):
    md = rep.render_markdown(report)
    weights = _section(md, "SpES expert weights")
    assert "epoch 3" in weights
    assert _row(weights, "head")[1] == "0.314"
    assert _row(weights, "tail")[1] == "0.950"


def test_markdown_without_history_has_no_weights_section(report):
    report["w_history"] = []
    md = rep.render_markdown(report)
    assert "SpES" not in md
    assert "Experts" in md  # the rest is still rendered


def test_markdown_escapes_pipes_in_names(report):
    report["subsets"][0]["name"] = "a|b"
    report["student"]["subsets"]["a|b"] = report["student"]["subsets"].pop("head")
    md = rep.render_markdown(report)
    header_line = next(l for l in _section(md, "Student").splitlines() if "Overall" in l)
    assert "a\\|b" in header_line
    assert header_line.count(" | ") == 4  # 5 columns, the escaped pipe is no separator


# --------------------------------------------------------------------------- plots

def _assert_png(path, ndim=3):
    import matplotlib.image as mpimg

    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 2000
    image = mpimg.imread(path)
    assert image.ndim == ndim
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.std(image)) > 0.01  # something was drawn


def test_plot_expert_weights_writes_png(report, tmp_path):
    path = tmp_path / "w.png"
    assert rep.plot_expert_weights(report["w_history"], path) is True
    _assert_png(path)


def test_plot_expert_weights_empty_writes_nothing(tmp_path):
    path = tmp_path / "w.png"
    assert rep.plot_expert_weights([], path) is False
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_plot_per_class_accuracy_writes_png(report, tmp_path):
    path = tmp_path / "pc.png"
    rep.plot_per_class_accuracy(report["student"]["per_class"], report["train_counts"], path,
                                class_names=report["class_names"])
    _assert_png(path)


def test_plot_per_class_accuracy_all_none_and_zero_counts(tmp_path):
    path = tmp_path / "pc.png"
    rep.plot_per_class_accuracy([None, None, 0.5], [0, 10, 0], path)
    _assert_png(path)


def test_plot_per_class_accuracy_length_mismatch(tmp_path):
    with pytest.raises(ValueError):
        rep.plot_per_class_accuracy([0.5, 0.4], [10, 20, 30], tmp_path / "pc.png")
    assert not (tmp_path / "pc.png").exists()


# --------------------------------------------------------------------------- write_report

def test_write_report_writes_everything_atomically(report, tmp_path):
    out = tmp_path / "eval"
    original = copy.deepcopy(report)
    written = rep.write_report(report, out)
    assert report == original  # input untouched
    assert set(written) == {"report.json", "report.md", "expert_weights.png", "per_class_accuracy.png"}
    for name, path in written.items():
        assert os.path.dirname(path) == str(out) and os.path.basename(path) == name
        assert os.path.isfile(path)
    assert sorted(os.listdir(out)) == sorted(written)  # no temp files left behind

    with open(written["report.json"]) as fh:
        assert json.load(fh) == report
    with open(written["report.json"]) as fh:
        assert fh.read().startswith('{\n  "student"')  # indent=2
    with open(written["report.md"]) as fh:
        assert fh.read() == rep.render_markdown(report)
    _assert_png(written["expert_weights.png"])
    _assert_png(written["per_class_accuracy.png"])


def _stub_per_class_plot(monkeypatch):
    """Keeps JSON-only tests fast: the real plot is tested above."""
    def stub(per_class, train_counts, path, class_names=None):
        with open(path, "wb") as fh:
            fh.write(PNG_MAGIC)
        return True

    monkeypatch.setattr(rep, "plot_per_class_accuracy", stub)


def test_write_report_overwrites_and_skips_weights_without_history(report, tmp_path, monkeypatch):
    _stub_per_class_plot(monkeypatch)
    rep.write_report(report, tmp_path)
    assert (tmp_path / "expert_weights.png").exists()
    report["w_history"] = []
    report["student"]["overall"] = 0.1111
    written = rep.write_report(report, tmp_path)
    assert "expert_weights.png" not in written
    with open(written["report.json"]) as fh:
        assert json.load(fh)["student"]["overall"] == 0.1111
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_write_report_numpy_and_nan_values(report, tmp_path, monkeypatch):
    _stub_per_class_plot(monkeypatch)
    report["w_history"] = []
    report["train_counts"] = np.asarray(report["train_counts"], dtype=np.int64)
    report["student"]["overall"] = np.float64(0.5)
    report["config"]["distill"]["lr"] = float("nan")
    written = rep.write_report(report, tmp_path)
    with open(written["report.json"]) as fh:
        loaded = json.load(fh)
    assert loaded["train_counts"] == [500, 300, 120, 60, 40, 25, 10, 5]
    assert loaded["student"]["overall"] == 0.5
    assert loaded["config"]["distill"]["lr"] is None


def test_stale_weights_plot_is_removed_when_the_run_has_no_history(tmp_path, report):
    rep.write_report(report, tmp_path)
    assert (tmp_path / "expert_weights.png").exists()
    rep.write_report({**report, "w_history": []}, tmp_path)
    assert not (tmp_path / "expert_weights.png").exists()


# --------------------------------------------------------------------------- summary_table

def test_summary_table_aligns_columns():
    rows = [{"stage": "experts", "accuracy": 0.912345, "epochs": 30},
            {"stage": "distill-student", "accuracy": None, "epochs": 5},
            {"stage": "x", "epochs": 123456}]
    text = rep.summary_table(rows, ["stage", "accuracy", "epochs"])
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({len(line) for line in lines}) == 1
    assert set(lines[1]) == {"-", " "} and lines[1].startswith("-")
    assert lines[0].split() == ["stage", "accuracy", "epochs"]
    assert lines[2].split() == ["experts", "0.9123", "30"]
    assert lines[3].split() == ["distill-student", "n/a", "5"]
    # columns start at the same offset on every line
    for line in lines[2:]:
        assert line.index(line.split()[0]) == 0
    col = lines[0].index("epochs")
    assert lines[2][col + len("epochs") - 1] == "0"  # numbers right-aligned
    assert lines[4].rstrip().endswith("123456")


def test_summary_table_no_rows():
    text = rep.summary_table([], ["a", "bb"])
    assert text.splitlines() == ["a  bb", "-  --"]
