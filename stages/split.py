"""Stage 1, split: the long-tailed training set, its validation set, and the subsets.

Runs on the driver (it is cheap). It builds the long-tailed training set from
the source (LDAM-DRW protocol), draws the balanced validation set from the
images that construction left unused (or takes the source's own), decodes every
image once so a corrupt file is named before any training starts, splits the
classes into cardinality-adjacent subsets and saves their imbalance metrics
(the paper's Table 1).
"""

from __future__ import annotations

import numpy as np

from lfme import storage
from lfme.data import check_images, class_counts, make_long_tailed
from lfme.data.sources import SourceSplits
from lfme.metrics import subset_metrics
from lfme.subsets import Subset, split_balanced, split_by_thresholds
from rundir.config import Config
from rundir.sections import DataConfig, SplitConfig
from rundir.context import StageContext
from rundir.data import load_source
from rundir.inputs import data_signature
from rundir.layout import save_split, split_inputs_file


def long_tailed_indices(source: SourceSplits, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `source.train` of the training images and of the held-out validation images."""
    labels = source.train.labels
    val_per_class = 0 if source.val is not None else cfg.val_per_class
    # A source that is long-tailed already keeps every image: an imbalance
    # factor of 1 cuts nothing but the validation share.
    factor = cfg.imbalance_factor if cfg.imbalance_factor is not None else 1.0
    return make_long_tailed(labels, factor, val_per_class=val_per_class, seed=cfg.lt_seed)


def make_subsets(counts: np.ndarray, cfg: SplitConfig) -> list[Subset]:
    if cfg.method == "thresholds":
        return split_by_thresholds(counts, cfg.thresholds, convention=cfg.convention, names=cfg.names)
    return split_balanced(counts, cfg.num_subsets, names=cfg.names)


def training_counts(cfg: DataConfig) -> tuple[np.ndarray, list[str]]:
    """Class counts of the long-tailed training set a data config produces."""
    source = load_source(cfg)
    train_idx, _ = long_tailed_indices(source, cfg)
    return class_counts(source.train.labels[train_idx], source.num_classes), source.class_names


def check_validation_covers(subsets: list[Subset], val_labels: np.ndarray, class_names: list[str]) -> None:
    """Every subset needs validation images: one rule, decided here, for every stage after.

    Its expert keeps its best validation epoch, SpES compares the student with
    it there (Acc_E, Acc_M), and evaluate reports both: a subset without a
    validation image has none of these, and a run that went on would fail or,
    worse, quietly keep an expert's first epoch. So the split refuses it.
    """
    present = np.isin(np.arange(len(class_names)), val_labels)
    for s in subsets:
        if not present[list(s.classes)].any():
            names = ", ".join(class_names[c] for c in s.classes[:5]) + (", ..." if len(s.classes) > 5 else "")
            raise ValueError(
                f"split: subset '{s.name}' ({len(s.classes)} classes: {names}) has no validation image; its expert "
                f"and SpES are judged on validation images: give these classes some (data.val_per_class > 0, or a "
                f"data.val that has them)"
            )


def metrics_table(metrics: dict) -> str:
    """The paper's Table 1: the four imbalance metrics of the whole set and of each subset."""
    num_classes = sum(len(s["classes"]) for s in metrics["subsets"])
    rows = [("Entire", num_classes, metrics["entire"])]
    rows += [(s["name"], len(s["classes"]), s) for s in metrics["subsets"]]
    lines = [f"{'set':<12}{'classes':>8}{'I_Ratio':>10}{'I_KL':>9}{'I_Abs':>9}{'I_Gini':>9}"]
    for name, n, m in rows:
        lines.append(f"{name:<12}{n!s:>8}{m['ratio']:>10.1f}{m['kl']:>9.3f}{m['abs']:>9.3f}{m['gini']:>9.3f}")
    return "\n".join(lines)


def run(ctx: StageContext) -> dict:
    cfg: Config = ctx.config
    # Signed before reading: data that changes while the split runs differs from it next time.
    signature = data_signature(cfg.data)
    source = load_source(cfg.data)
    train_idx, val_idx = long_tailed_indices(source, cfg.data)
    train = source.train.subset(train_idx)
    val = source.val if source.val is not None else source.train.subset(val_idx)
    if len(val) == 0:
        raise ValueError("data: the validation set is empty; set data.val_per_class > 0 or data.val")
    if cfg.data.check_images:
        for part in (train, val, source.test):
            check_images(part)

    counts = class_counts(train.labels, source.num_classes)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)
        raise ValueError(
            f"data: class {int(empty[0])} ({source.class_names[empty[0]]}) has no training image after the "
            f"long-tailed construction (imbalance_factor {cfg.data.imbalance_factor}, val_per_class "
            f"{cfg.data.val_per_class}); lower one of them"
        )
    subsets = make_subsets(counts, cfg.split)
    check_validation_covers(subsets, val.labels, source.class_names)
    metrics = subset_metrics(counts, subsets)

    save_split(
        ctx.run_dir,
        train,
        val,
        {
            "class_names": source.class_names,
            "class_counts": counts.tolist(),
            "subsets": [s.record() for s in subsets],
            "metrics": metrics,
            "sizes": {"train": len(train), "val": len(val), "test": len(source.test)},
        },
    )
    storage.write_json_atomic(split_inputs_file(ctx.run_dir), signature)
    ctx.log("split: imbalance metrics (paper Table 1)\n" + metrics_table(metrics))
    return {
        "train": len(train),
        "val": len(val),
        "test": len(source.test),
        "subsets": {s.name: len(s.classes) for s in subsets},
    }
