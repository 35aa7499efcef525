"""Per-epoch scalars of a training loop as TensorBoard event files, on a local disk or object storage.

`tensorboard --logdir RUN_DIR` then shows a run while it trains: each
expert and the student write their loss, accuracies, learning rate, seconds
per epoch (and the student its w_l per expert and mean v_i) under
`RUN_DIR/tensorboard/<stage>/<name>` (`rundir.layout.tensorboard_dir`).

Where `MLFLOW_TRACKING_URI` is set, the same scalars also go to MLflow: one
MLflow run per loop (named `<stage>/<name>`, its experiment the run
directory's name), as `lfme tune`'s `mlflow` logger does for sweeps
(`pip install mlflow` or `mlflow-skinny`; without it the loop says so once
and goes on).

Written with tensorboardX (the event format of TensorBoard, without
TensorBoard's own package). On object storage the events are written to a
local folder and each file is uploaded whole after every epoch
(`lfme.storage.write_bytes_atomic`), so a reader of the bucket sees every
finished epoch; TensorBoard reads `s3://` and `gs://` log dirs itself where
its filesystem plugins are installed, or point it at a synced copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping

from lfme import storage

MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


class ScalarLog:
    """One training loop's scalars: `write(epoch, {tag: value})` after each epoch, `close()` at the end."""

    def __init__(self, location: str, experiment: str = "lfme", run_name: str = ""):
        # tensorboardX's synchronous writer: its SummaryWriter queues events for a
        # thread, and its flush() does not wait for that queue.
        from tensorboardX.event_file_writer import EventsWriter

        local = storage.local_path(location)
        self.remote: str | None = None if local is not None else location
        self.folder = local if local is not None else tempfile.mkdtemp(prefix="lfme-tensorboard-")
        os.makedirs(self.folder, exist_ok=True)
        self.writer = EventsWriter(os.path.join(self.folder, "events"))
        self.mlflow = MlflowRun.start(experiment, run_name) if os.environ.get(MLFLOW_URI_ENV) else None

    def write(self, epoch: int, scalars: Mapping[str, float | None]) -> None:
        """The epoch's scalars (None: not logged), on disk (and uploaded) when this returns."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items() if value is not None]
        self.writer.write_event(Event(wall_time=time.time(), step=epoch, summary=Summary(value=values)))
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log(epoch, scalars)
        if self.remote is not None:
            for name in os.listdir(self.folder):
                with open(os.path.join(self.folder, name), "rb") as f:
                    storage.write_bytes_atomic(storage.join(self.remote, name), f.read())

    def close(self) -> None:
        self.writer.close()
        if self.mlflow is not None:
            self.mlflow.end()
        if self.remote is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MlflowRun:
    """One MLflow run of a training loop, through MlflowClient (no global active run in the worker process)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def start(cls, experiment: str, run_name: str) -> MlflowRun | None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            print(f"lfme: {MLFLOW_URI_ENV} is set but mlflow is not installed (pip install mlflow); logging to TensorBoard only", flush=True)
            return None
        client = MlflowClient()
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        return cls(client, client.create_run(experiment_id, run_name=run_name).info.run_id)

    def log(self, epoch: int, scalars: Mapping[str, float | None]) -> None:
        for tag, value in scalars.items():
            if value is not None:
                self.client.log_metric(self.run_id, tag.replace("/", "_"), float(value), step=epoch)

    def end(self) -> None:
        self.client.set_terminated(self.run_id)
