"""The LFME training loss: weighted cross-entropy plus per-expert distillation.

L = mean_i(v_i CE_i) + sum_l w_l mean_i(KD_l,i)        (paper section 4.4)

The paper writes both terms as sums over the N training instances; here both
are means over the batch, so the loss scale does not depend on the batch size
and one learning rate fits any batch. The CE mean is divided by the batch
size, not by sum_i v_i: down-weighted instances then really lower the data
term, as the paper's weighted sum does, instead of being renormalised away.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lfme.devices import DeviceCopies, to_device
from lfme.engine import Batch
from lfme.teacher_cache import TeacherRows
from lfme.teachers import TeacherSignal


def subset_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    classes: torch.Tensor,
    temperature: float = 2.0,
    t_squared: bool = False,
) -> torch.Tensor:
    """Per-sample cross-entropy H(softmax(z_l / T), softmax(zhat_{S_l} / T)), shape (B,).

    `teacher_logits` are C-wide teacher-cache rows in global class order and
    `classes` are S_l's classes, so both sides are restricted to S_l
    (docs/METHOD.md section 5). The official code uses the KL divergence, which
    differs by the teacher's entropy and so has the same gradient. No T^2
    factor by default (the paper); `t_squared=True` applies Hinton et al.'s
    scaling, which keeps gradient magnitudes comparable across temperatures.
    The teacher is a constant (a cached signal), hence detached; the
    computation runs in float32 so half-precision logits stay stable.
    """
    classes = classes.to(device=student_logits.device, dtype=torch.long)
    student = student_logits.index_select(1, classes).float() / temperature
    teacher = teacher_logits.detach().to(student_logits.device).index_select(1, classes).float() / temperature
    loss = -(F.softmax(teacher, dim=1) * F.log_softmax(student, dim=1)).sum(dim=1)
    return loss * temperature**2 if t_squared else loss


BASE_LOSSES = ("softmax", "logit_adjusted", "balanced_softmax")


def base_loss_offsets(kind: str, class_counts, tau: float = 1.0) -> torch.Tensor | None:
    """(C,) float32 offsets the student's CE adds to its logits, or None for plain softmax cross-entropy.

    - logit_adjusted (Menon et al., ICLR 2021, the logit-adjusted loss):
      CE(z + tau log pi, y), pi_c = n_c / N, the training label prior;
    - balanced_softmax (Ren et al., NeurIPS 2020): CE(z + log n_c, y).
    Both train the logits z to estimate the class-balanced posterior; the
    model predicts with z alone. log n_c = log pi_c + log N, and a constant
    shift of every logit leaves the softmax unchanged, so the two are one
    loss at tau = 1. A class without training images counts as one (its
    offset stays finite; no training label ever asks for it).
    """
    if kind not in BASE_LOSSES:
        raise ValueError(f"base loss must be one of {BASE_LOSSES}, got {kind!r}")
    if kind == "softmax":
        return None
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    if kind == "balanced_softmax":
        return torch.from_numpy(np.log(counts)).float()
    return torch.from_numpy(tau * np.log(counts / counts.sum())).float()


def lfme_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    subsets_classes: list[torch.Tensor],
    expert_weights: torch.Tensor | None,
    instance_weights: torch.Tensor | None,
    temperature: float = 2.0,
    t_squared: bool = False,
    spis_on: str = "loss",
    ce_offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """LFME loss on one batch: mean_i(v_i CE_i) + sum_l w_l mean_i(KD_l,i).

    expert_weights (w_l, SpES) = None drops the KD term (teacher_logits may
    then be None); instance_weights (v_i, SpIS) = None means v_i = 1.
    spis_on: "loss" (the paper) weights each instance's CE by v_i; "logits"
    (the official code) multiplies instance i's logits by v_i before both
    terms, CE and KD, unweighted: a v_i below 1 flattens the student's
    softmax (a temperature of 1/v_i), which lowers that instance's gradient
    in another way than scaling its loss.
    ce_offsets (`base_loss_offsets`): added to the logits inside the CE only
    (logit adjustment, Balanced Softmax); KD sees the logits as they are.
    Returns the scalar loss and, for logging, detached tensors on the loss's
    device (read with .item() when needed: reading them here would wait for
    the device every step): "ce" (the weighted CE term), "kd" (the weighted KD
    sum) and "kd_per_expert" (mean_i KD_l,i for each expert before weighting,
    so a zero-weighted expert's gap stays visible; empty without KD).
    """
    if spis_on not in ("loss", "logits"):
        raise ValueError(f"spis_on must be 'loss' or 'logits', got {spis_on!r}")
    student_logits = student_logits.float()
    if instance_weights is not None and spis_on == "logits":
        student_logits = instance_weights.to(student_logits)[:, None] * student_logits
    ce_logits = student_logits if ce_offsets is None else student_logits + ce_offsets.to(student_logits)
    ce = F.cross_entropy(ce_logits, labels, reduction="none")
    if instance_weights is not None and spis_on == "loss":
        ce = instance_weights.to(ce) * ce
    ce_term = ce.mean()
    if expert_weights is None:
        return ce_term, {"ce": ce_term.detach(), "kd": torch.zeros_like(ce_term).detach(), "kd_per_expert": ce.new_zeros(0)}
    if teacher_logits is None:
        raise ValueError("expert_weights without teacher_logits: the KD term needs the teachers' logits")
    expert_weights = torch.as_tensor(expert_weights).to(ce)
    if expert_weights.numel() != len(subsets_classes):
        raise ValueError(f"{expert_weights.numel()} expert weights for {len(subsets_classes)} subsets")
    kd_per_expert = torch.stack(
        [subset_kd_loss(student_logits, teacher_logits, c, temperature, t_squared).mean() for c in subsets_classes]
    )
    kd_term = (expert_weights * kd_per_expert).sum()
    stats = {"ce": ce_term.detach(), "kd": kd_term.detach(), "kd_per_expert": kd_per_expert.detach()}
    return ce_term + kd_term, stats


class DistillationLoss:
    """The student's loss function for `lfme.engine.train_epoch`: `lfme_loss` on each batch.

    Built once per training run; the self-paced schedules change per epoch
    through `expert_weights` (w_l, SpES; None: no KD term) and
    `instance_weights` (v_i per row of `rows`, SpIS; None: v_i = 1). The KD
    targets come from `teachers` (`lfme.teachers`: the cache's rows or live
    experts, the same call either way); v_i is looked up by sample id in
    `rows`, the cache's training rows it was computed for.
    """

    def __init__(
        self,
        teachers: TeacherSignal | None,
        rows: TeacherRows,
        subsets_classes: list[torch.Tensor],
        temperature: float = 2.0,
        t_squared: bool = False,
        spis_on: str = "loss",
        ce_offsets: torch.Tensor | None = None,
    ):
        self.teachers = teachers
        self.ce_offsets = ce_offsets
        self.rows = rows
        self.subsets_classes = subsets_classes
        self.temperature = temperature
        self.t_squared = t_squared
        self.spis_on = spis_on
        self.expert_weights: torch.Tensor | None = None
        self.instance_weights: np.ndarray | None = None
        self._copies = DeviceCopies()

    def __call__(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict]:
        # Everything the loss needs on the device gets there without making the
        # host wait (lfme.devices): the class indices and w_l once, v_i per batch.
        device = logits.device
        weights = targets = None
        if self.teachers is not None and self.expert_weights is not None:
            targets = self.teachers.targets(batch)
            weights = self._copies.get("expert_weights", torch.as_tensor(self.expert_weights, dtype=torch.float32), device)
        v = None
        if self.instance_weights is not None:
            v = to_device(torch.from_numpy(self.instance_weights[self.rows.rows_for(batch.sample_ids.numpy())]), device)
        classes = [self._copies.get(f"classes{l}", c, device) for l, c in enumerate(self.subsets_classes)]
        offsets = None if self.ce_offsets is None else self._copies.get("ce_offsets", self.ce_offsets, device)
        return lfme_loss(
            logits, batch.labels, targets, classes, weights, v, self.temperature, self.t_squared, self.spis_on, offsets
        )
