"""stages.experts' pure parts: an expert's validation accuracy, its samplers, its checkpoint file and its result record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lfme.precision import FP32
from lfme.sampling import DistributedClassBalancedSampler
from lfme.subsets import Subset
from stages import experts
from stages.experts import JOINT, expert_record, expert_scalars, training_sampler, validation_accuracy

CPU = torch.device("cpu")


def test_validation_accuracy_is_the_top_1_of_the_models_logits_over_every_batch():
    # nn.Identity: the "images" are the logits. Argmax per row: 1, 0, 2 | 2, 2 against labels 1, 1, 2 | 0, 2: 3 of 5.
    batches = [
        (torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.2, 0.7]]), torch.tensor([1, 1, 2]), torch.arange(3)),
        (torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 1.0]]), torch.tensor([0, 2]), torch.arange(3, 5)),
    ]
    assert validation_accuracy(nn.Identity(), batches, CPU, FP32) == pytest.approx(3 / 5)


LABELS = np.array([0] * 90 + [1] * 10)


def test_an_expert_samples_each_of_its_images_once_an_epoch_in_an_order_set_by_seed_and_epoch():
    sampler = training_sampler(Subset("many", (0, 1)), LABELS, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    again = training_sampler(Subset("many", (0, 1)), LABELS, seed=3)
    again.set_epoch(1)
    assert list(again) == first  # a resumed expert sees the same epoch
    again.set_epoch(2)
    assert list(again) != first
    other_seed = training_sampler(Subset("many", (0, 1)), LABELS, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != first


def test_the_joint_model_samples_its_classes_evenly_in_groups_of_four():
    sampler = training_sampler(Subset(JOINT, (0, 1)), LABELS, seed=0)
    assert isinstance(sampler, DistributedClassBalancedSampler) and sampler.draw == "cycle"
    drawn = LABELS[list(sampler)]
    # 100 draws in 25 groups of 4, the two classes taking turns in the cycle: 12 or 13 groups each, so the
    # 10-image class is drawn 48 or 52 times rather than 10.
    assert len(drawn) == 100 and int((drawn == 1).sum()) in (48, 52)


HISTORY = [
    {"epoch": 1, "loss": 2.0, "train_acc": 0.3, "val_acc": 0.4, "lr": 0.1, "seconds": 1.5},
    {"epoch": 2, "loss": 1.0, "train_acc": 0.6, "val_acc": 0.7, "lr": 0.05, "seconds": 1.25},
    {"epoch": 3, "loss": 0.5, "train_acc": 0.8, "val_acc": 0.65, "lr": 0.0, "seconds": 1.0},
]


def test_the_scalars_of_an_epoch_are_its_loss_accuracies_lr_and_seconds():
    assert expert_scalars(HISTORY[1]) == {"loss": 1.0, "train_acc": 0.6, "val_acc": 0.7, "lr": 0.05, "seconds": 1.25}
    with pytest.raises(KeyError):
        expert_scalars({"loss": 1.0})


def test_the_result_record_keeps_the_best_epoch_and_counts_the_steps_taken(monkeypatch):
    monkeypatch.setattr(experts.ray, "get_gpu_ids", lambda: [0])  # as Ray gives a task its GPU
    subset = Subset("few", (2, 5, 8))
    record = expert_record("fp-1", subset, HISTORY, {"epoch": 2, "val_acc": 0.7}, 12, "bf16", CPU, started_at=100.0)
    assert {key: record[key] for key in ("fingerprint", "subset", "classes", "val_accuracy", "best_epoch", "epochs")} == {
        "fingerprint": "fp-1", "subset": "few", "classes": [2, 5, 8], "val_accuracy": 0.7, "best_epoch": 2, "epochs": 3,
    }
    # 3 epochs of 12 batches: 36 SGD steps, what experts.min_steps budgets.
    assert record["steps"] == 36 and record["precision"] == "bf16"
    assert record["gpu_ids"] == ["0"] and record["device"] == "cpu"
    assert record["started_at"] == 100.0 <= record["finished_at"] and record["history"] is HISTORY
