"""The tier check of tests/conftest.py (`tier_problems`): folder, marker and server fixtures must agree."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.conftest import INTEGRATION, tier_problems


def item(path, marked: bool, fixtures=()):
    """What the check reads of a collected test: its file, its closest `integration` mark, its fixtures."""
    mark = pytest.mark.integration.mark if marked else None
    return SimpleNamespace(
        path=path, nodeid=f"{path.name}::t", fixturenames=list(fixtures), get_closest_marker=lambda name: mark if name == "integration" else None
    )


UNIT = INTEGRATION.parent / "stages" / "test_cache.py"
BEHAVIOUR = INTEGRATION / "test_faults.py"


def test_a_marked_test_in_integration_and_an_unmarked_one_elsewhere_pass():
    assert tier_problems([item(BEHAVIOUR, True, ["finished_run", "tmp_path"]), item(UNIT, False, ["tmp_path"])]) == []


def test_each_test_in_the_wrong_tier_is_named():
    problems = tier_problems([item(BEHAVIOUR, False), item(UNIT, True), item(UNIT, False, ["s3_bucket", "tmp_path", "on_shared_ray"])])
    assert problems == [
        "test_faults.py::t: under tests/integration/ but not marked integration (pytestmark = pytest.mark.integration)",
        "test_cache.py::t: marked integration outside tests/integration/ (move it there)",
        "test_cache.py::t: uses on_shared_ray, s3_bucket (a server process) outside tests/integration/",
    ]

