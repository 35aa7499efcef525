"""speed.md from saved results of `python -m benchmarks.speed` (docs/results/speed-quick-cpu*.json), without running it.

Each figure of the goals table is recomputed here from the result's raw
numbers (rounds, epochs, runs) and must appear as the report formats it, and
"met" must agree with GOALS. speed-quick-cpu.json was saved before parts
(f)-(h) existed: its report has (a)-(e) only. The last column holds numbers
with labels, not explanations (those are in the package docstring).
"""

from __future__ import annotations

import copy
import json
import statistics

import pytest

from benchmarks.speed.limits import limits
from benchmarks.speed.render import render
from benchmarks.speed.settings import GOALS, NOISY_SPREAD
from tests.pipeline_helpers import REPO

RESULTS = REPO / "docs" / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(scope="module")
def before_f():
    """A --quick result saved before parts (f)-(h) existed (and before cache_speed recorded its precision)."""
    return load("speed-quick-cpu.json")


@pytest.fixture(scope="module")
def full():
    """A --quick result with every part (a)-(h)."""
    return load("speed-quick-cpu-issue9.json")


def goals_rows(report: str) -> dict[str, list[str]]:
    """The goals table's rows by figure letter: [figure, measured, goal, met, details]."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ("):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0][1]] = cells
    return rows


def later_epochs(runs: list[dict]) -> float:
    """The median of every run's epochs after the first (the benchmark's basis for a run kind)."""
    return statistics.median(s for run in runs for s in run["epoch_s"][1:])


def test_the_figures_of_a_result_saved_before_f_to_h(before_f):
    report = render(before_f)
    rows = goals_rows(report)
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    assert "## (f)" not in report and "## (g)" not in report and "## (h)" not in report

    rounds = before_f["cache_speed"]["training"]["rounds"]
    ratio = statistics.median(r["live"]["seconds"] / r["cached"]["seconds"] for r in rounds)  # equal images per round
    assert rows["a"][1] == f"{ratio:.2f}x" == "1.72x"
    assert rows["a"][3] == ("yes" if ratio >= GOALS["cache_ratio"] else "no") == "no"

    distill = before_f["distill"]
    by_mode = {mode: later_epochs([run for run in distill["runs"] if run["mode"] == mode]) for mode in ("plain", "ray")}
    overhead = by_mode["ray"] / by_mode["plain"] - 1
    assert rows["c"][1] == f"{100 * overhead:+.1f}%" == "+4.1%"
    assert rows["c"][3] == ("yes" if overhead <= GOALS["ray_overhead"] else "no") == "yes"

    experts = before_f["experts"]["runs"]
    assert rows["d"][1] == f"{experts['sequential']['wall_s'] / experts['concurrent']['wall_s']:.2f}x faster"
    decoding = before_f["decoding"]["epoch_s"]
    assert rows["e"][1] == f"{statistics.median(decoding['every_epoch']) / statistics.median(decoding['once']):.2f}x faster"

    cached_ms = before_f["cache_speed"]["training"]["modes"]["cached"]["ms_per_step"]
    live_ms = before_f["cache_speed"]["training"]["modes"]["live"]["ms_per_step"]
    bound = 1 + live_ms["teacher"] / (cached_ms["data"] + cached_ms["student"])
    assert rows["a"][4].startswith(f"1 + teacher / (data + student) = {bound:.2f}x;")


def test_the_figures_of_a_result_with_every_part(full):
    rows = goals_rows(render(full))
    assert sorted(rows) == list("abcdefgh")

    precision = full["precision"]
    speedups = {}
    for arch in ("resnet8", "resnet32"):
        mine = {p: [run for run in precision["runs"] if run["arch"] == arch and run["precision"] == p] for p in ("fp32", "bf16")}
        speedups[arch] = later_epochs(mine["fp32"]) / later_epochs(mine["bf16"])
    assert rows["f"][1].startswith(f"resnet8 {speedups['resnet8']:.2f}x, resnet32 {speedups['resnet32']:.2f}x (")
    assert rows["f"][3] == ("yes" if min(speedups.values()) >= GOALS["bf16_speedup"] else "no") == "no"

    loader = full["loader"]
    batched_ms = 1000 * statistics.median(loader["epoch_s"]["batched"]) / loader["batches"]
    step_ms = 1000 * later_epochs([r for r in precision["runs"] if r["arch"] == "resnet8" and r["precision"] == "bf16"]) / precision["batches"]
    share = batched_ms / step_ms  # batched / (batched + compute), compute = step - batched
    assert rows["g"][1].startswith(f"{100 * share:.1f}% (") and rows["g"][1].startswith("2.7%")
    assert rows["g"][3] == ("yes" if share <= GOALS["loader_share"] else "no") == "yes"

    trees = {label: full["default_run"]["runs"][label] for label in ("before", "after")}
    wall = statistics.median(run["wall_s"] for run in trees["after"])
    top1 = {label: statistics.median(run["top1"] for run in runs) for label, runs in trees.items()}
    assert rows["h"][1].startswith(f"{wall:.0f} s, test top-1 {100 * top1['after']:.2f}%")
    met = wall <= GOALS["default_run_s"] and top1["after"] >= top1["before"]
    assert rows["h"][3] == ("yes" if met else "no") == "yes"


@pytest.mark.parametrize("name", ["speed-quick-cpu.json", "speed-quick-cpu-issue9.json"])
def test_the_details_column_is_limits_and_states_no_causes(name):
    result = load(name)
    report = render(result)
    rows, lines = goals_rows(report), limits(result)
    assert {letter: row[4] for letter, row in rows.items()} == lines
    # Explanations of earlier versions of the report: causes it did not compute.
    for phrase in ("a backward costs", "Parquet's decoding", "Ray Train's controller", "the interpreter and imports", "load on the machine"):
        assert phrase not in report


def test_a_warning_states_the_spread_it_computed(full):
    assert "WARNING" not in render(full)
    noisy = copy.deepcopy(full)
    noisy["cache_speed"]["training"]["ratio_per_round"] = [1.0, 1.3]
    noisy["distill"]["modes"]["ray"]["epoch_spread"] = NOISY_SPREAD + 0.05
    # speed.md's own warning (benchmarks.cache_speed's report, quoted in (a)'s section, has one of its own)
    warning = [line for line in render(noisy).splitlines() if line.startswith("WARNING: repeats")]
    assert warning == [
        "WARNING: repeats disagree by more than 15%: (a): the rounds' ratios differ by 30%; (c): the ray epochs' times differ by 20%."
    ]
