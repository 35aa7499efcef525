"""stages.tasks without Ray: a failure drains the tasks in flight, a file that cannot be read is named."""

from __future__ import annotations

import pytest


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
