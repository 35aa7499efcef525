"""The linter, as part of the unit tier: `ruff check` with the rules in pyproject.toml's [tool.ruff] finds nothing."""

import subprocess
import sys

from tests.pipeline_helpers import REPO


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
