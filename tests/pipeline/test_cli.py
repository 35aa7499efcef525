"""`lfme metrics` and `lfme status` from the command line (no Ray, no network).

Expected values are worked out by hand here, not with lfme.metrics, so a wrong
formula or a wrong subset split in the CLI path shows up as a failure.
"""

import json
import math

import numpy as np
import pytest

from pipeline.cli import main
from tests.pipeline_helpers import REPO

ROOT = REPO

COUNTS = [200, 150, 100, 60, 40, 20, 10, 5]  # N = 585, C = 8


def _kl(counts):
    """sum_i p_i log2(p_i / (1/C)), written out."""
    total = sum(counts)
    return sum(n / total * math.log2(n / total * len(counts)) for n in counts)


@pytest.fixture
def count_file(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("# one count per line\n" + "\n".join(map(str, COUNTS)) + "\n\n")
    return path


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _metrics_json(capsys, argv):
    code, out, err = _run(capsys, ["metrics", *argv, "--json"])
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- --class-counts FILE


def test_json_entire_set_by_hand(capsys, count_file):
    result = _metrics_json(capsys, ["--class-counts", str(count_file)])
    assert set(result) == {"entire", "subsets"}
    entire = result["entire"]
    # I_Ratio = max / min = 200 / 5
    assert entire["ratio"] == pytest.approx(40.0)
    # I_Abs = sum |1/8 - N_i/585| = sum |73.125 - N_i| / 585
    #       = (126.875 + 76.875 + 26.875 + 13.125 + 33.125 + 53.125 + 63.125 + 68.125) / 585 = 461.25 / 585
    assert entire["abs"] == pytest.approx(461.25 / 585)
    # I_Gini: ascending 5,10,20,40,60,100,150,200 with coefficients 2i-9 = -7,-5,-3,-1,1,3,5,7:
    #   -35 - 50 - 60 - 40 + 60 + 300 + 750 + 1400 = 2325;  / (8 * 585)
    assert entire["gini"] == pytest.approx(2325 / 4680)
    # I_KL in bits against the uniform 1/8
    assert entire["kl"] == pytest.approx(_kl(COUNTS))
    assert entire["kl"] == pytest.approx(
        200 / 585 * math.log2(1600 / 585)
        + 150 / 585 * math.log2(1200 / 585)
        + 100 / 585 * math.log2(800 / 585)
        + 60 / 585 * math.log2(480 / 585)
        + 40 / 585 * math.log2(320 / 585)
        + 20 / 585 * math.log2(160 / 585)
        + 10 / 585 * math.log2(80 / 585)
        + 5 / 585 * math.log2(40 / 585)
    )


def test_json_subsets_by_hand(capsys, count_file):
    result = _metrics_json(capsys, ["--class-counts", str(count_file)])
    subsets = result["subsets"]
    for row in subsets:
        assert set(row) == {"name", "classes", "ratio", "kl", "abs", "gini"}
    # default thresholds 20, 100, inclusive: many N >= 100, medium 20 < N < 100, few N <= 20
    assert [(s["name"], s["classes"]) for s in subsets] == [
        ("many", [0, 1, 2]),
        ("medium", [3, 4]),
        ("few", [5, 6, 7]),
    ]
    many, medium, few = subsets
    # many: 200, 150, 100 (sum 450): p = 4/9, 1/3, 2/9
    assert many["ratio"] == pytest.approx(2.0)
    assert many["abs"] == pytest.approx(1 / 9 + 0 + 1 / 9)
    assert many["gini"] == pytest.approx((-2 * 100 + 0 * 150 + 2 * 200) / (3 * 450))
    assert many["kl"] == pytest.approx(4 / 9 * math.log2(4 / 3) + 1 / 3 * math.log2(1) + 2 / 9 * math.log2(2 / 3))
    # medium: 60, 40: p = 0.6, 0.4
    assert medium["ratio"] == pytest.approx(1.5)
    assert medium["abs"] == pytest.approx(0.1 + 0.1)
    assert medium["gini"] == pytest.approx((-40 + 60) / (2 * 100))
    assert medium["kl"] == pytest.approx(0.6 * math.log2(1.2) + 0.4 * math.log2(0.8))
    # few: 20, 10, 5 (sum 35): p = 4/7, 2/7, 1/7
    assert few["ratio"] == pytest.approx(4.0)
    assert few["abs"] == pytest.approx(5 / 21 + 1 / 21 + 4 / 21)
    assert few["gini"] == pytest.approx((-2 * 5 + 2 * 20) / (3 * 35))
    assert few["kl"] == pytest.approx(_kl([20, 10, 5]))


def test_thresholds_option(capsys, count_file):
    default = _metrics_json(capsys, ["--class-counts", str(count_file)])
    explicit = _metrics_json(capsys, ["--class-counts", str(count_file), "--thresholds", "20,100"])
    assert explicit == default
    other = _metrics_json(capsys, ["--class-counts", str(count_file), "--thresholds", "50,150"])
    # many N >= 150, medium 50 < N < 150, few N <= 50
    assert [s["classes"] for s in other["subsets"]] == [[0, 1], [2, 3], [4, 5, 6, 7]]
    assert other["subsets"][0]["ratio"] == pytest.approx(200 / 150)
    assert other["subsets"][2]["ratio"] == pytest.approx(40 / 5)
    assert other["entire"] == default["entire"]  # the entire set does not depend on the split


def test_single_threshold_gives_two_subsets(capsys, count_file):
    result = _metrics_json(capsys, ["--class-counts", str(count_file), "--thresholds", "50"])
    assert [s["classes"] for s in result["subsets"]] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_bad_thresholds_are_a_usage_error(capsys, count_file):
    code, out, err = _run(capsys, ["metrics", "--class-counts", str(count_file), "--thresholds", "20,lots"])
    assert code == 2 and "--thresholds" in err and out == ""


def test_table_output(capsys, count_file):
    code, out, err = _run(capsys, ["metrics", "--class-counts", str(count_file)])
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    header = lines[0].split()
    for column in ("I_Ratio", "I_KL", "I_Abs", "I_Gini"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"Entire", "many", "medium", "few"} and len(lines) == 5
    ratio = header.index("I_Ratio")
    assert float(rows["Entire"][ratio]) == pytest.approx(40.0)
    assert float(rows["few"][ratio]) == pytest.approx(4.0)
    assert float(rows["Entire"][header.index("I_Gini")]) == pytest.approx(2325 / 4680, abs=5e-4)
    assert rows["Entire"][header.index("classes")] == "8"
    assert rows["medium"][header.index("classes")] == "2"


def test_non_number_line_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("100\n# a comment\n50\nlots\n5\n")
    code, out, err = _run(capsys, ["metrics", "--class-counts", str(path)])
    assert code == 1
    assert f"{path}:4" in err and "'lots'" in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_zero_or_fractional_count_is_rejected(capsys, tmp_path):
    path = tmp_path / "zero.txt"
    path.write_text("100\n0\n")
    code, _, err = _run(capsys, ["metrics", "--class-counts", str(path)])
    assert code == 1 and f"{path}:2" in err
    path.write_text("100\n2.5\n")
    code, _, err = _run(capsys, ["metrics", "--class-counts", str(path)])
    assert code == 1 and f"{path}:2" in err


def test_missing_count_file(capsys, tmp_path):
    missing = tmp_path / "no-such-counts.txt"
    code, out, err = _run(capsys, ["metrics", "--class-counts", str(missing)])
    assert code != 0 and "no-such-counts.txt" in err and out == ""


def test_neither_file_nor_config(capsys):
    code, out, err = _run(capsys, ["metrics"])
    assert code == 2 and out == "" and "--class-counts" in err


def test_both_file_and_config(capsys, count_file):
    code, out, err = _run(capsys, ["metrics", str(ROOT / "ray_config.yaml"), "--class-counts", str(count_file)])
    assert code == 2 and out == "" and "--class-counts" in err


def test_missing_config_file(capsys, tmp_path):
    code, out, err = _run(capsys, ["metrics", str(tmp_path / "gone.yaml")])
    assert code == 2 and "gone.yaml" in err and out == ""


# --------------------------------------------------------------------------- CONFIG (digits-LT)


def _digits_lt_counts() -> np.ndarray:
    """ray_config.yaml's training counts, straight from scikit-learn's digits.

    test: the first 40 images of each digit; LDAM IF 10 on the rest,
    n_i = int(n_max * 0.1 ** (i / 9)) with n_max the largest remaining class;
    a class that would keep all its images gives 10 to validation.
    """
    from sklearn.datasets import load_digits

    labels = load_digits().target
    remaining = np.array([np.sum(labels == c) - 40 for c in range(10)])
    n_max = int(remaining.max())
    wanted = np.array([int(n_max * 0.1 ** (i / 9)) for i in range(10)])
    return np.minimum(wanted, remaining - 10)


def test_config_form_on_digits(capsys):
    counts = _digits_lt_counts()
    assert counts[0] == counts.max() and counts[-1] == counts.min()  # the construction is long-tailed
    result = _metrics_json(capsys, [str(ROOT / "ray_config.yaml")])

    classes = [c for s in result["subsets"] for c in s["classes"]]
    assert sorted(classes) == list(range(10))  # every class exactly once
    assert len(result["subsets"]) == 3  # split.num_subsets: 3

    assert result["entire"]["ratio"] == pytest.approx(counts.max() / counts.min())
    total, num = counts.sum(), len(counts)
    assert result["entire"]["abs"] == pytest.approx(sum(abs(1 / num - n / total) for n in counts))
    assert result["entire"]["kl"] == pytest.approx(_kl([int(n) for n in counts]))
    ascending = sorted(int(n) for n in counts)
    gini = sum((2 * i - num - 1) * n for i, n in enumerate(ascending, start=1)) / (num * total)
    assert result["entire"]["gini"] == pytest.approx(gini)
    for subset in result["subsets"]:
        sub = counts[subset["classes"]]
        assert subset["ratio"] == pytest.approx(sub.max() / sub.min())
    # balanced split: adjacent cardinality, most populous first
    firsts = [s["classes"] for s in result["subsets"]]
    assert firsts[0][0] == 0 and firsts[-1][-1] == 9


def test_config_form_with_thresholds(capsys):
    counts = _digits_lt_counts()
    result = _metrics_json(capsys, [str(ROOT / "ray_config.yaml"), "--thresholds", "40,100"])
    expected = [
        [c for c in range(10) if counts[c] >= 100],
        [c for c in range(10) if 40 < counts[c] < 100],
        [c for c in range(10) if counts[c] <= 40],
    ]
    assert [s["classes"] for s in result["subsets"]] == [e for e in expected if e]


# --------------------------------------------------------------------------- status


def test_status_of_a_non_run_directory(capsys, tmp_path):
    code, out, err = _run(capsys, ["status", str(tmp_path)])
    assert code != 0
    assert "manifest.json" in err and str(tmp_path) in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_status_of_a_missing_directory(capsys, tmp_path):
    code, _, err = _run(capsys, ["status", str(tmp_path / "never-ran")])
    assert code != 0 and "manifest.json" in err
