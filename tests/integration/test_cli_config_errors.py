"""`lfme run` with a bad config, as a user runs it: one line naming the dotted key, exit 2, nothing started or written.

The same checks without a process are tests/rundir/test_config.py's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.pipeline_helpers import REPO
from tests.rundir.test_config import _base

pytestmark = pytest.mark.integration  # each test runs the CLI in a new interpreter


def test_cli_run_rejects_unknown_key_before_anything_runs(tmp_path):
    run_dir = tmp_path / "run"
    data = _base()
    data["run_dir"] = str(run_dir)
    data["distill"]["tempreature"] = 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))

    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "distill.tempreature" in lines[0]
    assert result.stdout == ""
    assert not run_dir.exists()


def test_cli_run_dir_flag_is_validated_like_the_config():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--run-dir", "nosuchfs://bucket/run"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert "run_dir: unknown storage scheme 'nosuchfs://'" in result.stderr
