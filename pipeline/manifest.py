"""The run manifest: what each stage did, with what, and when.

`manifest.json` at the top of a run directory is the pipeline's memory between
invocations. Per stage it keeps the status (`running`, `done`, `failed`,
`interrupted`), the
fingerprint of the stage's settings and inputs, the upstream fingerprints it was
run against, timings, how often it was attempted and whether an attempt resumed
an interrupted one. The runner decides from it what to skip and what to resume.

`running` means running now, under the driver that holds the run's lease
(`pipeline.lease`): a driver that takes the lease first marks every stage
still `running` as `interrupted` (its driver is gone), and a driver stopped
by Ctrl-C marks its stage `interrupted` itself.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lfme import storage
from rundir.layout import manifest_file


FORMAT = "lfme-run/1"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions of what produced the results: reproducibility starts here."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("lfme-ray", "torch", "torchvision", "ray", "numpy", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class StageRecord:
    status: str  # running | done | failed | interrupted
    fingerprint: str
    inputs: dict[str, str]  # upstream stage -> fingerprint it was run against
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    attempts: int = 1
    resumed: bool = False  # this attempt continued an interrupted one
    resumes: list[str] = field(default_factory=list)  # when each resume happened
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # Every file the stage wrote in its folder: relative name -> {"bytes", "sha256"}
    # (absent in manifests written before outputs were recorded: nothing to check).
    outputs: dict[str, dict] = field(default_factory=dict)


class Manifest:
    def __init__(self, run_dir: str, data: dict[str, Any]):
        self.run_dir = run_dir
        # Named here, not through rundir.layout, whose imports (pyarrow) `lfme status` does not need.
        self.path = manifest_file(run_dir)
        self.data = data
        self._started: dict[str, float] = {}

    @classmethod
    def load(cls, run_dir: str) -> Manifest:
        manifest = cls(str(run_dir), {"format": FORMAT, "created_at": now_iso(), "stages": {}})
        if storage.exists(manifest.path):
            manifest.data = storage.read_json(manifest.path)
            if manifest.data.get("format") != FORMAT:
                raise ValueError(f"{manifest.path}: not an lfme run manifest (format {manifest.data.get('format')!r})")
        return manifest

    def save(self) -> None:
        self.data["updated_at"] = now_iso()
        self.data["versions"] = library_versions()
        storage.write_json_atomic(self.path, self.data)

    def record(self, stage: str) -> StageRecord | None:
        raw = self.data["stages"].get(stage)
        return StageRecord(**raw) if raw else None

    def records(self) -> dict[str, StageRecord]:
        """Every stage the manifest holds a record of, in the order they first ran."""
        return {stage: StageRecord(**raw) for stage, raw in self.data["stages"].items() if raw}

    def done_record(self, stage: str, fingerprint: str) -> StageRecord | None:
        """The stage's record if it is done with this fingerprint, else None."""
        rec = self.record(stage)
        return rec if rec is not None and rec.status == "done" and rec.fingerprint == fingerprint else None

    def is_done(self, stage: str, fingerprint: str) -> bool:
        return self.done_record(stage, fingerprint) is not None

    def start(self, stage: str, fingerprint: str, inputs: dict[str, str]) -> StageRecord:
        """Mark a stage running; an unfinished attempt with the same fingerprint is resumed."""
        resuming = self.record(stage)
        if resuming is not None and (resuming.status not in ("interrupted", "failed") or resuming.fingerprint != fingerprint):
            resuming = None  # only an interrupted or failed attempt with the same settings is resumed
        rec = StageRecord(
            status="running",
            fingerprint=fingerprint,
            inputs=inputs,
            started_at=now_iso(),
            attempts=(resuming.attempts + 1) if resuming is not None else 1,
            resumed=resuming is not None,
            resumes=(resuming.resumes + [now_iso()]) if resuming is not None else [],
        )
        self._started[stage] = time.monotonic()
        self.data["stages"][stage] = asdict(rec)
        self.save()
        return rec

    def finish(self, stage: str, summary: dict[str, Any], outputs: dict[str, dict] | None = None) -> None:
        if outputs is not None:
            self.data["stages"][stage]["outputs"] = outputs
        self._close(stage, "done", summary=summary)

    def fail(self, stage: str, error: str) -> None:
        self._close(stage, "failed", error=error)

    def interrupt(self, stage: str) -> None:
        """Stopped on purpose (Ctrl-C): the same command resumes it."""
        self._close(stage, "interrupted", error="interrupted (Ctrl-C)")

    def mark_interrupted(self) -> list[str]:
        """Stages left `running` by a driver that is gone (called by the lease's new holder); returns them."""
        stale = [stage for stage, raw in self.data["stages"].items() if raw["status"] == "running"]
        for stage in stale:
            self.data["stages"][stage]["status"] = "interrupted"
        if stale:
            self.save()
        return stale

    def _close(self, stage: str, status: str, summary: dict | None = None, error: str | None = None) -> None:
        raw = self.data["stages"][stage]
        raw["status"] = status
        raw["finished_at"] = now_iso()
        raw["duration_s"] = round(time.monotonic() - self._started.pop(stage, time.monotonic()), 2)
        raw["error"] = error
        if summary is not None:
            raw["summary"] = summary
        self.save()
