"""`lfme tune`: a sweep of the distill stage over one run's teacher cache.

One module-scoped copy of the session's finished run (`finished_run`: split,
experts and cache with the short schedule) is swept; the sweep runs the CLI in its own process group, with two
trials side by side (one 0.5-CPU worker each) so a trial never waits on
another's CPUs. The checks: a killed sweep resumes, the tables and best config
are written and loadable, no expert or cache file changes, TensorBoard logs exist.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import yaml

from rundir.config import config_from_dict, load_config
from rundir.fields import ConfigError
from tests.pipeline_helpers import REPO, copy_run, kill_group, manifest, run_lfme, start_lfme, wait_for

SPACE = "tune.search_space={distill.temperature: {choice: [2, 4]}, distill.alpha: {uniform: [0.4, 0.8]}}"
SWEEP = [
    SPACE,
    "experts.epochs=2",  # the inputs' settings: a different expert setting would (rightly) retrain the experts
    "tune.grace_period=1",
    "tune.max_concurrent_trials=2",
    "distill.resources={num_workers: 1, cpus_per_worker: 0.5}",
]


@pytest.fixture(scope="module")
def inputs_run(finished_run, tmp_path_factory) -> Path:
    return copy_run(finished_run, tmp_path_factory.mktemp("tune") / "run")


def fingerprint_files(run_dir: Path) -> dict[str, str]:
    files = sorted(run_dir.glob("experts/*/model.pt")) + [run_dir / "cache" / "manifest.json"]
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def input_records(run_dir: Path) -> dict:
    return {stage: manifest(run_dir)["stages"][stage] for stage in ("split", "experts", "cache")}


def read_trials(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
@pytest.mark.usefixtures("on_shared_ray")
def test_a_killed_sweep_resumes_and_writes_tables_and_best_config_touching_no_expert(inputs_run, tmp_path, monkeypatch):
    """One sweep, killed after its trials' first epochs and resumed with --resume (a sweep costs two Ray Train
    runs; one sweep checks both the resume and what a finished sweep writes)."""
    files, records = fingerprint_files(inputs_run), input_records(inputs_run)
    distill_record, student = manifest(inputs_run)["stages"]["distill"], (inputs_run / "distill" / "student.pt").read_bytes()
    out = inputs_run / "tune" / "resumable"
    args = ("tune", "ray_config.yaml", "--run-dir", str(inputs_run), "--num-samples", "2")
    # Tune saves its experiment state every TUNE_GLOBAL_CHECKPOINT_S seconds (10 s by default): 1 s lets the
    # kill land a few epochs (0.2-0.5 s each) into the trials, well before their 30th.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")
    sets = [*SWEEP, "distill.epochs=30", "tune.name=resumable"]

    def state_saved_after_an_epoch() -> bool:
        reported = [p.stat().st_mtime for p in out.glob("trials/*/result.json") if p.stat().st_size]
        saved = [p.stat().st_mtime for p in out.glob("trials/experiment_state*.json")]
        return bool(reported and saved) and max(saved) > min(reported)

    process = start_lfme(*args, sets=sets, log=tmp_path / "first.log")
    try:
        wait_for(state_saved_after_an_epoch, timeout=300, what="Tune's experiment state saved after a trial's first epoch")
    finally:
        kill_group(process)
    assert not (out / "trials.csv").exists()

    result = run_lfme(*args, "--resume", sets=sets, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = read_trials(out / "trials.csv")
    assert len(rows) == 2 and all(row["status"] != "error" for row in rows)
    assert list(rows[0]) == ["trial_id", "distill.temperature", "distill.alpha", "epochs", "val_acc", "status"]
    for row in rows:
        assert float(row["distill.temperature"]) in (2.0, 4.0) and 0.4 <= float(row["distill.alpha"]) <= 0.8
        assert 1 <= int(row["epochs"]) <= 30 and 0 <= float(row["val_acc"]) <= 1
    markdown = (out / "trials.md").read_text()
    assert "Best trial" in markdown and all(row["trial_id"] in markdown for row in rows)
    assert "| overall | many | medium | few |" in markdown

    best = load_config(out / "best_config.yaml")  # what `lfme run best_config.yaml` loads first
    best_row = max(rows, key=lambda row: float(row["val_acc"]))
    assert best.distill.temperature == float(best_row["distill.temperature"])
    assert best.distill.alpha == pytest.approx(float(best_row["distill.alpha"]))
    assert best.distill.epochs == 30
    assert Path(best.run_dir) == inputs_run.resolve()

    # No trial retrained an expert or rebuilt the cache, and the distill stage was left alone.
    assert fingerprint_files(inputs_run) == files
    assert input_records(inputs_run) == records
    assert manifest(inputs_run)["stages"]["distill"] == distill_record
    assert (inputs_run / "distill" / "student.pt").read_bytes() == student
    assert list((out / "trials").rglob("events.out.tfevents*")), "no TensorBoard event file"


# --------------------------------------------------------------------------- config


def _tune_error(search_space) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"tune": {"search_space": search_space}})
    return str(info.value)


def test_unknown_swept_key_is_named():
    message = _tune_error({"distill.nonsense": {"choice": [1, 2]}})
    assert "tune.search_space.distill.nonsense" in message and "unknown key 'nonsense'" in message


def test_only_distill_keys_may_be_swept():
    assert "only distill.* keys" in _tune_error({"experts.lr": {"loguniform": [0.01, 0.1]}})


def test_unknown_spec_form_is_named():
    message = _tune_error({"distill.temperature": {"normal": [2, 1]}})
    assert "tune.search_space.distill.temperature" in message and "choice" in message


def test_spec_values_are_checked_against_the_field():
    assert "distill.alpha.choice[1]" in _tune_error({"distill.alpha": {"choice": [0.5, "high"]}})
    assert "low must be < high" in _tune_error({"distill.lr": {"uniform": [0.1, 0.01]}})
    assert "use choice or randint" in _tune_error({"distill.epochs": {"uniform": [2, 5]}})


def test_specs_are_read_once_into_what_tune_draws_and_the_longest_trial():
    from ray import tune

    from pipeline.tune import max_epochs, param_space

    space = {"distill.epochs": {"randint": [5, 12]}, "distill.lr": {"loguniform": [0.01, 0.1]}, "distill.temperature": {"choice": [2, 4]}}
    config = config_from_dict({"tune": {"search_space": space}})
    specs = config.tune.specs()
    assert [(s.form, s.values) for s in specs.values()] == [("randint", (5, 12)), ("loguniform", (0.01, 0.1)), ("choice", (2, 4))]
    assert max_epochs(config) == 11  # randint's high is exclusive, as in Ray Tune
    assert max_epochs(config_from_dict({"tune": {"search_space": {"distill.epochs": {"choice": [10, 20]}}}})) == 20
    assert max_epochs(config_from_dict({"tune": {"search_space": {"distill.lr": {"uniform": [0.01, 0.1]}}}})) == config.distill.epochs
    drawn = param_space(config)
    assert isinstance(drawn["distill.epochs"], tune.search.sample.Integer) and (drawn["distill.epochs"].lower, drawn["distill.epochs"].upper) == (5, 12)
    assert isinstance(drawn["distill.lr"].get_sampler(), tune.search.sample.Float._LogUniform)
    assert drawn["distill.temperature"].categories == [2, 4]


def test_the_default_config_has_a_valid_sweep_in_no_fingerprint():
    from pipeline.graph import fingerprints

    data = yaml.safe_load((REPO / "ray_config.yaml").read_text())
    config = config_from_dict(data)
    assert config.tune.num_samples == 4 and "distill.temperature" in config.tune.search_space
    assert config.tune.loggers == ["tensorboard"]
    assert fingerprints(config) == fingerprints(config_from_dict(data, ["tune.num_samples=9", "tune.name=other"]))
