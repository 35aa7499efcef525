"""Per-epoch scalars (lfme.scalars): TensorBoard event files read back record by record, object storage, MLflow."""

from __future__ import annotations

import struct
from pathlib import Path

import fsspec

from lfme.scalars import ScalarLog


def parse_events(data: bytes) -> dict[str, dict[int, float]]:
    """The scalars of one TensorBoard event file (TFRecord framing: length, CRC, Event proto, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the event files in `folder`."""
    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for tag, steps in parse_events(path.read_bytes()).items():
            scalars.setdefault(tag, {}).update(steps)
    return scalars


def test_each_epoch_is_on_disk_when_write_returns(tmp_path):
    log = ScalarLog(str(tmp_path / "tb"))
    log.write(1, {"loss": 2.5, "w/few": 0.75, "kd": None})  # None: not logged
    assert read_scalars(tmp_path / "tb") == {"loss": {1: 2.5}, "w/few": {1: 0.75}}  # flushed, not at close
    log.write(2, {"loss": 1.25})
    log.close()
    assert read_scalars(tmp_path / "tb")["loss"] == {1: 2.5, 2: 1.25}


def test_on_object_storage_every_epoch_is_uploaded():
    fs = fsspec.filesystem("memory")
    with ScalarLog("memory://bucket/run/tensorboard/distill/student") as log:
        log.write(1, {"val_acc": 0.5})
        (name,) = [p.rsplit("/", 1)[1] for p in fs.ls("/bucket/run/tensorboard/distill/student", detail=False)]
        assert parse_events(fs.cat(f"/bucket/run/tensorboard/distill/student/{name}")) == {"val_acc": {1: 0.5}}
        log.write(2, {"val_acc": 0.75})
        assert parse_events(fs.cat(f"/bucket/run/tensorboard/distill/student/{name}"))["val_acc"] == {1: 0.5, 2: 0.75}
    fs.rm("/bucket", recursive=True)


def test_with_mlflow_tracking_uri_the_same_scalars_go_to_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow's file store, enough for a test
    with ScalarLog(str(tmp_path / "tb"), "my-run", "experts/few") as log:
        log.write(1, {"loss": 1.5, "w/few": 0.5})
        log.write(2, {"loss": 1.0})
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("my-run").experiment_id])
    assert run.info.run_name == "experts/few" and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 1.5), (2, 1.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "w_few")] == [(1, 0.5)]
