"""pipeline.console: our lines on the console, everything else in the run's log file (local or remote)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from tests.pipeline_helpers import REPO


def test_console_keeps_our_lines_and_sends_the_rest_to_the_log(tmp_path, capfd):
    from pipeline.console import Console

    console = Console()
    console.open(str(tmp_path / "run"), "run")
    try:
        console.say("== experts: running")
        os.write(2, b"[E core_worker.cc:2465] from C++\n")  # what Ray's C++ writes to fd 2
        print("WARNING ray: from Python", file=sys.__stderr__, flush=True)  # Python writing to fd 2 (capfd swaps sys.stderr)
        warnings.warn_explicit("subset 'few' is empty: dropped", UserWarning, str(REPO / "lfme" / "subsets.py"), 1)
        console.error("lfme: error: ValueError: bad")
    finally:
        where = console.close()
    os.write(2, b"after close\n")
    out, err = capfd.readouterr()
    assert out == "== experts: running\n"
    assert err == "lfme: warning: subset 'few' is empty: dropped\nlfme: error: ValueError: bad\nafter close\n"
    logs = list((tmp_path / "run" / "logs").glob("lfme-run-*.log"))
    assert [str(p) for p in logs] == [where]
    text = logs[0].read_text()
    for line in ("== experts: running", "core_worker.cc:2465] from C++", "WARNING ray: from Python", "subset 'few' is empty"):
        assert line in text
    assert warnings.showwarning is not console.show_warning


def test_a_remote_run_directory_gets_its_log_when_the_command_ends(tmp_path, capfd):
    from lfme import storage
    from pipeline.console import Console

    console = Console(verbose=True)  # fd 2 stays the console
    console.open("memory://bucket/run", "tune")
    console.say("tune: 2 trial(s)")
    local = Path(console.local)
    assert local.is_file() and not str(local).startswith("memory:")
    where = console.close()
    assert where.startswith("memory://bucket/run/logs/lfme-tune-") and where.endswith(".log")
    assert "tune: 2 trial(s)" in storage.read_text(where)
    assert not local.exists()  # copied: the run directory holds it
    assert capfd.readouterr().out == "tune: 2 trial(s)\n"
