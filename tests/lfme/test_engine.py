"""lfme.engine: the experts' training budget in SGD steps (experts.min_steps); an epoch that reads its sums once."""

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


def test_train_epoch_reads_its_sums_once_per_epoch_not_per_step(monkeypatch):
    """No `.item()` per batch (each one would make the Python loop wait for a GPU): the count does not grow with batches."""
    import torch
    from torch import nn

    from lfme.engine import cross_entropy_loss, train_epoch

    reads = {"n": 0}
    real_item = torch.Tensor.item

    def counting_item(self):
        reads["n"] += 1
        return real_item(self)

    def epoch(batches: int) -> int:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        data = [(torch.randn(5, 4), torch.randint(0, 3, (5,)), torch.arange(5)) for _ in range(batches)]
        reads["n"] = 0
        monkeypatch.setattr(torch.Tensor, "item", counting_item)
        stats = train_epoch(model, data, torch.optim.SGD(model.parameters(), lr=0.1), cross_entropy_loss, torch.device("cpu"))
        monkeypatch.setattr(torch.Tensor, "item", real_item)
        assert stats.samples == 5 * batches and 0 < stats.parts["ce"] and stats.parts["ce"] == stats.loss
        return reads["n"]

    assert epoch(2) == epoch(12) <= 4  # loss, accuracy, and each logged part: once each
