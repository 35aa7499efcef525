"""`lfme`: run the pipeline, show a run's status, measure a data set's imbalance.

    lfme run [CONFIG] [--run-dir DIR] [--stage NAME] [--set key=value ...]
    lfme status RUN_DIR
    lfme tune [CONFIG] [--run-dir DIR] [--num-samples N] [--resume] [--set key=value ...]
    lfme metrics (--class-counts FILE | CONFIG) [--thresholds 20,100] [--json]

Errors a user can fix (a bad config, a missing file, a corrupt image, a cache
built from other experts) print one line naming what is wrong and exit with a
non-zero status; nothing already on disk is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.config import ConfigError, load_config

EXIT_USAGE = 2
EXIT_FAILED = 1


def _summary_rows(manifest_data: dict) -> list[dict]:
    rows = []
    for stage, rec in manifest_data.get("stages", {}).items():
        summary = rec.get("summary") or {}
        headline = ", ".join(
            f"{k}={_short(v)}" for k, v in summary.items() if not isinstance(v, (dict, list))
        )
        rows.append(
            {
                "stage": stage,
                "status": rec["status"],
                "fingerprint": rec["fingerprint"],
                "seconds": rec.get("duration_s"),
                "attempts": rec.get("attempts"),
                "resumed": "yes" if rec.get("resumes") else "",
                "result": headline[:80],
            }
        )
    return rows


def _short(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The --set values, with --run-dir as one more (so it is validated like the config's own run_dir)."""
    sets = list(args.set or [])
    if args.run_dir is not None:
        sets.append(f"run_dir={json.dumps(args.run_dir)}")
    return sets


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))  # before the heavy imports: a bad config fails at once

    from lfme import storage
    from lfme.report import summary_table
    from pipeline.runner import run_pipeline

    manifest = run_pipeline(config, only=args.stage)
    print()
    print(summary_table(_summary_rows(manifest.data), ["stage", "status", "seconds", "attempts", "resumed", "result"]))
    evaluate = manifest.data["stages"].get("evaluate", {}).get("summary")
    if evaluate and args.stage in (None, "evaluate"):
        report = storage.join(storage.absolute(config.run_dir), "evaluate", "report.md")
        print(f"\ntest top-1 {100 * evaluate['overall']:.1f}%  (report: {report})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    sets = _overrides(args)
    if args.num_samples is not None:
        sets.append(f"tune.num_samples={args.num_samples}")
    config = load_config(args.config, sets)  # before the heavy imports: a bad config fails at once

    from pipeline.tune import run_tune

    summary = run_tune(config, resume=args.resume)
    values = ", ".join(f"{k}={v}" for k, v in summary["best_values"].items())
    print(f"\nbest trial {summary['best_trial']}: {values}; test top-1 {100 * summary['test']['overall']:.1f}%")
    print(f"results: {summary['dir']}/trials.md, best config: {summary['dir']}/best_config.yaml")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lfme import storage
    from lfme.report import summary_table

    path = storage.join(args.run_dir, "manifest.json")
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} not found: {args.run_dir} is not a run directory")
    data = storage.read_json(path)
    print(f"run {args.run_dir}  (created {data.get('created_at')}, updated {data.get('updated_at')})")
    print(summary_table(_summary_rows(data), ["stage", "status", "fingerprint", "seconds", "attempts", "resumed", "result"]))
    return 0


def read_class_counts(path: str) -> np.ndarray:
    """One count per line, line i = class i (blank lines and # comments ignored)."""
    counts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected a class count, got {text!r}") from None
        if value < 1 or value != int(value):
            raise ValueError(f"{path}:{number}: a class count must be a positive integer, got {text!r}")
        counts.append(int(value))
    if not counts:
        raise ValueError(f"{path}: no class counts in the file")
    return np.asarray(counts, dtype=np.int64)


def cmd_metrics(args: argparse.Namespace) -> int:
    from lfme.metrics import subset_metrics
    from lfme.subsets import split_by_thresholds
    from stages.split import make_subsets, metrics_table, training_counts

    if (args.class_counts is None) == (args.config is None):
        raise ConfigError("metrics: give either --class-counts FILE or a CONFIG, not both or neither")
    if args.class_counts is not None:
        if not Path(args.class_counts).is_file():
            raise FileNotFoundError(f"--class-counts: file not found: {args.class_counts}")
        counts = read_class_counts(args.class_counts)
        split_cfg = None
    else:
        config = load_config(args.config)
        counts, _ = training_counts(config.data)
        split_cfg = config.split
    if args.thresholds is not None:
        try:
            thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"--thresholds: expected numbers like 20,100, got {args.thresholds!r}") from None
        convention = split_cfg.convention if split_cfg else "inclusive"
        subsets = split_by_thresholds(counts, thresholds, convention=convention)
    elif split_cfg is not None:
        subsets = make_subsets(counts, split_cfg)
    else:
        subsets = split_by_thresholds(counts, [20, 100])
    result = subset_metrics(counts, subsets)
    print(json.dumps(result, indent=2) if args.json else metrics_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfme", description="LFME long-tailed distillation on Ray")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline (skips stages that are up to date)")
    run.add_argument("config", nargs="?", default="ray_config.yaml", help="YAML config (default: ray_config.yaml)")
    run.add_argument("--run-dir", help="run directory (default: the config's run_dir)")
    run.add_argument("--stage", help="run only this stage: split, experts, cache, distill, evaluate")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. distill.epochs=5")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="show what each stage of a run did")
    status.add_argument("run_dir")
    status.set_defaults(func=cmd_status)

    tune = sub.add_parser("tune", help="sweep the distill stage's hyperparameters over the run's teacher cache")
    tune.add_argument("config", nargs="?", default="ray_config.yaml", help="YAML config with a tune section (default: ray_config.yaml)")
    tune.add_argument("--run-dir", help="run directory (default: the config's run_dir); split, experts and cache run first if not done")
    tune.add_argument("--num-samples", type=int, help="trials to draw (overrides tune.num_samples)")
    tune.add_argument("--resume", action="store_true", help="continue the interrupted sweep tune.name of this run")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. tune.name=lr-sweep")
    tune.set_defaults(func=cmd_tune)

    metrics = sub.add_parser("metrics", help="imbalance metrics of a class-count vector and its subsets (paper Table 1)")
    metrics.add_argument("config", nargs="?", help="YAML config whose long-tailed training set to measure")
    metrics.add_argument("--class-counts", help="file with one count per line, line i = class i")
    metrics.add_argument("--thresholds", help="comma-separated thresholds, e.g. 20,100")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.set_defaults(func=cmd_metrics)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"lfme: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lfme: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # a user-facing CLI: one line, not a traceback
        print(f"lfme: error: {_root_message(err)}", file=sys.stderr)
        return EXIT_FAILED


def _root_message(err: BaseException) -> str:
    """Ray wraps worker errors; the innermost one is what the user can act on."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    sys.exit(main())
