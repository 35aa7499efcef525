"""Run the stages in order, skipping what is done, resuming what was interrupted.

The driver first takes the run directory's lease (`pipeline.lease`: one
driver per run directory); stages a vanished driver left `running` become
`interrupted`. Then, for each stage, the runner compares the stage's
fingerprint and outputs with the manifest:
- done with the same fingerprint and every recorded output present with its
  recorded size, and the SHA-256 it was written with for files up to
  `HASH_BEFORE_SKIP_BYTES`: skipped;
- done, but an output is missing, has another size or other bytes: run again, with one
  line naming the file (the experts stage retrains only the experts whose
  weights are gone or damaged);
- interrupted or failed with the same fingerprint: run again, and the stage
  resumes from its own checkpoints (Ray Train runs are named after the
  fingerprint, finished experts are kept); the manifest records the resume;
- new or changed: run from scratch;
- and a stage whose input stage ran in this call runs again too, since what
  it read may have changed;
- the split, done and intact, runs again when the data files it read have
  changed since (`rundir.inputs`: a signature of list, annotation and Parquet
  files by content, of images by size and modification time), and with it
  everything after it.
A finished stage's record lists every file it wrote with its size and
SHA-256 (`outputs`); `lfme verify` checks the checksums.
`--stage NAME` runs one stage alone, after checking that every stage it reads
is done for the current config, and names the missing ones otherwise.

Ctrl-C (KeyboardInterrupt, raised by the CLI's SIGINT handler) stops the
running stage: the stage cancels its Ray tasks or aborts its Ray Train run,
the runner records it `interrupted`, and shuts down the Ray this driver started
(on a cluster it only disconnects: the cluster is not ours to stop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from lfme import storage
from pipeline.graph import STAGES, UPSTREAM, fingerprints, stage_settings
from pipeline.driver import holding, resolved
from pipeline.lease import Lease
from pipeline.manifest import Manifest, StageRecord
from pipeline.ray_session import RaySession
from rundir.config import Config, dump_config
from rundir.context import StageContext
from rundir.inputs import changes_since_split
from rundir.layout import run_config_file, stage_dir, stage_settings_file


class MissingInputsError(RuntimeError):
    """A stage was asked to run alone before the stages it reads."""


def stage_module(name: str):
    """The module implementing a stage (imported lazily: importing Ray costs seconds)."""
    import importlib

    return importlib.import_module(f"stages.{name}")


def check_inputs(manifest: Manifest, stage: str, fps: dict[str, str]) -> None:
    missing = [u for u in UPSTREAM[stage] if not manifest.is_done(u, fps[u])]
    if missing:
        raise MissingInputsError(
            f"stage '{stage}' reads the outputs of {', '.join(repr(m) for m in missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not done for this config in {manifest.run_dir}: "
            f"run them first (lfme run ... --stage {missing[0]}) or run the whole pipeline"
        )


def record_outputs(run_dir: str, stage: str, hashed: Mapping[str, str] = {}) -> dict[str, dict]:
    """Every file in the stage's folder: relative name -> {"bytes", "sha256"}; `hashed` gives digests already known."""
    folder = stage_dir(run_dir, stage)
    return {
        name: {"bytes": size, "sha256": hashed.get(name) or storage.file_sha256(storage.join(folder, *name.split("/")))}
        for name, size in storage.list_files(folder).items()
    }


# Before a done stage is skipped, its outputs up to this size are checked by
# SHA-256 too, larger ones by size only (`lfme verify` hashes every file).
# SHA-256 runs at about 1.3 GB/s here (64 MiB in 0.05 s, AMD EPYC with SHA-NI,
# 2026-12-06), so hashing every model, split and report file of a run costs
# well under a second, while the teacher cache's 128 MiB shards (7 GB at
# iNaturalist size) are left to `lfme verify`.
HASH_BEFORE_SKIP_BYTES = 64 << 20


def damaged_outputs(run_dir: str, stage: str, record: StageRecord, hash_up_to: float = HASH_BEFORE_SKIP_BYTES) -> list[str]:
    """What is wrong with a done stage's recorded outputs: missing files, other sizes, other bytes (files up to `hash_up_to` bytes)."""
    folder = stage_dir(run_dir, stage)
    present = storage.list_files(folder)
    problems = []
    for name, recorded in record.outputs.items():
        where = f"{stage}/{name}"
        if name not in present:
            problems.append(f"{where} is missing")
        elif present[name] != recorded["bytes"]:
            problems.append(f"{where} has {present[name]} bytes, {recorded['bytes']} were written")
        elif present[name] <= hash_up_to and storage.file_sha256(storage.join(folder, *name.split("/"))) != recorded["sha256"]:
            problems.append(f"{where} has other bytes than were written (SHA-256 differs)")
    return problems


def stages_to_run(only: str | None, through: str | None) -> tuple[str, ...]:
    if only is not None and through is not None:
        raise ValueError("give --stage (one stage) or --through (the stages up to one), not both")
    for name, value in (("--stage", only), ("--through", through)):
        if value is not None and value not in STAGES:
            raise ValueError(f"{name}: unknown stage '{value}' (stages: {', '.join(STAGES)})")
    if only is not None:
        return (only,)
    return STAGES[: STAGES.index(through) + 1] if through is not None else STAGES


def run_pipeline(
    config: Config,
    run_dir: str | None = None,
    only: str | None = None,
    log: Callable[[str], None] = print,
    through: str | None = None,
    lease: Lease | None = None,
    ray: RaySession | None = None,
) -> Manifest:
    """Run every stage (or `only` one, or the stages `through` one), skipping and resuming as the module says.

    `lease`: the run directory's lease when the caller holds it already
    (`lfme tune`); otherwise this call takes it and gives it back. `ray`: the
    caller's Ray session, which the caller closes (the CLI, after its last
    line); otherwise this call opens one and closes it.
    """
    config, run_dir = resolved(config, run_dir)
    stages = stages_to_run(only, through)
    fps = fingerprints(config)
    needs_ray = any(stage != "split" for stage in stages)
    probed = False
    with holding(run_dir, config, log, lease, ray) as (lease, session):
        manifest = Manifest.load(run_dir)
        for stage in manifest.mark_interrupted():
            log(f"== {stage}: interrupted (its driver is gone)")
        storage.write_text_atomic(run_config_file(run_dir), dump_config(config))
        if only is not None:
            check_inputs(manifest, only, fps)
        ran: set[str] = set()
        for stage in stages:
            lease.check()
            why = reason_to_run(manifest, run_dir, stage, fps[stage], ran)
            if why is None and stage == "split":
                why = data_changed(run_dir, config)
            if why is None:
                log(f"== {stage}: up to date (fingerprint {fps[stage]}), skipped")
                continue
            if why:
                log(f"== {stage}: {why}; running it again")
            if needs_ray and not probed:  # before the first stage that runs, the split included
                session.check_reachable()
                probed = True
            if stage != "split":
                session.wait_for(config, stage)
            run_stage(manifest, StageContext(config=config, run_dir=run_dir, stage=stage, fingerprints=fps, log=log))
            ran.add(stage)
    return manifest


def data_changed(run_dir: str, config: Config) -> str | None:
    """Why a finished split must run again because its inputs changed (`rundir.inputs`), or None."""
    changes = changes_since_split(run_dir, config.data)
    return f"the data changed since it ran ({'; '.join(changes)})" if changes else None


def run_stage(manifest: Manifest, ctx: StageContext) -> None:
    """Run one stage, recording its start, its end (with its outputs' sizes and hashes) or how it stopped."""
    stage, fingerprint = ctx.stage, ctx.fingerprints[ctx.stage]
    record = manifest.start(stage, fingerprint, {u: ctx.fingerprints[u] for u in UPSTREAM[stage]})
    ctx.log(f"== {stage}: {'resuming' if record.resumed else 'running'} (fingerprint {fingerprint})")
    storage.write_json_atomic(stage_settings_file(ctx.run_dir, stage), stage_settings(ctx.config, stage))
    t0 = time.monotonic()
    try:
        summary = stage_module(stage).run(ctx)
    except KeyboardInterrupt:
        manifest.interrupt(stage)
        raise
    except BaseException as err:
        manifest.fail(stage, f"{type(err).__name__}: {err}")
        raise
    manifest.finish(stage, summary, outputs=record_outputs(ctx.run_dir, stage, ctx.hashed))
    ctx.log(f"== {stage}: done in {time.monotonic() - t0:.1f}s")


def reason_to_run(manifest: Manifest, run_dir: str, stage: str, fingerprint: str, ran: set[str]) -> str | None:
    """None: the stage is done and intact, skip it. "" : run it (new, changed or interrupted). Else why a done stage reruns."""
    record = manifest.done_record(stage, fingerprint)
    if record is None:
        return ""
    upstream_ran = [u for u in UPSTREAM[stage] if u in ran]
    if upstream_ran:
        return f"its input {upstream_ran[0]} ran again"
    problems = damaged_outputs(run_dir, stage, record)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return problems[0] + more
    return None
