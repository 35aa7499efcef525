"""What the runner hands a stage: the config, where to write, and how to report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lfme import storage
from pipeline.config import Config


@dataclass
class StageContext:
    config: Config
    run_dir: str  # absolute local path or URL (lfme.storage)
    stage: str
    fingerprints: dict[str, str]  # every stage's fingerprint for this config
    log: Callable[[str], None]

    @property
    def fingerprint(self) -> str:
        return self.fingerprints[self.stage]

    def path(self, *parts: str, stage: str | None = None) -> str:
        """A location inside this stage's folder of the run (or another stage's)."""
        return storage.join(self.run_dir, stage or self.stage, *parts)

    @property
    def ray_storage(self) -> str:
        """Ray Train's storage: checkpoints live inside the run directory, wherever that is."""
        return storage.join(self.run_dir, "ray")

    def train_run_name(self, name: str) -> str:
        """A Ray Train run name tied to the fingerprint: same settings resume, new settings start fresh."""
        return f"{self.stage}-{name}-{self.fingerprint[:12]}"
