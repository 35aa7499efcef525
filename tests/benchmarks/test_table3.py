"""benchmarks/table3.py's statistics over seeds: paired differences, the verdict rule, the premise table.

Every number is computed by hand here from made-up per-seed results.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.table3 import claims_over_seeds, paired, premise, render, variants_over_seeds


def test_paired_mean_standard_error_and_verdicts_by_hand():
    # d = 1, 2, 3 points: mean 2, sample sd 1, se 1/sqrt(3) = 0.577; 2 > 2 * 0.577: holds
    got = paired([0.01, 0.02, 0.03])
    assert got["n"] == 3 and got["mean"] == pytest.approx(0.02) and got["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert got["verdict"] == "holds"
    assert paired([-0.01, -0.02, -0.03])["verdict"] == "fails"
    # d = -1, 1, 3 points: mean 1, sd 2, se 1.155; 1 < 2.31: not separated
    assert paired([-0.01, 0.01, 0.03])["verdict"] == "not separated"
    # exactly two standard errors is not "more than": d = 0, 2: mean 1, sd sqrt(2), se 1; 1 < 2
    assert paired([0.0, 0.02])["verdict"] == "not separated"
    # one seed has no standard error, whatever its difference
    one = paired([0.05])
    assert one["se"] is None and one["verdict"] == "not separated"


def row(overall: float, subsets: dict, experts: dict | None = None, label: str = "x") -> dict:
    return {
        "label": label, "overall": overall, "subsets": subsets, "many": overall, "medium": None, "few": overall,
        "shot_rule": "many N>=100, few N<=20", "paper_imagenet_lt_overall": None, "distill_seconds": 10.0,
        # the student within each subset: made up as its accuracy on the subset (the premise reads it)
        "experts": {name: {"accuracy": acc, "classes": [0], "student_accuracy_within_subset": subsets[name]}
                    for name, acc in (experts or {}).items()},
    }


RUNS = {
    0: {"ins_samp": row(0.30, {"a": 0.5, "b": 0.1}), "cls_samp": row(0.50, {"a": 0.40, "b": 0.60}, {"a": 0.80, "b": 0.55}),
        "lfme": row(0.52, {"a": 0.5, "b": 0.5})},
    1: {"cls_samp": row(0.48, {"a": 0.42, "b": 0.58}, {"a": 0.78, "b": 0.60}), "lfme": row(0.51, {"a": 0.5, "b": 0.5})},
    2: {"cls_samp": row(0.49, {"a": 0.38, "b": 0.62}, {"a": 0.82, "b": 0.61}), "lfme": row(0.53, {"a": 0.5, "b": 0.5})},
}


def test_claims_pair_each_seed_and_skip_claims_without_both_variants():
    claims = {c["claim"]: c for c in claims_over_seeds(RUNS)}
    lfme = claims["LFME beats class sampling"]
    assert lfme["differences"] == pytest.approx({0: 0.02, 1: 0.03, 2: 0.04})  # 52-50, 51-48, 53-49
    assert lfme["mean"] == pytest.approx(0.03) and lfme["se"] == pytest.approx(0.01 / math.sqrt(3)) and lfme["verdict"] == "holds"
    sampling = claims["class sampling beats instance sampling"]  # instance sampling ran with seed 0 only
    assert sampling["differences"] == pytest.approx({0: 0.20}) and sampling["verdict"] == "not separated"
    assert "KD helps class sampling" not in claims  # cls_samp_kd never ran


def test_variants_report_mean_and_sample_standard_deviation():
    v = variants_over_seeds(RUNS)
    assert v["cls_samp"]["seeds"] == [0, 1, 2] and v["ins_samp"]["seeds"] == [0]
    assert v["cls_samp"]["overall"]["mean"] == pytest.approx(0.49) and v["cls_samp"]["overall"]["std"] == pytest.approx(0.01)
    assert v["ins_samp"]["overall"]["std"] == 0.0
    assert v["cls_samp"]["medium"] is None  # no such class in any seed


def test_premise_is_expert_minus_class_sampled_student_within_the_subset_per_subset():
    rows = {p["subset"]: p for p in premise(RUNS)}
    # a: 80-40, 78-42, 82-38 = 40, 36, 44 points: far ahead
    assert rows["a"]["gap"]["mean"] == pytest.approx(0.40) and rows["a"]["gap"]["verdict"] == "holds"
    # b: 55-60, 60-58, 61-62 = -5, 2, -1 points: not separated
    assert rows["b"]["gap"]["mean"] == pytest.approx(-0.04 / 3) and rows["b"]["gap"]["verdict"] == "not separated"


def test_render_states_the_rule_and_every_claim():
    meta = {"preset": "p.yaml", "scale": "cpu", "command": "python benchmarks/table3.py p.yaml", "overrides": [],
            "wall_seconds": 60.0, "versions": {}}
    text = render(RUNS, meta)
    assert "two standard errors" in text and "seeds 0, 1, 2" in text
    assert "| LFME beats class sampling | +2.0, +3.0, +4.0 | +3.0 | 0.6 | holds |" in text
    assert "expert ahead" in text and "49.0 ± 1.0" in text
    # every table's alignment row has as many cells as its header
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("|---"):
            assert lines[i + 1].count("|") == line.count("|"), line


def test_premise_include_joins_an_earlier_outputs_seeds_and_a_seed_scored_now_wins():
    from benchmarks.premise import merged

    now = {"lfme/few": {"variant": "lfme", "subset": "few", "seeds": {1: {"expert": 0.5}, 2: {"expert": 0.6}}}}
    earlier = {  # as read back from premise.json: seed keys are strings
        "lfme/few": {"variant": "lfme", "subset": "few", "seeds": {"0": {"expert": 0.4}, "2": {"expert": 0.9}}},
        "lfme/many": {"variant": "lfme", "subset": "many", "seeds": {"0": {"expert": 0.7}}},
    }
    rows = merged(now, earlier)
    assert rows["lfme/few"]["seeds"] == {0: {"expert": 0.4}, 1: {"expert": 0.5}, 2: {"expert": 0.6}}
    assert list(rows["lfme/few"]["seeds"]) == [0, 1, 2]
    assert rows["lfme/many"] == {"variant": "lfme", "subset": "many", "seeds": {0: {"expert": 0.7}}}
    assert now["lfme/few"]["seeds"] == {1: {"expert": 0.5}, 2: {"expert": 0.6}}  # the input is not changed


def test_include_takes_an_earlier_table_of_the_same_protocol_and_names_the_stage_of_another(tmp_path):
    import json

    from benchmarks.table3 import included_runs
    from rundir.config import load_config

    overrides = ["distill.epochs=3"]
    rows = {"cls_samp": {"overall": 0.5}}

    def table(config) -> str:
        path = tmp_path / f"table-{len(list(tmp_path.iterdir()))}.json"
        meta = {"scale": "cpu", "overrides": overrides, "config": config.to_dict()}
        path.write_text(json.dumps({"meta": meta, "runs": {"4": rows}}))
        return str(path)

    same = table(load_config(None, overrides + ["seed=4", "run_dir=/elsewhere/base"]))
    assert included_runs([same], None, "cpu", overrides) == {4: rows}
    other = table(load_config(None, overrides + ["seed=4", "experts.lr=0.5"]))  # experts trained otherwise
    with pytest.raises(SystemExit, match=r"its experts stage has other settings than this run's None at seed 4"):
        included_runs([other], None, "cpu", overrides)
    with pytest.raises(SystemExit, match=r"its scale: 'cpu'; this run's: 'cpu-long'"):
        included_runs([same], None, "cpu-long", overrides)


def test_each_variant_sets_the_switches_its_row_names():
    """What each variant's student runs with: its --set switches loaded on the default config."""
    from benchmarks.table3 import VARIANTS
    from rundir.config import load_config

    def distill(name):
        return load_config("ray_config.yaml", VARIANTS[name][1]).distill

    official = distill("lfme_official")
    assert (official.spis_init, official.spis_horizon, official.spis_clip, official.spis_on) == ("official", "half", False, "logits")
    paper = distill("lfme")
    assert (paper.spis_init, paper.spis_horizon, paper.spis_clip, paper.spis_on) == ("paper", "full", True, "loss")
    assert (paper.sampling, paper.kd, paper.spes, paper.spis, paper.teachers) == ("class", True, True, True, "cache")
    assert distill("lfme_live").teachers == "live" and distill("cls_samp").kd is False
    assert distill("ins_samp_kd_spes").sampling == "instance"
    for k in (2, 4, 8):
        config = load_config("ray_config.yaml", VARIANTS[f"lfme_views{k}"][1])
        assert config.cache.views == k and config.distill.teachers == "cache" and config.distill.spis
        assert config.cache.allot == "uniform"
    for k in (4, 8):
        config = load_config("ray_config.yaml", VARIANTS[f"lfme_views{k}_draws"][1])
        assert (config.cache.views, config.cache.allot, config.distill.sampling, config.distill.teachers) == (k, "draws", "class", "cache")
    assert load_config("ray_config.yaml", VARIANTS["lfme_topk"][1]).cache.top_k == 5
    la, lfme_la = distill("logit_adj"), distill("lfme_logit_adj")
    assert (la.sampling, la.kd, la.base_loss) == ("instance", False, "logit_adjusted")
    assert (lfme_la.sampling, lfme_la.kd, lfme_la.spes, lfme_la.spis, lfme_la.base_loss) == ("instance", True, True, True, "logit_adjusted")


def test_the_claims_give_each_subsets_paired_difference():
    runs = {
        s: {"lfme_live": row(0.5 + d, {"a": 0.6 + d, "b": 0.4}), "lfme": row(0.5, {"a": 0.6, "b": 0.4 + d})}
        for s, d in enumerate((0.01, 0.02, 0.03))
    }
    (claim,) = [c for c in claims_over_seeds(runs) if c["better"] == "lfme_live"]
    assert claim["subsets"]["a"]["mean"] == pytest.approx(0.02) and claim["subsets"]["a"]["verdict"] == "holds"
    assert claim["subsets"]["b"]["mean"] == pytest.approx(-0.02) and claim["subsets"]["b"]["verdict"] == "fails"


def test_the_premise_leaves_out_reports_without_the_within_subset_accuracy():
    old = {s: {name: {**r, "experts": {k: {"accuracy": e["accuracy"], "classes": [0]} for k, e in r["experts"].items()}}
               for name, r in rows.items()} for s, rows in RUNS.items()}
    assert premise(old) == []
