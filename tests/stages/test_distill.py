"""The distill stage's pure parts (stages/distill.py), without Ray: epoch length, sampler, which student is kept."""

import numpy as np
import pytest
import torch

from rundir.config import load_config
from stages.distill import epoch_length, kept_student, make_sampler

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
