"""pipeline.reuse: a run started from another run's finished stages (no Ray: the records and files are made here)."""

from __future__ import annotations

import pytest

from lfme import storage
from pipeline.graph import fingerprints
from pipeline.manifest import Manifest
from pipeline.reuse import ReuseError, reuse_stages
from rundir.config import load_config

SHARED = ("split", "experts", "cache")


def finished_source(tmp_path, config) -> str:
    """A run directory whose split, experts and cache are done for `config`, with a file or two each."""
    source = str(tmp_path / "source")
    manifest = Manifest.load(source)
    fps = fingerprints(config)
    for stage in SHARED:
        manifest.start(stage, fps[stage], {})
        manifest.finish(stage, {"stage": stage})
    storage.write_text_atomic(storage.join(source, "split", "split.json"), "{}")
    storage.write_bytes_atomic(storage.join(source, "experts", "few", "model.pt"), b"weights")
    storage.write_bytes_atomic(storage.join(source, "cache", "data-1", "train-00000.parquet"), b"rows")
    return source


def test_copies_the_stages_and_their_records_so_the_run_skips_them(tmp_path):
    config = load_config("ray_config.yaml", ["distill.temperature=3"])
    source = finished_source(tmp_path, load_config("ray_config.yaml"))  # distill settings do not reach these stages
    target = str(tmp_path / "target")
    storage.write_text_atomic(storage.join(target, "experts", "stale.txt"), "from an older run")
    assert reuse_stages(config, source, target, log=lambda _: None) == list(SHARED)

    assert (tmp_path / "target" / "experts" / "few" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "target" / "cache" / "data-1" / "train-00000.parquet").read_bytes() == b"rows"
    assert not (tmp_path / "target" / "experts" / "stale.txt").exists()  # the stage folder is the source's, whole
    ours, theirs = Manifest.load(target), Manifest.load(source)
    fps = fingerprints(config)
    for stage in SHARED:
        assert ours.is_done(stage, fps[stage]) and ours.data["stages"][stage] == theirs.data["stages"][stage]
    assert ours.record("distill") is None
    assert reuse_stages(config, source, target, log=lambda _: None) == []  # done already: nothing copied again


def test_refuses_a_stage_done_with_other_settings_and_names_it(tmp_path):
    source = finished_source(tmp_path, load_config("ray_config.yaml"))
    config = load_config("ray_config.yaml", ["experts.epochs=7"])  # another expert recipe: experts and cache differ
    with pytest.raises(ReuseError, match=r"stage 'experts' in .*source is done with fingerprint [0-9a-f]{16}; this config needs"):
        reuse_stages(config, source, str(tmp_path / "target"), log=lambda _: None)
    assert not (tmp_path / "target" / "split").exists()  # checked before anything is copied


def test_refuses_a_stage_without_the_stages_it_reads(tmp_path):
    config = load_config("ray_config.yaml")
    source = finished_source(tmp_path, config)
    with pytest.raises(ReuseError, match="stage 'cache' needs split, experts reused with it"):
        reuse_stages(config, source, str(tmp_path / "target"), stages=("cache",))
    with pytest.raises(ReuseError, match="is the run directory itself"):
        reuse_stages(config, source, source)
