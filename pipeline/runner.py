"""Run the stages in order, skipping what is done, resuming what was interrupted.

For each stage the runner compares the stage's fingerprint with the manifest:
- done with the same fingerprint: skipped;
- interrupted (running or failed) with the same fingerprint: run again, and the
  stage resumes from its own checkpoints (Ray Train runs are named after the
  fingerprint, finished experts are kept); the manifest records the resume;
- new or changed: run from scratch.
`--stage NAME` runs one stage alone, after checking that every stage it reads
is done for the current config, and names the missing ones otherwise.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from pipeline.config import Config, RayConfig, dump_config, with_absolute_paths
from pipeline.context import StageContext
from pipeline.graph import STAGES, UPSTREAM, fingerprints, stage_settings
from pipeline.manifest import Manifest
from lfme import storage


class MissingInputsError(RuntimeError):
    """A stage was asked to run alone before the stages it reads."""


def stage_module(name: str):
    """The module implementing a stage (imported lazily: importing Ray costs seconds)."""
    import importlib

    return importlib.import_module(f"stages.{name}")


def init_ray(cfg: RayConfig) -> bool:
    """Connect to Ray; returns True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if cfg.address is None:
        # "local": a new Ray of our own. Without an address Ray would join the
        # last cluster `ray start` left on this machine (someone else's run).
        # The dashboard serves the state API Ray Train uses to clean up after a
        # killed driver; bind it to loopback.
        ray.init(
            address="local", num_cpus=cfg.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=cfg.address, logging_level=logging.WARNING)
    return True


def check_inputs(manifest: Manifest, stage: str, fps: dict[str, str]) -> None:
    missing = [u for u in UPSTREAM[stage] if not manifest.is_done(u, fps[u])]
    if missing:
        raise MissingInputsError(
            f"stage '{stage}' reads the outputs of {', '.join(repr(m) for m in missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not done for this config in {manifest.run_dir}: "
            f"run them first (lfme run ... --stage {missing[0]}) or run the whole pipeline"
        )


def run_pipeline(
    config: Config,
    run_dir: Optional[str] = None,
    only: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Manifest:
    # Absolute paths: Ray workers do not run in the driver's working directory.
    config = with_absolute_paths(config)
    run_dir = storage.absolute(run_dir or config.run_dir)
    if only is not None and only not in STAGES:
        raise ValueError(f"--stage: unknown stage '{only}' (stages: {', '.join(STAGES)})")
    fps = fingerprints(config)
    manifest = Manifest.load(run_dir)
    storage.write_text_atomic(storage.join(run_dir, "config.yaml"), dump_config(config))
    if only is not None:
        check_inputs(manifest, only, fps)

    started_ray = False
    try:
        for stage in [only] if only else STAGES:
            if manifest.is_done(stage, fps[stage]):
                log(f"== {stage}: up to date (fingerprint {fps[stage]}), skipped")
                continue
            if stage != "split" and not started_ray:
                started_ray = init_ray(config.ray)
            record = manifest.start(stage, fps[stage], {u: fps[u] for u in UPSTREAM[stage]})
            log(f"== {stage}: {'resuming' if record.resumed else 'running'} (fingerprint {fps[stage]})")
            ctx = StageContext(config=config, run_dir=run_dir, stage=stage, fingerprints=fps, log=log)
            storage.write_json_atomic(ctx.path("settings.json"), stage_settings(config, stage))
            t0 = time.monotonic()
            try:
                summary = stage_module(stage).run(ctx)
            except BaseException as err:
                manifest.fail(stage, f"{type(err).__name__}: {err}")
                raise
            manifest.finish(stage, summary)
            log(f"== {stage}: done in {time.monotonic() - t0:.1f}s")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return manifest
