"""What the runner hands a stage: the config, the run directory, the fingerprints, and how to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

from rundir.config import Config
from rundir.layout import stage_dir
from lfme import storage


@dataclass
class StageContext:
    config: Config
    run_dir: str  # absolute local path or URL (lfme.storage)
    stage: str
    fingerprints: dict[str, str]  # every stage's fingerprint for this config
    log: Callable[[str], None]
    # Files the stage hashed as it wrote them (name relative to its folder -> SHA-256): the runner records
    # these without reading them again, which for a teacher cache of several GB would double the stage's reads.
    hashed: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.fingerprints[self.stage]

    def path(self, *parts: str) -> str:
        """A location inside this stage's folder of the run (other stages' files: `rundir.layout`)."""
        return storage.join(stage_dir(self.run_dir, self.stage), *parts)

    def train_run_name(self, name: str) -> str:
        """A Ray Train run name tied to the fingerprint: same settings resume, new settings start fresh."""
        return f"{self.stage}-{name}-{self.fingerprint[:12]}"
