"""Per-epoch scalars of a training loop as TensorBoard event files, on a local disk or object storage.

`tensorboard --logdir RUN_DIR` then shows a run while it trains: each
expert and the student write their loss, accuracies, learning rate, seconds
per epoch (and the student its w_l per expert and mean v_i) under
`RUN_DIR/tensorboard/<stage>/<name>` (`rundir.layout.tensorboard_dir`).

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
from typing import Mapping, Optional

from lfme import storage


class ScalarLog:
    """One training loop's scalars: `write(epoch, {tag: value})` after each epoch, `close()` at the end."""

    def __init__(self, location: str):
        from tensorboardX import SummaryWriter

        local = storage.local_path(location)
        self.remote: Optional[str] = None if local is not None else location
        self.folder = local if local is not None else tempfile.mkdtemp(prefix="lfme-tensorboard-")
        self.writer = SummaryWriter(self.folder, flush_secs=3600)  # flushed by `write`, once an epoch

    def write(self, epoch: int, scalars: Mapping[str, Optional[float]]) -> None:
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()
        if self.remote is not None:
            for name in os.listdir(self.folder):
                with open(os.path.join(self.folder, name), "rb") as f:
                    storage.write_bytes_atomic(storage.join(self.remote, name), f.read())

    def close(self) -> None:
        self.writer.close()
        if self.remote is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
