"""stages.distill's pure parts, without Ray: epoch length, samplers, which student is kept, Acc_E and the student's
validation counts (SpES's inputs), the TensorBoard scalars."""

import numpy as np
import pytest
import torch
from torch import nn

from lfme.precision import FP32
from lfme.subsets import Subset
from lfme.teacher_cache import TeacherRows
from rundir.config import load_config
from stages.distill import accuracy_of, epoch_length, epoch_scalars, expert_accuracies, kept_student, make_sampler, validation_counts

COUNTS = np.array([1280, 300, 40, 5])  # N = 1,625


def distill(*sets):
    return load_config(None, list(sets)).distill


def test_an_official_epoch_is_the_official_loops_int_n_over_batch_steps():
    # The official loop stops after int(N / batch) steps: int(1625 / 128) = 12 batches = 1,536 samples,
    # not its sampler's nominal max_count x C = 5,120.
    assert epoch_length(distill("distill.epoch_length=official", "distill.batch_size=128"), COUNTS) == 1_536
    assert epoch_length(distill("distill.epoch_length=dataset"), COUNTS) == 1_625
    assert epoch_length(distill("distill.epoch_length=official", "distill.batch_size=4096"), COUNTS) == 4_096  # one batch at least


@pytest.mark.parametrize("draw", ["cycle", "iid"])
def test_the_class_sampler_draws_classes_as_configured(draw):
    labels = np.repeat(np.arange(4), COUNTS)
    sampler = make_sampler(distill("distill.sampling=class", f"distill.class_draw={draw}"), labels, COUNTS, 1, 0, seed=0)
    assert sampler.draw == draw and len(sampler) == 1_628  # 1,625 in whole groups of 4


def test_the_kept_student_is_the_last_or_the_best_validation_epochs():
    last_weights, best_weights = {"w": torch.ones(1)}, {"w": torch.zeros(1)}
    state = {
        "model": last_weights,
        "history": [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}, {"epoch": 3, "val_acc": 0.6}],
        "best": {"epoch": 2, "val_acc": 0.7, "model": best_weights},
    }
    weights, summary = kept_student(state, "last")
    assert weights is last_weights and summary == {"kept": "last", "last_epoch": 3, "last_val_acc": 0.6}
    weights, summary = kept_student(state, "best")
    assert weights is best_weights
    assert summary == {"kept": "best", "last_epoch": 3, "last_val_acc": 0.6, "best_epoch": 2, "best_val_acc": 0.7}


def test_instance_sampling_shares_the_images_between_the_ranks():
    labels = np.repeat(np.arange(4), COUNTS)
    config = distill("distill.sampling=instance")
    shares = [list(make_sampler(config, labels, COUNTS, 2, rank, seed=0)) for rank in (0, 1)]
    # 1,625 images over 2 ranks: 813 each (torch pads the odd one out by repeating the first), together all of them.
    assert [len(share) for share in shares] == [813, 813]
    assert set(shares[0]) | set(shares[1]) == set(range(1_625))


def rows(logits, labels) -> TeacherRows:
    n = len(labels)
    return TeacherRows(
        np.arange(n, dtype=np.int64), np.asarray(labels, np.int64), np.zeros(n, np.int32),
        np.asarray(logits, np.float16), np.ones(n, np.float32),
    )


SUBSETS = [Subset("many", (0, 1)), Subset("few", (2, 3))]
# Rows 0-2 are of "many" (labels 0, 1, 0), rows 3-5 of "few" (labels 2, 3, 3).
VAL_LOGITS = [
    [1.0, 0.0, 9.0, 0.0],  # label 0: among (0, 1) argmax 0, right (over all four classes it would be 2)
    [0.0, 1.0, 0.0, 0.0],  # label 1: 1, right
    [2.0, 1.0, 0.0, 0.0],  # label 0: 0, right
    [5.0, 0.0, 1.0, 0.0],  # label 2: among (2, 3) argmax 2, right
    [0.0, 0.0, 2.0, 1.0],  # label 3: 2, wrong
    [0.0, 0.0, 0.0, 3.0],  # label 3: 3, right
]
VAL_LABELS = [0, 1, 0, 2, 3, 3]


@pytest.mark.parametrize("chunk", [4096, 4, 1])
def test_each_experts_accuracy_is_taken_among_its_own_classes_on_its_subsets_rows(chunk):
    # By hand from the comments above: many 3 of 3, few 2 of 3, whatever the chunking.
    assert expert_accuracies(rows(VAL_LOGITS, VAL_LABELS), SUBSETS, chunk=chunk) == pytest.approx([1.0, 2 / 3])


def test_validation_counts_are_each_classes_hits_and_images_and_a_subsets_accuracy_pools_them():
    # nn.Identity: the "images" are the logits; the student predicts among all four classes here:
    # argmax 2, 1, 0, 0, 2, 3 against 0, 1, 0, 2, 3, 3.
    loader = [(torch.tensor(VAL_LOGITS[:4]), torch.tensor(VAL_LABELS[:4]), torch.arange(4)),
              (torch.tensor(VAL_LOGITS[4:]), torch.tensor(VAL_LABELS[4:]), torch.arange(4, 6))]
    counts = validation_counts(nn.Identity(), loader, 5, torch.device("cpu"), FP32)
    assert counts.tolist() == [[1, 1, 0, 1, 0], [2, 1, 1, 2, 0]]  # class 4 has no validation image
    assert accuracy_of(counts, (0, 1)) == pytest.approx(2 / 3) and accuracy_of(counts, (2, 3)) == pytest.approx(1 / 3)
    assert validation_counts(nn.Identity(), [], 5, torch.device("cpu"), FP32).tolist() == [[0] * 5, [0] * 5]


def test_the_scalars_of_an_epoch_name_each_experts_weight():
    record = {
        "epoch": 4, "loss": 1.5, "ce": 1.0, "kd": 0.5, "train_acc": 0.6, "val_acc": 0.55, "lr": 0.01,
        "mean_instance_weight": 0.9, "seconds": 2.0, "weights_used": {"many": 0.2, "few": 1.0}, "precision": "fp32",
    }
    assert epoch_scalars(record) == {
        "loss": 1.5, "ce": 1.0, "kd": 0.5, "train_acc": 0.6, "val_acc": 0.55, "lr": 0.01,
        "mean_instance_weight": 0.9, "seconds": 2.0, "w/many": 0.2, "w/few": 1.0,
    }
    # Without KD (no weights) only the common scalars.
    assert set(epoch_scalars({**record, "weights_used": {}})) == {"loss", "ce", "kd", "train_acc", "val_acc", "lr", "mean_instance_weight", "seconds"}
