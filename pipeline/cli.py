"""`lfme`: run the pipeline, show a run's status, measure a data set's imbalance.

    lfme run [CONFIG] [--run-dir DIR] [--stage NAME] [--reuse OTHER_RUN] [--set key=value ...] [--verbose] [--debug]
    lfme status RUN_DIR [--watch [SECONDS]]
    lfme verify RUN_DIR
    lfme predict RUN_DIR INPUT... [--top-k 5] [--out FILE.csv|FILE.parquet] [--root DIR] [--ray [--chunk N]]
    lfme export RUN_DIR OUT_DIR [--format safetensors|torchscript|onnx]
    lfme tune [CONFIG] [--run-dir DIR] [--num-samples N] [--resume] [--set key=value ...] [--verbose] [--debug]
    lfme metrics (--class-counts FILE | CONFIG) [--thresholds 20,100] [--json]

Errors a user can fix (a bad config, a missing file, a corrupt image, a cache
built from other experts) print one line naming what is wrong and exit with a
non-zero status; nothing already on disk is lost. An error raised in a Ray
worker is printed as the worker raised it (`Type: message`, out of Ray's
wrappers: `stages.ray_compat.user_error`).

`lfme run` and `lfme tune` keep a log file per command in the run directory,
`<run_dir>/logs/lfme-<command>-<time>-<pid>.log` (`pipeline.console.Console`): the console shows
our own lines (each stage's progress, the workers' progress lines) and, at the
end, one line for an error (naming the log file) or an interrupt; the log file
holds the same lines, everything Ray prints (its warnings, its internal error
lines, the workers' stderr) and an error's full traceback. `--debug` prints the
traceback on the console too, `--verbose` lets Ray print on the console as it
does by default.

Ctrl-C (SIGINT) during `lfme run` or `lfme tune` stops the running stage at
once (its Ray tasks cancelled, its Ray Train run aborted, each keeping its last
checkpoint), records it `interrupted`, and exits with 130; the same command
resumes. A second Ctrl-C while stopping exits at once, and so does the driver
itself when stopping takes more than `pipeline.console.GRACE_S` seconds (the next command finds
the stage left `running` by a driver that is gone and resumes it the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from pipeline.console import EXIT_INTERRUPTED, Console, interrupts
from rundir.config import load_config
from rundir.fields import ConfigError
from stages import ray_compat

EXIT_USAGE = 2
EXIT_FAILED = 1

def _overrides(args: argparse.Namespace) -> list[str]:
    """The --set values, with --run-dir as one more (so it is validated like the config's own run_dir)."""
    sets = list(args.set or [])
    if args.run_dir is not None:
        sets.append(f"run_dir={json.dumps(args.run_dir)}")
    return sets


def open_ray(args: argparse.Namespace, config):
    """The command's Ray session; `main` closes it after the command's last line is out."""
    from pipeline.ray_session import RaySession

    args.ray = RaySession(config.ray, log=args.console.say)
    return args.ray


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))  # before the heavy imports: a bad config fails at once

    from lfme import storage
    from pipeline.lease import Lease

    with Lease(storage.absolute(config.run_dir)) as lease:  # a busy run directory refuses before anything else
        return run_with_lease(args, config, lease)


def run_with_lease(args: argparse.Namespace, config, lease) -> int:
    from lfme import storage
    from lfme.report import summary_table
    from pipeline.reuse import reuse_stages
    from pipeline.status import summary_rows
    from pipeline.runner import run_pipeline
    from rundir.layout import report_dir

    console: Console = args.console
    console.open(config.run_dir, "run")
    if args.reuse is not None:
        reuse_stages(config, args.reuse, config.run_dir, log=console.say)
    manifest = run_pipeline(config, only=args.stage, through=args.through, log=console.say, lease=lease, ray=open_ray(args, config))
    console.say("")
    console.say(summary_table(summary_rows(manifest.data), ["stage", "status", "seconds", "attempts", "resumed", "result"]))
    evaluate = manifest.data["stages"].get("evaluate", {}).get("summary")
    if evaluate and args.stage in (None, "evaluate") and args.through in (None, "evaluate"):
        report = storage.join(report_dir(storage.absolute(config.run_dir)), "report.md")
        console.say(f"\ntest top-1 {100 * evaluate['overall']:.1f}%  (report: {report})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    sets = _overrides(args)
    if args.num_samples is not None:
        sets.append(f"tune.num_samples={args.num_samples}")
    config = load_config(args.config, sets)  # before the heavy imports: a bad config fails at once

    from lfme import storage
    from pipeline.lease import Lease

    with Lease(storage.absolute(config.run_dir)) as lease:  # a busy run directory refuses before anything else
        from pipeline.tune import run_tune
        from rundir.layout import sweep_dir

        console: Console = args.console
        console.open(config.run_dir, "tune")
        args.sweep = sweep_dir(storage.absolute(config.run_dir), config.tune.name)
        summary = run_tune(config, resume=args.resume, log=console.say, lease=lease, ray=open_ray(args, config))
    values = ", ".join(f"{k}={v}" for k, v in summary["best_values"].items())
    console.say(f"\nbest trial {summary['best_trial']}: {values}; test top-1 {100 * summary['test']['overall']:.1f}%")
    console.say(f"results: {summary['dir']}/trials.md, best config: {summary['dir']}/best_config.yaml")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The stage table and the driver; with --watch, again every few seconds (with the latest epoch line) until Ctrl-C."""
    from pipeline.status import latest_progress, status_text

    if args.watch is None:
        print(status_text(args.run_dir))
        return 0
    if args.watch <= 0:
        raise ConfigError(f"--watch: seconds between refreshes must be > 0, got {args.watch}")
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    # Ctrl-C ends the watch even where the process came in with SIGINT ignored (a job started in the
    # background by a shell), as `lfme run` installs its own handler too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            latest = latest_progress(args.run_dir)
            print(f"{clear}{status_text(args.run_dir)}\n{latest or 'no epoch finished yet'}\n", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_verify(args: argparse.Namespace) -> int:
    """Every output of every done stage against its recorded size and SHA-256."""
    from pipeline.manifest import Manifest
    from pipeline.runner import damaged_outputs
    from pipeline.status import manifest_data

    manifest_data(args.run_dir)
    manifest = Manifest.load(args.run_dir)
    damaged = 0
    for stage, record in manifest.records().items():
        if record.status != "done":
            print(f"{stage}: {record.status}, nothing to verify")
            continue
        problems = damaged_outputs(args.run_dir, stage, record, hash_up_to=math.inf)
        damaged += len(problems)
        if not record.outputs:
            print(f"{stage}: no outputs recorded (written before outputs were recorded)")
        for problem in problems:
            print(f"{stage}: DAMAGED: {problem}")
        if record.outputs and not problems:
            print(f"{stage}: ok ({len(record.outputs)} files, sizes and SHA-256 as written)")
        if stage == "split":
            changes = data_changes(args.run_dir)
            damaged += len(changes)
            for change in changes:
                print(f"split: DATA CHANGED since the split: {change}")
    if damaged:
        print(f"{damaged} damaged file(s) or changed data: `lfme run` reruns the stages that read or wrote them", file=sys.stderr)
        return EXIT_FAILED
    return 0


def data_changes(run_dir: str) -> list[str]:
    """What changed in the data files the run's split read (its config.yaml names them)."""
    from lfme import storage
    from rundir.inputs import changes_since_split
    from rundir.layout import run_config_file

    location = run_config_file(run_dir)
    if not storage.exists(location):
        return []
    return changes_since_split(run_dir, load_config(location).data)


def cmd_predict(args: argparse.Namespace) -> int:
    """The run's student over images, folders or a data source: top-k per image; accuracy where labels are known."""
    from lfme.report import summary_table
    from pipeline import predict
    from pipeline.student import load_student

    for flag, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size), ("--chunk", args.chunk)):
        if value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    student = load_student(args.run_dir)
    sources = predict.collect(args.inputs, student.class_names, student.mode, root=args.root)
    if args.on_ray:
        config = student.run_config()
        ray = open_ray(args, config)
        ray.check_reachable()
        ray.connect()
        result = predict.predict_on_ray(
            student.run_dir, sources, config.evaluate.resources, args.top_k, args.batch_size, args.chunk, log=print
        )
    else:
        result = predict.predict(student, sources, top_k=args.top_k, batch_size=args.batch_size)
    for message in result.skipped:
        print(f"lfme: {message}", file=sys.stderr)
    if args.out is not None:
        predict.write_rows(result.rows, args.out)
        print(f"{len(result.rows)} predictions written to {args.out}")
    elif result.rows:
        columns = ["input", *(["label"] if any(r["label"] is not None for r in result.rows) else [])]
        columns += [f"{kind}_{rank}" for rank in range(1, min(args.top_k, len(student.class_names)) + 1) for kind in ("name", "prob")]
        print(summary_table(result.rows, columns))
    report = predict.accuracy(student, result)
    if report is not None:
        shots = report["shots"]["inclusive"]
        groups = "  ".join(f"{g} {_percent(shots[g])}" for g in ("many", "medium", "few"))
        print(f"top-1 {_percent(report['overall'])}  {groups}  ({report['num_samples']} labelled images; {shots['rule']})")
    if result.skipped:
        print(f"lfme: {len(result.skipped)} image(s) skipped: they cannot be read (named above)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The run's student in a standard format, with its model card."""
    from pipeline.export import export
    from pipeline.student import load_student

    written = export(load_student(args.run_dir), args.out_dir, args.format)
    print(f"exported {args.run_dir}'s student as {args.format}: " + ", ".join(written.values()))
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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
    run.add_argument("--through", help="run the stages up to and including this one, e.g. cache: the teachers only")
    run.add_argument(
        "--reuse",
        metavar="OTHER_RUN",
        help="start from OTHER_RUN's split, experts and cache (done there with this config's settings) instead of rerunning them",
    )
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. distill.epochs=5")
    add_output_flags(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="show what each stage of a run did")
    status.add_argument("run_dir")
    status.add_argument(
        "--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
        help="refresh the table and the latest epoch line every SECONDS (default 5) until Ctrl-C",
    )
    status.set_defaults(func=cmd_status)

    verify = sub.add_parser("verify", help="check every output of a run against its recorded size and SHA-256")
    verify.add_argument("run_dir")
    verify.set_defaults(func=cmd_verify)

    tune = sub.add_parser("tune", help="sweep the distill stage's hyperparameters over the run's teacher cache")
    tune.add_argument("config", nargs="?", default="ray_config.yaml", help="YAML config with a tune section (default: ray_config.yaml)")
    tune.add_argument("--run-dir", help="run directory (default: the config's run_dir); split, experts and cache run first if not done")
    tune.add_argument("--num-samples", type=int, help="trials to draw (overrides tune.num_samples)")
    tune.add_argument("--resume", action="store_true", help="continue the interrupted sweep tune.name of this run")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. tune.name=lr-sweep")
    add_output_flags(tune)
    tune.set_defaults(func=cmd_tune)

    add_student_commands(sub)

    metrics = sub.add_parser("metrics", help="imbalance metrics of a class-count vector and its subsets (paper Table 1)")
    metrics.add_argument("config", nargs="?", help="YAML config whose long-tailed training set to measure")
    metrics.add_argument("--class-counts", help="file with one count per line, line i = class i")
    metrics.add_argument("--thresholds", help="comma-separated thresholds, e.g. 20,100")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics.set_defaults(func=cmd_metrics)
    return parser


def add_student_commands(sub) -> None:
    """`lfme predict` and `lfme export`: using a run's trained student."""
    predict = sub.add_parser("predict", help="classify images with a run's student: top-k per image, accuracy where labels are known")
    predict.add_argument("run_dir")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, Parquet files (image.bytes[, label]), .txt lists (path label) or iNaturalist .json files")
    predict.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--out", help="write the rows to FILE (.csv or .parquet) instead of the console")
    predict.add_argument("--root", help="the folder the paths of a .txt list or .json file are relative to (default: its folder)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    predict.add_argument("--ray", dest="on_ray", action="store_true", help="run on the run's Ray cluster (ray.address, or RAY_ADDRESS), one task per chunk")
    predict.add_argument("--chunk", type=int, default=4096, help="images per Ray task with --ray (default 4096)")
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser("export", help="write a run's student as safetensors, TorchScript or ONNX, with its model card")
    export.add_argument("run_dir")
    export.add_argument("out_dir")
    export.add_argument("--format", default="torchscript", choices=["safetensors", "torchscript", "onnx"])
    export.set_defaults(func=cmd_export)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="let Ray print its warnings and worker output on the console too")
    parser.add_argument("--debug", action="store_true", help="print an error's full traceback on the console too")


def interrupted_line(args: argparse.Namespace) -> str:
    sweep = getattr(args, "sweep", None)
    if sweep is not None and not args.resume:
        from lfme import storage

        if storage.exists(storage.join(sweep, "trials")):
            return "lfme: interrupted; run the same command with --resume to continue the sweep"
    return "lfme: interrupted; run the same command again to resume"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(verbose=getattr(args, "verbose", False), debug=getattr(args, "debug", False))
    args.console, args.ray = console, None
    # Only a command that runs stages, and only where a handler can be installed.
    owns_sigint = args.command in ("run", "tune") and threading.current_thread() is threading.main_thread()
    code, last = 0, None
    try:
        with interrupts(console) if owns_sigint else contextlib.nullcontext():
            code = args.func(args)
    except ConfigError as err:
        code, last = EXIT_USAGE, f"lfme: config error: {err}"
    except KeyboardInterrupt:
        code, last = EXIT_INTERRUPTED, interrupted_line(args)
    except SystemExit as err:
        # Ray's SIGTERM handler in a driver that started a local Ray ends it with
        # sys.exit(1) (ray._private.node); said, not left silent.
        code, last = EXIT_FAILED, f"lfme: error: the driver was told to exit (SystemExit({err.code}), as Ray's SIGTERM handler does)"
    except Exception as err:  # a user-facing CLI: one line, the traceback in the log
        code, last = EXIT_FAILED, error_line(err)
        trace = "".join(traceback.format_exception(err))
        console.write_log(trace)
        if console.debug:
            console.error(trace)
    finish(console, args.ray, code, last)
    if code == EXIT_INTERRUPTED and owns_sigint:
        # Stopped and recorded: skip the interpreter's teardown of torch and
        # Ray's native libraries, seconds on a loaded machine.
        sys.stdout.flush()
        os._exit(code)
    return code


def error_line(err: BaseException) -> str:
    """`lfme: error: Type: message` of the worker's exception; never fails (its type alone if the message cannot be had)."""
    try:
        return f"lfme: error: {ray_compat.one_line(err)}"
    except Exception:  # the one line must come out whatever the exception holds
        return f"lfme: error: {type(err).__name__}"


def finish(console: Console, ray, code: int, last: str | None) -> None:
    """The command's last line on the console, then Ray's shutdown, then the log file closed.

    In this order: shutting Ray down can end the process (see
    `pipeline.ray_session`), and the log stays open for what Ray prints as it stops.
    """
    intended = console.location
    if last is not None:
        console.write_log(last)
        if code == EXIT_FAILED and intended is not None:
            last += f" (full traceback: {intended})"
        console.error(last)
    try:
        if ray is not None:
            ray.close()
    finally:
        where = console.close()
        if where != intended:  # a remote run directory's log could not be copied there
            console.error(f"lfme: the log is at {where}")


if __name__ == "__main__":
    sys.exit(main())
