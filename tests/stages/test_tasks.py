"""stages.tasks without Ray: a failure drains the tasks in flight, a file that cannot be read is named, a task's checkpoint file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lfme.loop import LoopState
from stages import tasks


@pytest.mark.parametrize("wait_fails", [False, True])
def test_a_failure_waits_for_the_tasks_in_flight_without_cancelling_them(monkeypatch, wait_fails):
    from stages import tasks

    calls = []

    def wait(refs, num_returns, timeout):
        calls.append(("wait", list(refs), num_returns, timeout))
        if wait_fails:
            raise ConnectionError("Ray is shutting down")

    # Not cancelled: a cancel racing a finishing task crashes the driver in Ray 2.60 (tasks.drained_on_failure).
    monkeypatch.setattr(tasks.ray, "cancel", lambda ref, force: calls.append(("cancel", ref, force)))
    monkeypatch.setattr(tasks.ray, "wait", wait)
    pending = {"a": 0}
    with pytest.raises(ValueError, match="shard 1 failed"):  # the task's error, not the wait's
        with tasks.drained_on_failure(pending):
            pending["b"] = 1  # read when the failure comes, not when the block starts
            raise ValueError("shard 1 failed")
    assert calls == [("wait", ["a", "b"], 2, tasks.DRAIN_WAIT_S)]


def test_a_damaged_file_is_named_when_it_cannot_be_read(tmp_path):
    from lfme import storage
    from stages import tasks

    damaged = tmp_path / "model.pt"
    damaged.write_bytes(b"not a zip archive")
    with pytest.raises(tasks.UnreadableFileError) as raised:
        with tasks.reading(str(damaged), "weights of expert 'few'"):
            storage.load_torch(str(damaged))
    message = str(raised.value)
    assert message.startswith(f"{damaged}: cannot read the weights of expert 'few' (")
    assert "lfme verify" in message and "\n" not in message and len(message) < 300
    with pytest.raises(FileNotFoundError):  # a missing file names itself already
        with tasks.reading(str(tmp_path / "gone.pt"), "student"):
            storage.load_torch(str(tmp_path / "gone.pt"))


class Stateful:
    """An optimiser or scheduler as the checkpoint sees it: a state_dict to save and load."""

    def __init__(self, **state):
        self.state = state

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def small_training(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2), Stateful(step=0), Stateful(last_epoch=0)


def test_a_task_checkpoint_restores_its_epoch_and_random_stream_only_for_the_same_settings(tmp_path):
    path = str(tmp_path / "experts" / "few" / "checkpoint.pt")
    model, optimizer, scheduler = small_training()
    assert tasks.FileCheckpoints(path, "fp-1", "expert few").restore(model, optimizer, scheduler) is None  # nothing saved yet
    optimizer.state, scheduler.state = {"step": 12}, {"last_epoch": 1}  # after one epoch
    state = LoopState(history=[{"epoch": 1, "val_acc": 0.5}], best=None, carry={})
    tasks.FileCheckpoints(path, "fp-1", "expert few").save(state, model, optimizer, scheduler)
    saved_weights = model.weight.detach().clone()
    next_draw = torch.rand(3)  # the draw that follows the checkpoint

    other, other_optimizer, other_scheduler = small_training(seed=1)
    # Other settings (another stage fingerprint): the checkpoint is not this expert's, it starts over.
    assert tasks.FileCheckpoints(path, "fp-2", "expert few").restore(other, other_optimizer, other_scheduler) is None
    assert not torch.equal(other.weight, saved_weights) and other_optimizer.state == {"step": 0}
    restored = tasks.FileCheckpoints(path, "fp-1", "expert few").restore(other, other_optimizer, other_scheduler)
    assert restored.history == [{"epoch": 1, "val_acc": 0.5}]
    assert torch.equal(other.weight, saved_weights)
    assert (other_optimizer.state, other_scheduler.state) == ({"step": 12}, {"last_epoch": 1})
    assert torch.equal(torch.rand(3), next_draw)  # the RNG state came back with it


def test_a_damaged_task_checkpoint_costs_its_epochs_and_says_so(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a zip archive")
    model, optimizer, scheduler = small_training()
    assert tasks.FileCheckpoints(str(path), "fp-1", "expert few").restore(model, optimizer, scheduler) is None
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"[expert few] {path}: cannot read the checkpoint (") and line.endswith("; training from epoch 1")
