"""The linter and the type checker, as part of the unit tier: `ruff check` (rules in pyproject.toml's [tool.ruff]) and mypy (settings and packages in [tool.mypy]) find nothing.

A cold mypy run (a fresh clone has no .mypy_cache) reads the annotations of
torch, numpy and Ray too: about 20 s of one core. The suite starts it as soon
as collection is done (`start_mypy`, from tests/conftest.py) and the test
reads its result, so it runs beside the other tests, which leave a core idle
much of the time (the unit tier is mostly one process; Ray's start-ups wait).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.pipeline_helpers import REPO

MYPY_RUN = pytest.StashKey[tuple[subprocess.Popen, str]]()
MYPY_TEST = "tests/test_lint.py::test_mypy_finds_nothing"
MYPY_TIMEOUT_S = 300


def start_mypy() -> tuple[subprocess.Popen, str]:
    """mypy over the packages [tool.mypy] names, started now; its output goes to the returned file."""
    out = tempfile.NamedTemporaryFile("w", prefix="lfme-mypy-", suffix=".log", delete=False)
    with out:
        process = subprocess.Popen([sys.executable, "-m", "mypy"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return process, out.name


def stop_mypy(process: subprocess.Popen, log: str) -> None:
    """Kill the run if it still runs, reap it, remove its output file (any of them done already is fine)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    Path(log).unlink(missing_ok=True)


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_finds_nothing(request):
    process, log = request.config.stash.get(MYPY_RUN, None) or start_mypy()
    try:
        returncode = process.wait(timeout=MYPY_TIMEOUT_S)
        output = Path(log).read_text()
    finally:
        stop_mypy(process, log)
    assert returncode == 0, output[-4000:]
