"""benchmarks/table3.py on the small default config: the variants share one set of experts and one cache."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_helpers import REPO, copy_run

pytestmark = pytest.mark.integration


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_table3_variants_share_experts_and_cache_and_match_their_reports(finished_run, tmp_path):
    out = tmp_path / "table3"
    # The base run is the session's finished run (same split, experts and cache settings): table3 finds its
    # shared stages up to date, as when the command is run again, and trains only the variants' students.
    copy_run(finished_run, out / "base")
    command = [
        sys.executable, "benchmarks/table3.py", "ray_config.yaml", "--scale", "paper", "--out", str(out),
        "--variants", "cls_samp,lfme_official,lfme_live", "--set", "experts.epochs=2", "--set", "distill.epochs=2",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    table = json.loads((out / "table.json").read_text())
    assert list(table["rows"]) == ["cls_samp", "lfme_official", "lfme_live"]
    for name, row in table["rows"].items():
        report = json.loads((out / name / "evaluate" / "report.json").read_text())
        assert row["overall"] == report["student"]["overall"]
        assert row["few"] == report["student"]["shots"]["inclusive"]["few"]
        settings = json.loads((out / name / "distill" / "settings.json").read_text())["distill"]
        assert settings["epochs"] == 2
        expected = {"cls_samp": ("class", False, "cache"), "lfme_official": ("class", True, "cache"), "lfme_live": ("class", True, "live")}[name]
        assert (settings["sampling"], settings["kd"], settings["teachers"]) == expected
        official = (settings["spis_init"], settings["spis_horizon"], settings["spis_clip"], settings["spis_on"])
        assert official == (("official", "half", False, "logits") if name == "lfme_official" else ("paper", "full", True, "loss"))
    # The official SpIS ran: its instance weights end above 1 (2 - v1 unclipped), the paper's never do.
    official_history = json.loads((out / "lfme_official" / "distill" / "history.json").read_text())
    assert official_history[-1]["mean_instance_weight"] > 1.0

    # One set of experts and one cache: identical bytes in the base run and in every variant.
    base_cache = json.loads((out / "base" / "cache" / "manifest.json").read_text())
    for name in table["rows"]:
        cache = json.loads((out / name / "cache" / "manifest.json").read_text())
        assert cache["experts"] == base_cache["experts"] and cache["data_dir"] == base_cache["data_dir"]
        for subset in base_cache["subsets"]:
            model = Path("experts", subset["name"], "model.pt")
            assert digest(out / name / model) == digest(out / "base" / model) == base_cache["experts"][subset["name"]]["sha256"]
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["stages"]["distill"]["status"] == "done"

    markdown = (out / "table.md").read_text()
    assert "| Cls.Samp |" in markdown and "| LFME (official SpIS) |" in markdown and "| LFME, live teachers |" in markdown
    assert (out / "config.yaml").is_file()
