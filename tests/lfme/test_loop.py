"""lfme.loop: the one epoch loop of the experts and the student, and its checkpoint protocol."""

from __future__ import annotations

import copy

import pytest
import torch

from lfme.engine import EpochStats, NonFiniteLossError
from lfme.loop import EpochResult, LoopState, load_state, run_epochs, state_dict


class MemoryCheckpoints:
    """Checkpoints kept in a list, each a deep copy of what `state_dict` lays out (as a file or Ray Train would keep it)."""

    def __init__(self):
        self.saved: list[dict] = []

    def restore(self, model, optimizer, scheduler) -> LoopState | None:
        return load_state(copy.deepcopy(self.saved[-1]), model, optimizer, scheduler) if self.saved else None

    def save(self, state, model, optimizer, scheduler) -> None:
        self.saved.append(copy.deepcopy(state_dict(state, model, optimizer, scheduler)))


class Stop(Exception):
    """A kill in the middle of an epoch."""


def parts():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


X = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10
Y = torch.tensor([0, 1, 1, 0])
VAL_ACC = {1: 0.5, 2: 0.75, 3: 0.25, 4: 0.75}  # epoch 2 is the best; epoch 4 ties it and does not replace it


def epoch_fn(model, optimizer, scheduler, stop_at: int | None = None, nan_at: int | None = None):
    def one_epoch(epoch: int, state: LoopState) -> EpochResult:
        if epoch == stop_at:
            raise Stop
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), Y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        value = float("nan") if epoch == nan_at else loss.item()
        if value != value:
            raise NonFiniteLossError(f"epoch {epoch}: nan")
        state.carry = {"runs": state.carry["runs"] + [epoch]}
        return EpochResult(EpochStats(loss=value, accuracy=0.5, samples=len(Y), seconds=0.0, parts={}), VAL_ACC[epoch], {"extra": epoch * 10})

    return one_epoch


def run(checkpoints, epochs=4, say=None, **kw):
    model, optimizer, scheduler = parts()
    fresh_calls = []

    def fresh():
        fresh_calls.append(1)
        return LoopState(carry={"runs": []})

    state = run_epochs(
        epochs, model, optimizer, scheduler, checkpoints, epoch_fn(model, optimizer, scheduler, **kw),
        tag="t", fresh=fresh, keep_best=True, say=say,
    )
    return state, model, len(fresh_calls)


def test_history_best_and_carry_of_an_uninterrupted_loop():
    lines = []
    state, model, fresh_calls = run(MemoryCheckpoints(), say=lines.append)
    assert fresh_calls == 1
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4]
    assert [h["val_acc"] for h in state.history] == [0.5, 0.75, 0.25, 0.75]
    assert [h["extra"] for h in state.history] == [10, 20, 30, 40]
    assert list(state.history[0]) == ["epoch", "loss", "train_acc", "val_acc", "extra", "seconds"]
    assert state.best["epoch"] == 2 and state.best["val_acc"] == 0.75  # the first of two equal epochs
    assert state.carry == {"runs": [1, 2, 3, 4]}
    assert len(lines) == 4 and lines[0].startswith("[t] epoch 1/4  loss ")


def test_a_loop_killed_mid_epoch_resumes_from_its_last_checkpoint_to_the_same_end():
    whole, whole_model, _ = run(MemoryCheckpoints())
    checkpoints = MemoryCheckpoints()
    with pytest.raises(Stop):
        run(checkpoints, stop_at=3)
    assert [c["epoch"] for c in checkpoints.saved] == [1, 2]
    lines = []
    resumed, resumed_model, fresh_calls = run(checkpoints, say=lines.append)
    assert fresh_calls == 0 and lines[0] == "[t] resuming after epoch 2"
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.carry == whole.carry and resumed.best["epoch"] == whole.best["epoch"]
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(), whole_model.state_dict().values()))
    # the scheduler resumed too: lr 0.1 halved after each of the 4 epochs
    assert checkpoints.saved[-1]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 / 2**4)


def test_a_diverged_epoch_is_not_checkpointed():
    checkpoints = MemoryCheckpoints()
    with pytest.raises(NonFiniteLossError):
        run(checkpoints, nan_at=3)
    assert [c["epoch"] for c in checkpoints.saved] == [1, 2]


def test_a_loop_resumed_after_its_last_epoch_trains_nothing_and_saves_that_epoch_again():
    checkpoints = MemoryCheckpoints()
    run(checkpoints)
    state, _, fresh_calls = run(checkpoints)
    assert fresh_calls == 0 and len(state.history) == 4
    assert [c["epoch"] for c in checkpoints.saved] == [1, 2, 3, 4, 4]


def test_a_one_process_checkpoint_holds_the_rng_so_the_next_draws_repeat():
    from lfme.loop import load_process_state, process_state_dict

    model, optimizer, scheduler = parts()
    state = LoopState(history=[{"epoch": 1}], carry={"runs": []})
    epoch_fn(model, optimizer, scheduler)(1, state)  # one step: weights, optimiser and scheduler moved
    torch.manual_seed(7)
    torch.rand(3)  # the RNG somewhere in its stream, as after an epoch's augmentation
    saved = copy.deepcopy(process_state_dict(state, model, optimizer, scheduler))
    assert set(saved) == {"rng", *state_dict(state, model, optimizer, scheduler)}
    after_save = torch.rand(5)

    torch.manual_seed(123)  # a new process: another stream, fresh parts
    model2, optimizer2, scheduler2 = parts()
    restored = load_process_state(saved, model2, optimizer2, scheduler2)
    assert torch.equal(torch.rand(5), after_save)
    assert restored.history == [{"epoch": 1}] and restored.carry == {"runs": [1]}
    assert torch.equal(model2.weight, model.weight) and scheduler2.state_dict() == scheduler.state_dict()
