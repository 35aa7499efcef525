"""benchmarks/across.py: a claim between two Table 3 files, paired by the seeds both ran; numbers by hand."""

from __future__ import annotations

import json

import pytest

from benchmarks.across import across, load, main


def table(overrides: list[str], runs: dict, preset: str = "configs/tiny.yaml") -> dict:
    return {"meta": {"preset": preset, "scale": "cpu-long", "overrides": overrides}, "runs": runs}


def row(overall: float, many: float, switches: list[str] | None = None) -> dict:
    return {"overall": overall, "subsets": {"many": many, "few": overall}, "switches": switches or ["distill.kd=true"]}


JOINT = table(["seed=x", "experts.init=joint"], {
    "0": {"lfme": row(0.20, 0.30), "cls_samp": row(0.15, 0.2, ["kd=false"])},
    "1": {"lfme": row(0.22, 0.31), "cls_samp": row(0.16, 0.2, ["kd=false"])},
    "2": {"lfme": row(0.21, 0.33), "cls_samp": row(0.15, 0.2, ["kd=false"])},
})
SCRATCH = table(["seed=x", "experts.init=scratch"], {
    "0": {"lfme": row(0.19, 0.29), "cls_samp": row(0.16, 0.2, ["kd=false"])},
    "1": {"lfme": row(0.20, 0.31), "cls_samp": row(0.16, 0.2, ["kd=false"])},
    "2": {"lfme": row(0.20, 0.30), "cls_samp": row(0.15, 0.2, ["kd=false"])},
    "3": {"lfme": row(0.50, 0.50), "cls_samp": row(0.15, 0.2, ["kd=false"])},  # a seed the other did not run: left out
})


def test_the_claim_pairs_the_seeds_both_ran_and_judges_them_by_the_rule():
    got = across(("a", JOINT, "lfme"), ("b", SCRATCH, "lfme"), "joint beats scratch")
    # overall differences 1, 2, 1 points: mean 4/3, sample sd sqrt(1/3) = 0.577, se 0.577 / sqrt(3) = 1/3; 1.33 > 0.67: holds
    assert list(got["differences"]) == ["0", "1", "2"]
    assert [round(100 * d, 6) for d in got["differences"].values()] == [1.0, 2.0, 1.0]
    assert got["mean"] == pytest.approx(0.04 / 3) and got["se"] == pytest.approx(0.01 / 3)
    assert got["verdict"] == "holds"
    # many: 1, 0, 3 points: mean 4/3, sd 1.528, se 0.882; 1.33 < 1.76: not separated
    assert got["subsets"]["many"]["mean"] == pytest.approx(0.04 / 3) and got["subsets"]["many"]["verdict"] == "not separated"
    assert got["overrides"] == {"only_better": ["experts.init=joint"], "only_worse": ["experts.init=scratch"]}
    # class sampling uses no expert and the same switches in both: its difference is the machines', printed as a baseline
    assert [round(100 * d, 6) for d in got["baselines"]["cls_samp"].values()] == [-1.0, 0.0, 0.0]


def test_other_presets_or_a_missing_variant_stop_with_the_field_named(tmp_path):
    other = table([], {"0": {"lfme": row(0.1, 0.1)}}, preset="configs/cifar.yaml")
    with pytest.raises(SystemExit, match="their preset differs"):
        across(("a", JOINT, "lfme"), ("b", other, "lfme"), "x")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(JOINT))
    with pytest.raises(SystemExit, match=r"no variant 'lfme_live' in seed\(s\) 0, 1, 2"):
        load(f"{path}:lfme_live")
    with pytest.raises(SystemExit, match="expected TABLE_JSON:VARIANT"):
        load(str(path))


def test_the_command_prints_the_claim_row(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(JOINT))
    b.write_text(json.dumps(SCRATCH))
    assert main([f"{a}:lfme", f"{b}:lfme", "--claim", "joint beats scratch"]) == 0
    out = capsys.readouterr().out
    assert "| joint beats scratch | +1.0, +2.0, +1.0 | +1.3 | 0.3 | holds |" in out
    assert "Baseline cls_samp (same switches, no expert), first minus second per seed (points): 0: -1.0, 1: +0.0, 2: +0.0" in out
