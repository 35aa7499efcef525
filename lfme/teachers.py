"""Live teachers: the frozen experts run on each batch, giving teacher-cache-shaped logits.

The pipeline computes the teacher signal once and reads it from the teacher
cache (lfme.teacher_cache). `LiveTeachers` produces the same signal by running
the experts on the images at hand, for the cases where a cache does not fit:
teachers on augmented views, a comparison against the cache (the speed
benchmark in benchmarks/cache_speed.py), or a quick experiment without the
cache stage. Its output has the cache's layout, one C-wide row per image in
global class order with expert l filling the columns of its subset's classes,
so `lfme.losses.lfme_loss` takes either.

Note the signal differs from the cache's when the images differ: a cache of
one view (`cache.views: 1`) holds the experts on the un-augmented
(test-transform) image, while live teachers fed a training batch see the
augmented one. A cache of K views holds the experts on K augmented views of
each image (or K x N views shared by the student's draws, `cache.allot`), and
each draw of an image replays one of them (`lfme.data.views`): then the
student and its cached teachers see the same pixels, as with live teachers.

Plain PyTorch, no Ray.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lfme.devices import to_device
from lfme.engine import Batch
from lfme.precision import FP32, Precision
from lfme.subsets import Subset, subset_of_class
from lfme.teacher_cache import VIEW_WIDTH, TeacherRows, TopK


class TeacherSignal(Protocol):
    """What the student's loss learns from: the experts' logits for a batch."""

    def targets(self, batch: Batch) -> torch.Tensor:
        """(B, num_classes) float32 teacher logits in global class order, on the batch's device."""
        ...


class CachedTeachers:
    """The teacher signal read from the teacher cache: each image's row, found by its sample id.

    The float16 logits stay where the rows keep them (in memory, or mapped
    from the node's copy by `lfme.teacher_cache.map_cache`, shared by every
    worker on the node); only a batch's rows are gathered, copied, and moved
    to its device as float32.

    Rows of augmented views (`cache.views`, `cache.allot`): each image's
    signal is read for the view its batch says it replays (`Batch.views`, set
    by the loader of `lfme.data.views`), counted from the image's first row.
    """

    def __init__(self, rows: TeacherRows):
        self.rows = rows

    def targets(self, batch: Batch) -> torch.Tensor:
        views = None
        if self.rows.augmented:
            if batch.views is None:
                raise ValueError("the teacher cache holds augmented views of each image: the batch must say which it replays")
            views = batch.views.numpy()
        ids = batch.sample_ids.numpy()
        return to_device(torch.from_numpy(self.rows.dense(self.rows.rows_for(ids), views)), batch.images.device)


class LiveTeachers(nn.Module):
    """Frozen experts whose outputs are scattered into global class order.

    `experts[l]` maps images to logits over `subsets[l].classes` (in that
    sorted order, the label space the expert was trained in); the subsets must
    partition 0..num_classes-1. The experts are frozen here for good: their
    parameters stop requiring gradients, they stay in eval mode (batch-norm
    running statistics, no dropout) whatever `train()` is called on this
    module, and `forward` runs without autograd.
    """

    def __init__(
        self, experts: Sequence[nn.Module], subsets: Sequence[Subset], num_classes: int, precision: Precision = FP32
    ):
        super().__init__()
        self.precision = precision  # what `targets` runs the experts in (the student's)
        if len(experts) != len(subsets):
            raise ValueError(f"{len(experts)} experts for {len(subsets)} subsets: one expert per subset is needed")
        subset_of_class(subsets, num_classes)  # raises unless the subsets partition 0..C-1
        self.experts = nn.ModuleList(experts)
        self.experts.requires_grad_(False)
        self.num_classes = int(num_classes)
        # Buffers, so .to(device) moves the column indices with the experts; not
        # persistent, because they come from the subsets, not from a checkpoint.
        for l, subset in enumerate(subsets):
            self.register_buffer(f"_classes{l}", torch.tensor(subset.classes, dtype=torch.long), persistent=False)
        self.train(False)

    def class_indices(self) -> list[torch.Tensor]:
        """Expert l's global class indices (its output columns), on the module's device."""
        return [getattr(self, f"_classes{l}") for l in range(len(self.experts))]

    def train(self, mode: bool = True) -> LiveTeachers:
        # A student's model.train() reaches submodules too; the experts must keep
        # their eval-mode behaviour or the teacher signal would change per batch.
        super().train(mode)
        self.experts.eval()
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) float32 teacher logits in global class order.

        no_grad rather than inference_mode: the loss multiplies the teacher's
        softmax into the student's graph, and inference tensors cannot be
        saved for backward.
        """
        out = torch.empty(images.shape[0], self.num_classes, dtype=torch.float32, device=images.device)
        for expert, classes in zip(self.experts, self.class_indices()):
            logits = expert(images)
            if logits.shape != (images.shape[0], classes.numel()):
                raise ValueError(
                    f"an expert for {classes.numel()} classes returned logits of shape {tuple(logits.shape)} "
                    f"for {images.shape[0]} images"
                )
            out[:, classes] = logits.float()
        return out

    def targets(self, batch: Batch) -> torch.Tensor:
        """The experts on the batch's images (the augmented views the student sees), in the student's precision."""
        with self.precision.autocast():
            return self(batch.images)


def expert_confidence(logits: np.ndarray, labels: np.ndarray, subsets: Sequence[Subset]) -> np.ndarray:
    """p_i: the softmax probability of y_i under the expert whose subset holds y_i.

    `logits` are teacher logits in global class order (the cache's layout), so
    the softmax runs over the columns of y_i's subset only. p_i is SpIS's
    instance difficulty cue (docs/METHOD.md section 7).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    owner = subset_of_class(subsets, logits.shape[1])
    p = np.empty(len(labels), dtype=np.float32)
    for l, subset in enumerate(subsets):
        rows = np.flatnonzero(owner[labels] == l)
        classes = np.asarray(subset.classes)
        z = logits[np.ix_(rows, classes)].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        p[rows] = probs[np.arange(len(rows)), np.searchsorted(classes, labels[rows])]
    return p


def top_k_signal(logits: np.ndarray, subsets: Sequence[Subset], k: int) -> TopK:
    """Per expert, its k largest logits with their classes and the rest logit m_l (`lfme.teacher_cache.TopK`)."""
    logits = np.asarray(logits)
    owner = subset_of_class(subsets, logits.shape[1])
    values, classes, rest = [], [], []
    for subset in subsets:
        columns = np.asarray(subset.classes)
        z = logits[:, columns].astype(np.float64)
        kept = min(k, len(columns))
        top = np.argsort(-z, axis=1, kind="stable")[:, :kept]
        values.append(np.take_along_axis(z, top, axis=1))
        classes.append(columns[top])
        if kept == len(columns):
            rest.append(np.zeros(len(z)))
            continue
        np.put_along_axis(z, top, -np.inf, axis=1)  # what is left: the dropped classes
        peak = z.max(axis=1, keepdims=True)
        rest.append(peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1) / (len(columns) - kept)))
    return TopK(
        int(k),
        np.concatenate(values, axis=1).astype(np.float16),
        np.concatenate(classes, axis=1).astype(np.int32),
        np.stack(rest, axis=1).astype(np.float16),
        owner.astype(np.int64),
    )


def teacher_rows(
    sample_ids: np.ndarray,
    labels: np.ndarray,
    logits: np.ndarray | None,
    subsets: Sequence[Subset],
    top_k: int | None = None,
    view_logits: np.ndarray | None = None,
    view_params: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> TeacherRows:
    """The teacher cache's rows for these samples, from the experts' float32 logits in global class order.

    Adds what the cache stores beside the logits: each sample's subset (the
    one holding its label) and p_i (`expert_confidence`, from the float32
    logits, before they are stored as float16). `top_k`: keep each expert's k
    largest logits only (`top_k_signal`); p_i is still computed from all.

    `view_logits` (n, K, C), `view_params` (n, K, 9): the experts on K
    augmented views of each image and the views (`lfme.data.views`). The
    stored signal is then theirs, view by view; `logits` (the un-augmented
    view) give p_i only, one per image, as the official code computes it.

    `confidence` (`cache.allot: draws`): each row's p_i, computed once per
    image apart from its views (`logits` then None); the rows are then rows
    of allot draws, several of them per image.
    """
    labels = np.asarray(labels).astype(np.int64)
    if confidence is not None:
        p, allot = np.asarray(confidence, np.float32), "draws"
    elif logits is not None:
        p, allot = expert_confidence(logits, labels, subsets), "uniform"
    else:
        raise ValueError("p_i needs the logits of the un-augmented view, or comes given (confidence)")
    signal = np.asarray(logits if view_logits is None else view_logits)
    n, views, num_classes = len(labels), 1 if view_logits is None else int(signal.shape[1]), int(signal.shape[-1])
    owner = subset_of_class(subsets, num_classes)
    signal = signal.reshape(n * views, num_classes)
    topk = None
    if top_k:
        t = top_k_signal(signal, subsets, top_k)
        topk = t.map_arrays(lambda a: a.reshape(n, views * a.shape[1]))
    return TeacherRows(
        sample_ids=np.asarray(sample_ids).astype(np.int64),
        labels=labels,
        subsets=owner[labels].astype(np.int32),
        logits=None if top_k else signal.astype(np.float16).reshape(n, views * num_classes),
        confidence=p,
        topk=topk,
        views=views,
        view_params=None if view_params is None else np.asarray(view_params, np.float32).reshape(n, views * VIEW_WIDTH),
        allot=allot,
    )


def score_batches(
    teachers: LiveTeachers, batches, subsets: Sequence[Subset], top_k: int | None, device, views: int = 1, confidence: TeacherRows | None = None
) -> TeacherRows:
    """The cache's rows for every image of `batches`: the experts run once over each image and each of its views.

    A batch is `(images, labels, sample_ids)` (one un-augmented view per
    image; `views` 1) or `(images, views_images (B, K, ...), views (B, K, 9),
    labels, sample_ids)` (`lfme.data.views.ViewsOfImages`; `views` K).
    `confidence` (`cache.allot: draws`): the images' rows from their
    un-augmented view (this function over a test loader); the batches are
    then blocks of `views` views without the test view (`ViewsOfImages` with
    blocks), and each row takes its image's p_i from there.
    """

    def experts_on(images: torch.Tensor) -> np.ndarray:
        with teachers.precision.autocast():
            return teachers(teachers.precision.inputs(images.to(device, non_blocking=True))).cpu().numpy()

    augmented = views > 1 or confidence is not None
    pieces = []
    for batch in batches:
        labels, sample_ids = batch[-2].numpy(), batch[-1].numpy()
        view_logits = view_params = None
        if augmented:
            crops, view_params = batch[-4], batch[-3].numpy()
            view_logits = np.stack([experts_on(crops[:, v]) for v in range(views)], axis=1)
        if confidence is None:
            pieces.append(teacher_rows(sample_ids, labels, experts_on(batch[0]), subsets, top_k, view_logits, view_params))
        else:
            p = confidence.confidence[confidence.rows_for(sample_ids)]
            pieces.append(teacher_rows(sample_ids, labels, None, subsets, top_k, view_logits, view_params, p))
    if not pieces:  # no images: no rows, in the cache's layout
        c, none = teachers.num_classes, np.zeros(0)
        view_logits, view_params = (np.zeros((0, views, c), np.float32), np.zeros((0, views, 9), np.float32)) if augmented else (None, None)
        p = None if confidence is None else none
        pieces.append(teacher_rows(none, none, np.zeros((0, c), np.float32), subsets, top_k, view_logits, view_params, p))
    return TeacherRows.concat(pieces)
