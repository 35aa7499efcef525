"""A finished sweep's outcome: one row per trial, the best trial's student on the test set, and the files.

Under `<run_dir>/tune/<name>/` (`rundir.layout.sweep_dir`):
    trials.csv        one row per trial: its swept values, epochs reached, last val_acc, status
    best_student.pt   the best-validation trial's final student, saved like `distill/student.pt`
    trials.md         the table and the best student's test top-1 (overall, many, medium, few)
    best_config.yaml  its full configuration (`lfme run best_config.yaml` reuses the run's experts and cache)

The best trial is the one with the highest last validation accuracy (the
first of equals in trial-id order); its test score is the evaluate stage's
(`stages.evaluate.score_student`), so a sweep's number reads like a run's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfme import storage
from lfme.report import format_percent, markdown_table
from rundir.config import Config, dump_config, with_values
from rundir.layout import STATE_FILE, read_split, save_student, sweep_dir


def trial_rows(config: Config, results) -> list[dict[str, Any]]:
    """One row per trial, by trial id: its swept values, epochs reached, last val_acc, status."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        planned = with_values(config, result.config).distill.epochs
        reached = metrics.get("epoch", 0)
        if result.error is not None:
            status = "error"
        elif reached < planned:
            status = "stopped early (ASHA)"
        else:
            status = "done"
        rows.append(
            {
                "trial_id": storage.name(result.path),
                **{key: result.config[key] for key in config.tune.search_space},
                "epochs": reached,
                "val_acc": metrics.get("val_acc"),
                "status": status,
                # A Ray Train trial's last checkpoint comes in its metrics (TuneReportCallback); a one-worker trial's is Tune's.
                "checkpoint_path": metrics.get("checkpoint_path") or (result.checkpoint.path if result.checkpoint else None),
                "config": result.config,
            }
        )
    return sorted(rows, key=lambda row: row["trial_id"])


def write_outcome(config: Config, run_dir: str, results, log: Callable[[str], None]) -> dict[str, Any]:
    """trials.csv, the best trial's student on the test set, trials.md and best_config.yaml."""
    out = sweep_dir(run_dir, config.tune.name)
    rows = trial_rows(config, results)
    columns = ["trial_id", *config.tune.search_space, "epochs", "val_acc", "status"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text_atomic(storage.join(out, "trials.csv"), buffer.getvalue())

    scored = [row for row in rows if row["val_acc"] is not None and row["checkpoint_path"]]
    if not scored:
        raise RuntimeError(f"no trial reported a validation accuracy: see {storage.join(out, 'trials')}")
    best = max(scored, key=lambda row: row["val_acc"])  # the first of equals, in trial-id order
    best_config = with_values(config, best["config"])
    checkpoint_fs, _ = storage.arrow_filesystem(out)
    test = evaluate_best(best_config, run_dir, best["checkpoint_path"], checkpoint_fs, storage.join(out, "best_student.pt"))
    storage.write_text_atomic(storage.join(out, "best_config.yaml"), dump_config(best_config))
    storage.write_text_atomic(storage.join(out, "trials.md"), trials_markdown(config, rows, columns, best, test))
    log(
        f"tune: best trial {best['trial_id']} (val {format_percent(best['val_acc'])}%), test top-1 "
        f"{format_percent(test['overall'])}%; wrote trials.csv, trials.md, best_config.yaml to {out}"
    )
    return {"best_trial": best["trial_id"], "best_values": {k: best[k] for k in config.tune.search_space}, "test": test, "dir": out}


def evaluate_best(config: Config, run_dir: str, checkpoint_path: str, checkpoint_fs, location: str) -> dict[str, Any]:
    """Save the best trial's final student like `distill/student.pt` and score it on the test set as `evaluate` does.

    `checkpoint_path` is a path on `checkpoint_fs` (None: the local disk), as Ray Train and Tune report it.
    """
    import torch
    from ray.train import Checkpoint

    from stages.evaluate import headline, score_student

    with Checkpoint(checkpoint_path, filesystem=checkpoint_fs).as_directory() as directory:
        state = torch.load(Path(directory, STATE_FILE), map_location="cpu", weights_only=False)
    save_student(location, config.model.arch, read_split(run_dir), state["model"])
    return headline(score_student(config, run_dir, location))


def trials_markdown(config: Config, rows: list[dict], columns: list[str], best: dict, test: dict) -> str:
    def cell(row: dict, column: str) -> Any:
        if column == "val_acc":
            return format_percent(row[column])
        value = row[column]
        return f"{value:.4g}" if isinstance(value, float) else value

    table = markdown_table(columns, [[cell(row, c) for c in columns] for row in rows])
    values = ", ".join(f"`{k}={cell(best, k)}`" for k in config.tune.search_space)
    lines = [
        f"# Sweep `{config.tune.name}`",
        "",
        f"{len(rows)} trial(s); ASHA on {config.tune.metric} (validation top-1, %), every trial on the same teacher cache.",
        "",
        *table,
        "",
        f"## Best trial: {best['trial_id']}",
        "",
        f"{values}; validation {format_percent(best['val_acc'])}% after {best['epochs']} epoch(s).",
        "",
        f"Test top-1 of its final student (Many/Medium/Few: {test['shot_rule']}):",
        "",
        *markdown_table(
            ["overall", "many", "medium", "few"],
            [[format_percent(test[k]) for k in ("overall", "many", "medium", "few")]],
            ["r", "r", "r", "r"],
        ),
        "",
        "Its full configuration: `best_config.yaml` (`lfme run best_config.yaml` reuses this run's experts and cache).",
        "",
    ]
    return "\n".join(lines)
