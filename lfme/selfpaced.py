"""Self-paced expert selection (SpES) and instance selection (SpIS), paper 4.2-4.3.

SpES fades out an expert's distillation weight as the student catches up with
it on that expert's classes, so experts do not cap the student. SpIS weights
each instance's cross-entropy, starting from an easy, subset-balanced
curriculum given by the experts' confidence and growing every weight to 1.

The official code's SpIS differs from the paper's in four ways, each offered
here as its own switch so that each can be measured alone: its initial
weights (`initial_instance_weights(variant="official")`), a ramp that reaches
1 at half the run (`horizon="half"`), no clipping afterwards (`clip=False`:
the weights keep growing, to 2 - v1 for the linear schedule), and the weights
multiplying the student's logits instead of its loss
(`lfme.losses.lfme_loss(spis_on="logits")`). The paper's form is the default.
"""

import math
from typing import Literal, get_args

import numpy as np

from lfme.subsets import subset_of_class

Schedule = Literal["linear", "convex", "concave", "concave_printed"]
Horizon = Literal["full", "half"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
HORIZONS: tuple[str, ...] = get_args(Horizon)


def expert_weight(student_acc: float, expert_acc: float, alpha: float) -> float:
    """SpES weight w_l (docs/METHOD.md section 6).

    w_l = 1 while Acc_M <= alpha * Acc_E, then (Acc_E - Acc_M) / (Acc_E (1 - alpha)),
    clipped at 0 once the student beats the expert. Acc_M is the student's
    top-1 on S_l's validation samples (predicting among all classes), Acc_E the
    expert's (among S_l's classes). An expert with Acc_E = 0 has nothing to
    teach, so its weight is 0 (the formula would divide by zero). With
    alpha = 1 the decay is a step: 1 up to Acc_E, 0 beyond.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    for name, acc in (("student_acc", student_acc), ("expert_acc", expert_acc)):
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {acc}")
    if expert_acc == 0.0:
        return 0.0
    if student_acc <= alpha * expert_acc:
        return 1.0
    if alpha == 1.0:
        return 0.0
    return max(0.0, (expert_acc - student_acc) / (expert_acc * (1.0 - alpha)))


def expert_weights(student_accs, expert_accs, alpha: float) -> list[float]:
    """expert_weight for each subset l, in subset order."""
    if len(student_accs) != len(expert_accs):
        raise ValueError(f"{len(student_accs)} student accuracies for {len(expert_accs)} experts")
    return [expert_weight(float(m), float(e), alpha) for m, e in zip(student_accs, expert_accs)]


def _subset_scale(subsets, class_counts: np.ndarray) -> np.ndarray:
    """Nbar_min / Nbar_l for each subset, Nbar_S = mean training count of S's classes."""
    means = np.array([class_counts[list(s.classes)].mean() if len(s) else np.nan for s in subsets])
    if np.any(means[~np.isnan(means)] <= 0):
        raise ValueError("every non-empty subset needs a positive mean class count")
    return np.nanmin(means) / means


def initial_instance_weights(confidence, labels, subsets, class_counts, variant: str = "paper") -> np.ndarray:
    """SpIS initial weights v_i^(1), float32 of shape (N,) (docs/METHOD.md section 7).

    confidence: p_i, the softmax probability of y_i from the expert of y_i's
    subset. class_counts: training count of each class, which defines Nbar_S.
    - "paper": v1_i = p_i * Nbar_min / Nbar_l, with l the subset holding y_i.
      (The paper's displayed formula inverts the ratio, a typo: it would
      exceed 1.) At epoch 1 each subset then softly selects about as many
      instances per class as the few-shot subset has.
    - "official": within each class, min-max rescale p_i to [Nbar_min/Nbar_l, 1]
      (the official code). A class whose confidences are all equal has no
      easy-to-hard order to rescale, so its instances get 1.0.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    class_counts = np.asarray(class_counts, dtype=np.float64)
    if confidence.shape != labels.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and labels {labels.shape} must be matching 1-D arrays")
    if np.any((confidence < 0) | (confidence > 1)):
        raise ValueError("confidence must be probabilities in [0, 1]")
    if variant not in ("paper", "official"):
        raise ValueError(f"variant must be 'paper' or 'official', got {variant!r}")
    scale = _subset_scale(subsets, class_counts)[subset_of_class(subsets, class_counts.size)[labels]]
    if variant == "paper":
        return (confidence * scale).astype(np.float32)
    weights = np.ones_like(confidence)
    for c in np.unique(labels):
        members = labels == c
        p = confidence[members]
        spread = p.max() - p.min()
        if spread > 0:
            low = scale[members]
            weights[members] = low + (p - p.min()) / spread * (1.0 - low)
    return weights.astype(np.float32)


def scheduled_instance_weights(
    v1, epoch: int, total_epochs: int, schedule: str = "linear", horizon: str = "full", clip: bool = True
) -> np.ndarray:
    """SpIS weights v_i at epoch e = 1..E from the initial weights v1.

    The schedules below are written with progress t = e/E. Two switches give
    the official code's form, which the paper does not describe:
    - horizon "full" (the paper): t = e/E, the weights reach their end value
      at the last epoch. "half" (the official code): t = e/(E/2), they reach
      it halfway through the run.
    - clip True (the paper): t stops at 1, so a weight stays at its end value
      once reached. False (the official code): the formula runs on to t = 2
      with the half horizon, the linear schedule ending at 2 - v1.

    - linear (the paper's default): (1 - v1) t + v1, from v1 to 1.
    - convex: 1 - (1 - v1) cos(e/E * pi/2), from v1 to 1.
    - concave: v1 + (1 - v1) log(1 + e/E) / log 2, from about v1 to 1. The
      paper's Table 4 compares three schedules that all grow v_i to 1; this
      is the concave one of that family.
    - concave_printed: (1 - v1) log(1 + e/E) / log 2, the formula as printed
      in the paper and used by the official code. It starts near 0 rather
      than v1 and ends at 1 - v1 rather than 1, so it never fully selects
      the easy instances; kept for exact comparisons with the official code.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if horizon not in HORIZONS:
        raise ValueError(f"horizon must be one of {HORIZONS}, got {horizon!r}")
    if total_epochs < 1 or not 1 <= epoch <= total_epochs:
        raise ValueError(f"epoch must be in 1..total_epochs={total_epochs}, got {epoch}")
    v1 = np.asarray(v1)
    progress = epoch / (total_epochs if horizon == "full" else total_epochs / 2)
    if clip:
        progress = min(progress, 1.0)
    if schedule == "linear":
        weights = (1 - v1) * progress + v1
    elif schedule == "convex":
        weights = 1 - (1 - v1) * math.cos(progress * math.pi / 2)
    elif schedule == "concave":
        weights = v1 + (1 - v1) * math.log(1 + progress) / math.log(2)
    else:
        weights = (1 - v1) * math.log(1 + progress) / math.log(2)
    return weights.astype(v1.dtype if np.issubdtype(v1.dtype, np.floating) else np.float32)
