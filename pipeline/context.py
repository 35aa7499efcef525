"""What the runner hands a stage: the config, where to write, and how to report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.config import Config


@dataclass
class StageContext:
    config: Config
    run_dir: Path
    stage: str
    fingerprints: dict[str, str]  # every stage's fingerprint for this config
    log: Callable[[str], None]

    @property
    def fingerprint(self) -> str:
        return self.fingerprints[self.stage]

    def stage_dir(self, stage: str | None = None) -> Path:
        path = self.run_dir / (stage or self.stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def ray_storage(self) -> str:
        """Ray Train's storage_path: checkpoints live inside the run directory."""
        return str((self.run_dir / "ray").resolve())

    def train_run_name(self, name: str) -> str:
        """A Ray Train run name tied to the fingerprint: same settings resume, new settings start fresh."""
        return f"{self.stage}-{name}-{self.fingerprint[:12]}"
