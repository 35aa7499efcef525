"""The linter and the type checker, as part of the unit tier: `ruff check` (rules in pyproject.toml's [tool.ruff]) and mypy (settings and packages in [tool.mypy]) find nothing."""

import subprocess
import sys

from tests.pipeline_helpers import REPO


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_finds_nothing():
    # A cold run (no .mypy_cache) reads the annotations of torch, numpy and Ray too: about 30 s of CPU, over a minute on two busy cores.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
