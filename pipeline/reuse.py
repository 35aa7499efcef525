"""Start a run from another run's finished stages: `lfme run CONFIG --reuse OTHER_RUN`.

Training another student on the same experts and cache (an ablation, a new
loss, a sweep's best config in a fresh directory) should not retrain the
experts. `reuse_stages` copies the named stages' folders and manifest records
from a source run directory into the target, after checking that the source
did each of them with exactly the fingerprint this config gives it: the copied
outputs are then what `lfme run` would have produced, and it skips those stages
as done. The distill stage still checks the copied cache against the copied
experts' SHA-256 as usual.

Local paths and object-storage URLs mix freely (`lfme.storage.copy_tree`).
"""

from __future__ import annotations

from collections.abc import Callable

from lfme import storage
from pipeline.graph import STAGES, TEACHER_STAGES, UPSTREAM, fingerprints
from pipeline.manifest import Manifest
from rundir.config import Config, with_absolute_paths
from rundir.layout import stage_dir


class ReuseError(ValueError):
    """The source run cannot provide a stage for this config."""


def reuse_stages(
    config: Config,
    source: str,
    run_dir: str,
    stages: tuple[str, ...] = TEACHER_STAGES,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Copy `stages` of the run in `source` into `run_dir`; returns the stages copied (those not done there already).

    Each stage must be done in `source` with this config's fingerprint, and
    every stage it reads must be among `stages` (a stage's outputs are only
    valid beside the inputs they were made from).
    """
    config = with_absolute_paths(config)
    source, run_dir = storage.absolute(source), storage.absolute(run_dir)
    if source == run_dir:
        raise ReuseError(f"--reuse: {source} is the run directory itself")
    for stage in stages:
        if stage not in STAGES:
            raise ReuseError(f"--reuse: unknown stage '{stage}' (stages: {', '.join(STAGES)})")
        missing = [u for u in UPSTREAM[stage] if u not in stages]
        if missing:
            raise ReuseError(f"--reuse: stage '{stage}' needs {', '.join(missing)} reused with it")
    fps = fingerprints(config)
    theirs, ours = Manifest.load(source), Manifest.load(run_dir)
    for stage in stages:
        if not theirs.is_done(stage, fps[stage]):
            record = theirs.record(stage)
            found = "not run" if record is None else f"{record.status} with fingerprint {record.fingerprint}"
            raise ReuseError(
                f"--reuse: stage '{stage}' in {source} is {found}; this config needs it done with fingerprint "
                f"{fps[stage]} (the config differs in a field the stage depends on)"
            )
    copied = []
    for stage in stages:
        if ours.is_done(stage, fps[stage]):
            continue
        storage.remove(stage_dir(run_dir, stage))
        files = storage.copy_tree(stage_dir(source, stage), stage_dir(run_dir, stage))
        # The record last: a copy cut short leaves the stage not done, and the next call copies it again.
        ours.data["stages"][stage] = theirs.data["stages"][stage]
        ours.save()
        copied.append(stage)
        log(f"== {stage}: reused from {source} ({len(files)} files)")
    return copied
