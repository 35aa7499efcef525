"""Evaluation report: Markdown, JSON and PNG plots (framework-free).

Only numpy, json and matplotlib (Agg backend, selected inside the plotting
functions) are used here: no Ray, no torch, so the report can be rendered on
the driver or in tests without either.

The input is the report dict built by the evaluation stage::

    {"student": ACC,                          # lfme.evaluation.accuracy_report(...)
     "experts": {name: {"classes": [...], "accuracy": float, "num_samples": int,
                        "student_accuracy_within_subset": float}},   # the last: optional
     "subsets": [{"name": str, "classes": [...]}, ...],
     "class_names": [...], "train_counts": [...],
     "w_history": [{"epoch": 1, "weights": {name: float}}, ...],   # may be empty
     "config": {"distill": {...}}}

Accuracies are fractions in ``[0, 1]``; everything printed for humans is
percent with one decimal, ``None`` printed as ``n/a``.
"""

from __future__ import annotations

import json
import math
import os
from decimal import ROUND_HALF_UP, Decimal
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lfme import storage

__all__ = [
    "format_percent",
    "format_value",
    "render_markdown",
    "plot_expert_weights",
    "plot_per_class_accuracy",
    "write_report",
    "summary_table",
]

NA = "n/a"
SHOT_GROUPS = ("many", "medium", "few")


# --------------------------------------------------------------------------- formatting

def format_percent(value: float | None) -> str:
    """A fraction as percent with one decimal (``0.4567 -> "45.7"``); ``None``/NaN -> ``n/a``.

    Rounds half up on the shortest decimal form of the value, so ``0.8765``
    prints ``87.7`` (not ``87.6`` as ``f"{87.64999..:.1f}"`` would).
    """
    if value is None:
        return NA
    value = float(value)
    if math.isnan(value):
        return NA
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    percent = (Decimal(repr(value)) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{percent:.1f}" if percent != 0 else "0.0"


def format_value(value: Any) -> str:
    """One cell of a plain text table: floats to 4 significant digits, ``None`` -> ``n/a``."""
    if value is None:
        return NA
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return NA
        return f"{value:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["l"] * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _experts_section(experts: dict, subset_names: list, subset_classes: dict, subset_acc: dict) -> list[str]:
    """Each expert next to the student on the expert's test samples: among all classes and within the subset."""
    if not experts:
        return []
    order = [name for name in subset_names if name in experts] + [
        name for name in experts if name not in subset_names]
    lines = ["## Experts", "",
              "Each expert predicts among its own subset's classes on that subset's test samples; "
              "the student predicts among all classes on the same samples, and, on equal terms with the "
              "expert (KD's premise: what a KD term over the subset can teach), among the subset's classes only.", ""]
    rows = []
    for name in order:
        info = experts[name] or {}
        classes = info.get("classes", subset_classes.get(name, []))
        expert_acc = info.get("accuracy")
        student_acc = subset_acc.get(name)
        within = info.get("student_accuracy_within_subset")
        rows.append([name, f"{len(classes)}: {_compact_classes(classes)}",
                     format_value(info.get("num_samples")), format_percent(expert_acc),
                     format_percent(student_acc), _points(student_acc, expert_acc),
                     format_percent(within), _points(within, expert_acc)])
    lines += markdown_table(["Subset", "Classes", "Test samples", "Expert (%)", "Student (%)",
                             "Student - expert (pp)", "Student within subset (%)", "Within - expert (pp)"],
                            rows, ["l", "l", "r", "r", "r", "r", "r", "r"])
    lines.append("")
    return lines


def _points(a, b) -> str:
    """a - b in percentage points, or n/a."""
    return NA if a is None or b is None else f"{100.0 * (float(a) - float(b)):+.1f}"


def _compact_classes(classes: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"``."""
    values = sorted(int(c) for c in classes)
    if not values:
        return "-"
    parts: list[str] = []
    start = prev = values[0]
    for c in values[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if c is not None:
            start = prev = c
    return ", ".join(parts)


def _subset_order(report: Mapping[str, Any]) -> list[str]:
    names = [s["name"] for s in report.get("subsets") or []]
    for name in (report.get("student") or {}).get("subsets") or {}:
        if name not in names:
            names.append(name)
    return names


# --------------------------------------------------------------------------- markdown

def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report (GitHub-flavoured Markdown)."""
    student = report.get("student") or {}
    subset_acc = student.get("subsets") or {}
    subset_names = _subset_order(report)
    subset_classes = {s["name"]: list(s.get("classes", [])) for s in report.get("subsets") or []}
    lines: list[str] = ["# LFME evaluation report", ""]

    # Student: overall and per subset.
    lines += ["## Student", ""]
    n = student.get("num_samples")
    lines.append(f"Top-1 accuracy (%) on {n if n is not None else NA} test samples.")
    lines.append("")
    header = ["Model", "Overall"] + subset_names
    row = ["Student", format_percent(student.get("overall"))] + [
        format_percent(subset_acc.get(name)) for name in subset_names]
    lines += markdown_table(header, [row], ["l"] + ["r"] * (len(header) - 1))
    lines.append("")

    # Many / Medium / Few, one row per convention.
    shots = student.get("shots") or {}
    if shots:
        lines += ["## Many / Medium / Few", "",
                  "Top-1 accuracy (%) per shot group; each convention states its rule "
                  "(N = number of training images of a class) and the number of classes per group.", ""]
        rows = []
        for convention, group in shots.items():
            counts = group.get("classes") or {}
            row = [convention, group.get("rule", NA)]
            for g in SHOT_GROUPS:
                k = counts.get(g)
                row.append(f"{format_percent(group.get(g))} ({k if k is not None else NA} classes)")
            rows.append(row)
        lines += markdown_table(["Convention", "Rule", "Many", "Medium", "Few"], rows, ["l", "l", "r", "r", "r"])
        lines.append("")

    lines += _experts_section(report.get("experts") or {}, subset_names, subset_classes, subset_acc)

    # Final SpES expert weights.
    history = report.get("w_history") or []
    if history:
        last = history[-1]
        weights = last.get("weights") or {}
        lines += ["## SpES expert weights", "",
                  f"Expert weights w_l after student epoch {last.get('epoch', len(history))} "
                  f"({len(history)} epoch(s) recorded).", ""]
        rows = [[name, NA if w is None else f"{float(w):.3f}"] for name, w in weights.items()]
        lines += markdown_table(["Expert", "w_l"], rows, ["l", "r"])
        lines.append("")

    distill = (report.get("config") or {}).get("distill")
    if distill:
        lines += ["## Distillation config", "", "```json",
                  json.dumps(distill, indent=2, sort_keys=True, default=_json_default), "```", ""]

    return "\n".join(lines)


# --------------------------------------------------------------------------- atomic writes

def _save_figure(fig, location: storage.Location) -> None:
    with storage.atomic_file(location) as f:
        fig.savefig(f, format="png", dpi=100)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- plots

def plot_expert_weights(w_history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> bool:
    """SpES expert weights w_l per student epoch, one line per expert (paper Fig. 5).

    Writes nothing and returns ``False`` when the history is empty.
    """
    if not w_history:
        return False
    names: list[str] = []
    for entry in w_history:
        for name in entry.get("weights") or {}:
            if name not in names:
                names.append(name)
    epochs = [int(entry.get("epoch", i + 1)) for i, entry in enumerate(w_history)]

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for name in names:
            ys = [np.nan if (entry.get("weights") or {}).get(name) is None
                  else float(entry["weights"][name]) for entry in w_history]
            ax.plot(epochs, ys, marker="o" if len(epochs) <= 30 else None, markersize=3, label=str(name))
        ax.set_ylim(0.0, 1.05)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Student epoch")
        ax.set_ylabel("Expert weight $w_l$")
        ax.set_title("SpES expert weights")
        ax.grid(True, alpha=0.3)
        if names:
            ax.legend(title="Expert", loc="lower left", fontsize=8)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.92)
        _save_figure(fig, path)
    finally:
        plt.close(fig)
    return True


def plot_per_class_accuracy(per_class: Sequence[float | None], train_counts: Sequence[int],
                            path: str | os.PathLike, class_names: Sequence[str] | None = None) -> bool:
    """Per-class test accuracy against training count.

    Left: scatter, log x axis, classes with ``None`` accuracy (or no training
    image, which a log axis cannot show) skipped. Right: classes sorted by
    training count descending, bars of count with accuracy on a twin axis.
    """
    if len(per_class) != len(train_counts):
        raise ValueError(f"per_class has {len(per_class)} entries but train_counts has {len(train_counts)}")
    if class_names is not None and len(class_names) != len(train_counts):
        raise ValueError(f"class_names has {len(class_names)} entries but train_counts has {len(train_counts)}")
    counts = np.asarray(train_counts, dtype=float)
    acc = np.array([np.nan if a is None else 100.0 * float(a) for a in per_class], dtype=float)
    num_classes = len(counts)

    plt = _pyplot()
    fig, (ax_scatter, ax_bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        shown = ~np.isnan(acc) & (counts > 0)
        ax_scatter.scatter(counts[shown], acc[shown], s=18, alpha=0.8)
        ax_scatter.set_xscale("log")
        ax_scatter.set_ylim(-2.0, 102.0)
        ax_scatter.set_xlabel("Training images per class (log scale)")
        ax_scatter.set_ylabel("Test top-1 accuracy (%)")
        skipped = num_classes - int(shown.sum())
        ax_scatter.set_title("Per-class accuracy vs. training count"
                             + (f" ({skipped} class(es) skipped)" if skipped else ""))
        ax_scatter.grid(True, which="both", alpha=0.3)

        order = np.argsort(-counts, kind="stable")
        xs = np.arange(num_classes)
        ax_bars.bar(xs, counts[order], color="tab:blue", alpha=0.5, label="training count")
        ax_bars.set_xlabel("Class (sorted by training count)")
        ax_bars.set_ylabel("Training images", color="tab:blue")
        positive = counts[counts > 0]
        if positive.size and positive.max() / positive.min() > 50:
            ax_bars.set_yscale("log")
        if num_classes <= 40:
            labels = [str(class_names[i]) if class_names is not None else str(i) for i in order]
            ax_bars.set_xticks(xs)
            ax_bars.set_xticklabels(labels, rotation=90, fontsize=7)
        ax_acc = ax_bars.twinx()
        ax_acc.plot(xs, acc[order], "o", color="tab:red", markersize=3, label="test accuracy")
        ax_acc.set_ylim(-2.0, 102.0)
        ax_acc.set_ylabel("Test top-1 accuracy (%)", color="tab:red")
        ax_bars.set_title("Classes by training count")
        fig.subplots_adjust(left=0.06, right=0.94, bottom=0.2, top=0.92, wspace=0.3)
        _save_figure(fig, path)
    finally:
        plt.close(fig)
    return True


# --------------------------------------------------------------------------- files

def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _finite(obj: Any) -> Any:
    """NaN/inf (not valid JSON) -> None, recursively; everything else unchanged."""
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return None
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_report(report: Mapping[str, Any], directory: str | os.PathLike) -> dict[str, str]:
    """Write report.json, report.md and the PNG plots atomically into ``directory``.

    Returns ``{file name: path}`` of what was written; ``expert_weights.png``
    is absent when ``w_history`` is empty. NaN/inf values are stored as ``null``
    (strict JSON); everything else round-trips through ``json.loads``.
    """
    directory = os.fspath(directory)
    written: dict[str, str] = {}

    name = "report.json"
    text = json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False)
    written[name] = storage.write_text_atomic(storage.join(directory, name), text + "\n")

    name = "report.md"
    written[name] = storage.write_text_atomic(storage.join(directory, name), render_markdown(report))

    name = "expert_weights.png"
    if plot_expert_weights(report.get("w_history") or [], storage.join(directory, name)):
        written[name] = storage.join(directory, name)
    else:  # a plot left by an earlier run with KD would pass for this run's
        storage.remove(storage.join(directory, name))

    student = report.get("student") or {}
    per_class = student.get("per_class")
    train_counts = report.get("train_counts")
    if per_class is not None and train_counts is not None:
        name = "per_class_accuracy.png"
        plot_per_class_accuracy(per_class, train_counts, storage.join(directory, name),
                                class_names=report.get("class_names") or None)
        written[name] = storage.join(directory, name)
    return written


# --------------------------------------------------------------------------- text table

def summary_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain fixed-width text table: header, a dashed rule, one line per row.

    Cells are formatted with :func:`format_value` (missing keys print empty);
    columns holding any number are right-aligned (header included), others
    left-aligned; every line has the same width.
    """
    columns = list(columns)
    cells = [[("" if c not in row else format_value(row[c])) for c in columns] for row in rows]
    numeric = [any(c in row and _is_number(row[c]) for row in rows) for c in columns]
    widths = [max([len(str(col))] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, numeric))

    out = [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
