"""stages.workers without a cluster: a Ray Train run's record that a kill cut short is rebuilt so that Ray loads it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ray.train import CheckpointConfig
from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
from ray.train.v2._internal.execution.storage import StorageContext

from rundir.layout import STATE_FILE
from stages import ray_compat, workers

# Ray Train names checkpoint folders by the time of their report.
FOLDERS = [f"checkpoint_2026-12-06_22-10-4{second}.000000" for second in (1, 2, 3, 4)]


def history(epochs: int) -> list[dict]:
    return [{"epoch": e, "loss": 2.0 / e, "val_acc": 0.1 * e, "seconds": 0.5} for e in range(1, epochs + 1)]


def checkpoint_folders(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.is_dir())


def cut_short(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def ray_train_run(root: Path, record: bytes) -> Path:
    """A run folder of two ranks as a kill leaves it: epochs 1 and 2 whole, epoch 3's rank-1 RNG state and
    epoch 4's training state cut short (each rank copies its own files), then the given record."""
    run = root / "distill-student-abc"
    for epoch, folder in enumerate(FOLDERS, start=1):
        (run / folder).mkdir(parents=True)
        torch.save({"history": history(epoch), "model": {}}, run / folder / STATE_FILE)
        for rank in (0, 1):
            torch.save({"torch": torch.get_rng_state()}, run / folder / workers.rng_file(rank))
    cut_short(run / FOLDERS[2] / workers.rng_file(1))
    cut_short(run / FOLDERS[3] / STATE_FILE)
    (run / ray_compat.TRAIN_RECORD).write_bytes(record)
    return run


def ray_loads(run: Path) -> CheckpointManager:
    """What Ray Train's controller does with the run's record when `fit` starts it again."""
    return CheckpointManager(CheckpointConfig(num_to_keep=2), StorageContext(str(run.parent), run.name))


def test_a_cut_short_record_is_rebuilt_from_the_newest_whole_checkpoint_and_ray_loads_it(tmp_path, capsys):
    run = ray_train_run(tmp_path, b'{"ray_version": "2.6')  # as a write stopped mid-way leaves it
    assert ray_compat.train_record_is_damaged(str(run))

    workers.repair_record(str(run))

    assert checkpoint_folders(run) == [FOLDERS[1]]  # epochs 3 and 4 are cut short; epoch 1's is not listed
    manager = ray_loads(run)
    latest = manager.latest_checkpoint_result
    assert Path(latest.checkpoint.path).name == FOLDERS[1]
    assert latest.metrics == {"epoch": 2, "loss": 1.0, "val_acc": 0.2}  # what `ray.train.report` sent for epoch 2
    assert json.loads((run / ray_compat.TRAIN_RECORD).read_text())["current_report_index"] == 2
    out = capsys.readouterr().out
    assert str(run) in out and f"resuming from {FOLDERS[1]} (epoch 2)" in out


def test_an_empty_record_without_a_whole_checkpoint_goes_and_the_run_starts_over(tmp_path, capsys):
    run = ray_train_run(tmp_path, b"")
    for folder in FOLDERS[:2]:
        cut_short(run / folder / workers.rng_file(0))

    workers.repair_record(str(run))

    assert not list(run.iterdir())
    assert ray_loads(run).latest_checkpoint_result is None
    assert "no checkpoint there is whole: training from epoch 1" in capsys.readouterr().out


def test_an_intact_record_is_left_as_ray_wrote_it(tmp_path, capsys):
    record = json.dumps({"any": "json"}).encode()
    run = ray_train_run(tmp_path, record)
    assert not ray_compat.train_record_is_damaged(str(run))
    assert not ray_compat.train_record_is_damaged(str(tmp_path / "never-reported"))

    workers.repair_record(str(run))

    assert (run / ray_compat.TRAIN_RECORD).read_bytes() == record
    assert checkpoint_folders(run) == FOLDERS and capsys.readouterr().out == ""
