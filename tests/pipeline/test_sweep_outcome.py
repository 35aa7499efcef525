"""pipeline.sweep_outcome without Ray Tune: a trial's row and status from its result, and the sweep's table."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from pipeline.sweep_outcome import trial_rows, trials_markdown
from rundir.config import config_from_dict

SPACE = {"distill.lr": {"choice": [0.01, 0.1]}, "distill.epochs": {"choice": [4, 6]}}


@dataclass
class Result:
    """The fields of a `ray.tune.Result` that the outcome reads."""

    path: str
    config: dict
    metrics: dict = field(default_factory=dict)
    error: Exception | None = None
    checkpoint: SimpleNamespace | None = None


def test_each_trial_is_done_stopped_early_or_in_error_by_its_own_planned_epochs():
    config = config_from_dict({"tune": {"search_space": SPACE}})
    results = [
        # listed out of id order: the rows come sorted by trial id
        Result("/sweep/trials/t3", {"distill.lr": 0.1, "distill.epochs": 6}, {"epoch": 3, "val_acc": 0.5}, RuntimeError("x")),
        Result("/sweep/trials/t1", {"distill.lr": 0.01, "distill.epochs": 4}, {"epoch": 4, "val_acc": 0.7},
               checkpoint=SimpleNamespace(path="/sweep/trials/t1/checkpoint_000003")),
        # a several-worker trial: Ray Train's checkpoint comes in its metrics, ahead of Tune's
        Result("/sweep/trials/t2", {"distill.lr": 0.1, "distill.epochs": 6},
               {"epoch": 4, "val_acc": 0.6, "checkpoint_path": "/sweep/train/t2/checkpoint_3"},
               checkpoint=SimpleNamespace(path="/sweep/trials/t2/checkpoint_000003")),
        Result("/sweep/trials/t4", {"distill.lr": 0.01, "distill.epochs": 6}),  # never reported
    ]
    rows = trial_rows(config, results)
    assert [(r["trial_id"], r["status"], r["epochs"], r["val_acc"]) for r in rows] == [
        ("t1", "done", 4, 0.7),  # 4 of its own 4 epochs, though the sweep's longest is 6
        ("t2", "stopped early (ASHA)", 4, 0.6),
        ("t3", "error", 3, 0.5),
        ("t4", "stopped early (ASHA)", 0, None),
    ]
    assert [r["checkpoint_path"] for r in rows] == ["/sweep/trials/t1/checkpoint_000003", "/sweep/train/t2/checkpoint_3", None, None]
    assert rows[0]["distill.lr"] == 0.01 and rows[1]["distill.epochs"] == 6


def test_the_table_names_the_best_trial_its_values_and_its_test_score():
    config = config_from_dict({"tune": {"search_space": SPACE, "name": "lr"}})
    columns = ["trial_id", *SPACE, "epochs", "val_acc", "status"]
    rows = [
        {"trial_id": "t1", "distill.lr": 0.01, "distill.epochs": 4, "epochs": 4, "val_acc": 0.7125, "status": "done"},
        {"trial_id": "t2", "distill.lr": 0.1, "distill.epochs": 6, "epochs": 2, "val_acc": None, "status": "stopped early (ASHA)"},
    ]
    test = {"overall": 0.654, "many": 0.9, "medium": 0.6, "few": 0.25, "shot_rule": "many N>=100, few N<=20"}
    text = trials_markdown(config, rows, columns, rows[0], test)
    assert text.startswith("# Sweep `lr`\n\n2 trial(s); ASHA on val_acc")
    assert "| t1 | 0.01 | 4 | 4 | 71.3 | done |" in text  # val_acc in percent, one decimal, half up
    assert "| t2 | 0.1 | 6 | 2 | n/a | stopped early (ASHA) |" in text
    assert "## Best trial: t1\n\n`distill.lr=0.01`, `distill.epochs=4`; validation 71.3% after 4 epoch(s)." in text
    assert "| 65.4 | 90.0 | 60.0 | 25.0 |" in text
