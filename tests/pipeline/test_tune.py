"""pipeline.tune without Ray Tune running: what a search space becomes, the longest trial, the default sweep."""

from __future__ import annotations

import re

import pytest
import yaml

from rundir.config import config_from_dict
from tests.pipeline_helpers import REPO


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


@pytest.mark.parametrize("damaged", ["experiment_state", "basic-variant-state"])
def test_a_sweep_state_cut_short_is_named_and_an_intact_one_passes(tmp_path, damaged):
    import ray.cloudpickle

    from pipeline.tune import check_sweep_state

    check_sweep_state(str(tmp_path))  # none yet: Tune's restore says so
    for started in ("2026-12-06_22-10-27", "2026-12-06_22-10-51"):  # the first driver's and the resumed one's
        (tmp_path / f"experiment_state-{started}.json").write_text('{"trial_data": []}')
        (tmp_path / f"basic-variant-state-{started}.json").write_bytes(ray.cloudpickle.dumps({"_finished": False}))
    check_sweep_state(str(tmp_path))
    (tmp_path / f"{damaged}-2026-12-06_22-10-27.json").write_bytes(b"")  # an older one damaged: not what Tune restores
    check_sweep_state(str(tmp_path))
    newest = tmp_path / f"{damaged}-2026-12-06_22-10-51.json"
    newest.write_bytes(newest.read_bytes()[:9])  # as a kill during Tune's copy leaves it
    with pytest.raises(ValueError, match=f"^{re.escape(str(newest))}: Tune's state of this sweep was cut short .*cannot be resumed.*--set tune.name=NEW"):
        check_sweep_state(str(tmp_path))
