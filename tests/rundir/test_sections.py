"""rundir.sections: a sweep's search space (`tune.search_space`) is checked at load, each mistake named by its key."""

from __future__ import annotations

import pytest

from rundir.config import config_from_dict
from rundir.fields import ConfigError


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
