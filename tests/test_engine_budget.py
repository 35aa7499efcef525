"""lfme.engine.epochs_for_budget: the experts' training budget in SGD steps (experts.min_steps)."""

from __future__ import annotations

import pytest

from lfme.engine import epochs_for_budget


@pytest.mark.parametrize(
    "images, batch, epochs, min_steps, expected",
    [
        (4980, 128, 8, 0, 8),        # no budget: the epochs as configured
        (4980, 128, 8, 200, 8),      # 40 steps an epoch: 8 epochs already give 320 >= 200
        (300, 128, 8, 200, 67),      # 3 steps an epoch (ceil 300/128): ceil(200 / 3) = 67 epochs
        (256, 128, 8, 200, 100),     # exactly 2 steps an epoch: 100 epochs
        (257, 128, 8, 200, 67),      # one image more makes a third, smaller step
        (10, 128, 8, 200, 200),      # fewer images than a batch: one step an epoch
        (0, 128, 3, 10, 10),         # an empty set still counts one (empty) step an epoch, never divides by 0
    ],
)
def test_epochs_by_hand(images, batch, epochs, min_steps, expected):
    assert epochs_for_budget(images, batch, epochs, min_steps) == expected
