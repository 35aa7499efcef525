"""KD's premise on equal terms: each expert against the students on the expert's own classes, both ways.

    python -m benchmarks.premise /work/bench/c10-long [--variants cls_samp,lfme]

Table 3 (`benchmarks.table3`) compares an expert with the class-sampled
student on the expert's test samples, the expert predicting among its own
classes (its whole label space) and the student among all classes. That
favours the expert twice: it never confuses a sample with another subset's
class, and it was trained for exactly that. This script adds the comparison
on equal terms: the student's accuracy on the same samples when it, too,
predicts among the subset's classes only (`lfme.evaluation.subset_accuracy`
with `restrict=True`, the expert's Acc_E). KD's target for subset l is a
softmax over S_l's classes, so "within S_l" is what expert l can teach.

It reads a finished `benchmarks.table3` output folder (`<out>/seed-<s>/<variant>`
run directories), runs every student on the test set once (on the CPU, in
its saved precision), and writes `<out>/premise.json` and `<out>/premise.md`.
`--include earlier/premise.json` adds the seeds of an earlier output (say, a
seed committed by a session whose run directories are gone); a seed scored
now replaces the same seed's rows from there. Unlike `benchmarks.table3
--include`, nothing checks that the earlier output is of the same protocol:
include the premise.json that belongs to a table.json you included there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from lfme.engine import predict
from lfme.evaluation import subset_accuracy
from lfme.precision import resolve
from lfme.report import markdown_table
from lfme.storage import read_json, write_json_atomic, write_text_atomic
from rundir.config import load_config
from rundir.data import make_loader
from rundir.layout import load_split, load_student, report_dir, student_file


def student_on_subsets(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per subset: the run's student on the subset's test samples, among all classes and among the subset's."""
    config = load_config(run_dir / "config.yaml")
    split = load_split(str(run_dir), config.data)
    precision, _ = resolve(config.precision, torch.device("cpu"))
    model = precision.prepare(load_student(student_file(str(run_dir)), split.channels, torch.device("cpu")))
    loader = make_loader(split.test, config.data, False, config.evaluate.batch_size)
    pred = predict(model, loader, torch.device("cpu"), precision)
    return {
        s.name: {
            "all_classes": subset_accuracy(pred.logits, pred.labels, s.classes),
            "within_subset": subset_accuracy(pred.logits, pred.labels, s.classes, restrict=True),
        }
        for s in split.subsets
    }


def mean_se(values: list[float]) -> tuple[float, float | None]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.fmean(values), se


def merged(rows: dict[str, dict], earlier: dict[str, dict]) -> dict[str, dict]:
    """`rows` with the seeds of an earlier premise.json added (JSON's seed keys are strings); `rows` wins a seed both have."""
    out = {key: {**row, "seeds": dict(row["seeds"])} for key, row in rows.items()}
    for key, row in earlier.items():
        target = out.setdefault(key, {"variant": row["variant"], "subset": row["subset"], "seeds": {}})
        for seed, values in row["seeds"].items():
            target["seeds"].setdefault(int(seed), values)
    for row in out.values():
        row["seeds"] = dict(sorted(row["seeds"].items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.premise", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="a benchmarks.table3 output folder")
    parser.add_argument("--variants", default="cls_samp,cls_samp_kd,lfme", help="comma-separated variants to score")
    parser.add_argument(
        "--include", action="append", default=[], metavar="PREMISE_JSON",
        help="an earlier premise.json whose seeds join these (those not scored now)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    seeds = sorted(int(p.name.split("-")[1]) for p in out.glob("seed-*"))
    torch.set_num_threads(2)
    rows: dict[str, dict] = {}
    for seed in seeds:
        for variant in args.variants.split(","):
            run_dir = out / f"seed-{seed}" / variant
            if not (run_dir / "evaluate" / "report.json").exists():
                continue
            experts = read_json(Path(report_dir(str(run_dir))) / "report.json")["experts"]
            for subset, accuracy in student_on_subsets(run_dir).items():
                row = rows.setdefault(f"{variant}/{subset}", {"variant": variant, "subset": subset, "seeds": {}})
                row["seeds"][seed] = {"expert": experts[subset]["accuracy"], **accuracy}
            print(f"seed {seed} {variant}: scored", flush=True)
    for path in args.include:
        rows = merged(rows, read_json(path))

    table = []
    for row in rows.values():
        per_seed = row["seeds"].values()
        gap_all = mean_se([100 * (r["expert"] - r["all_classes"]) for r in per_seed])
        gap_within = mean_se([100 * (r["expert"] - r["within_subset"]) for r in per_seed])
        row["gap_all_classes"], row["gap_within_subset"] = gap_all, gap_within
        table.append(
            [
                row["variant"],
                row["subset"],
                str(len(row["seeds"])),
                f"{statistics.fmean(100 * r['expert'] for r in per_seed):.1f}",
                f"{statistics.fmean(100 * r['all_classes'] for r in per_seed):.1f}",
                f"{statistics.fmean(100 * r['within_subset'] for r in per_seed):.1f}",
                f"{gap_all[0]:+.1f}" + (f" ± {gap_all[1]:.1f}" if gap_all[1] is not None else ""),
                f"{gap_within[0]:+.1f}" + (f" ± {gap_within[1]:.1f}" if gap_within[1] is not None else ""),
            ]
        )
    lines = [
        f"# KD's premise on equal terms ({out})",
        "",
        "Test top-1 (%) on each expert's test samples, mean over seeds; gaps: expert minus student, mean ± standard error.",
        "",
        *markdown_table(
            ["student", "subset", "seeds", "expert (its classes)", "student (all classes)", "student (the subset's classes)",
             "gap, all classes", "gap, subset's classes"],
            table,
            ["l", "l", "r", "r", "r", "r", "r", "r"],
        ),
        "",
    ]
    write_json_atomic(out / "premise.json", rows)
    write_text_atomic(out / "premise.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
