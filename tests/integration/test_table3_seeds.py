"""`python -m benchmarks.table3` on the small default config: two seeds, each with one set of experts and one cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_helpers import REPO, copy_run

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("on_shared_ray")]

# Two variants: a pair with a claim (the cache's cost); the other variants differ only in their switches
# (test_table3_stats.py checks what each variant sets).
VARIANTS = ["lfme", "lfme_live"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_table3_seeds_share_experts_and_cache_within_a_seed_and_match_their_reports(finished_run, tmp_path):
    out = tmp_path / "table3"
    # Seed 0's base run is the session's finished run (same split, experts and cache settings): table3 finds
    # its shared stages up to date, as when the command is run again. Seed 1 trains its own experts and cache.
    copy_run(finished_run, out / "seed-0" / "base")
    command = [
        sys.executable, "-m", "benchmarks.table3", "ray_config.yaml", "--scale", "paper", "--out", str(out),
        "--variants", ",".join(VARIANTS), "--seeds", "0,1", "--set", "experts.epochs=2", "--set", "distill.epochs=2",
        # One worker per student, a plain Ray task (the finished run covers Ray Train): this test is about table3's bookkeeping.
        "--set", "distill.resources.num_workers=1", "--set", "data.decode_once=true",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    table = json.loads((out / "table.json").read_text())
    assert list(table["runs"]) == ["0", "1"] and table["meta"]["seeds"] == [0, 1]
    for seed, rows in table["runs"].items():
        root = out / f"seed-{seed}"
        assert list(rows) == VARIANTS
        for name, row in rows.items():
            report = json.loads((root / name / "evaluate" / "report.json").read_text())
            assert row["overall"] == report["student"]["overall"]
            assert row["few"] == report["student"]["shots"]["inclusive"]["few"]
            settings = json.loads((root / name / "distill" / "settings.json").read_text())
            assert settings["seed"] == int(seed) and settings["distill"]["epochs"] == 2
            d = settings["distill"]
            assert (d["sampling"], d["kd"], d["spis"], d["teachers"]) == ("class", True, True, "live" if name == "lfme_live" else "cache")

        # One set of experts and one cache per seed: identical bytes in the seed's base run and in every variant.
        base_cache = json.loads((root / "base" / "cache" / "manifest.json").read_text())
        for name in rows:
            cache = json.loads((root / name / "cache" / "manifest.json").read_text())
            assert cache["experts"] == base_cache["experts"] and cache["data_dir"] == base_cache["data_dir"]
            for subset in base_cache["subsets"]:
                model = Path("experts", subset["name"], "model.pt")
                assert digest(root / name / model) == digest(root / "base" / model) == base_cache["experts"][subset["name"]]["sha256"]

    # Each seed trained its own experts on the same split.
    seed0, seed1 = (json.loads((out / f"seed-{s}" / "base" / "cache" / "manifest.json").read_text()) for s in (0, 1))
    assert seed0["experts"] != seed1["experts"]
    assert (out / "seed-0" / "base" / "split" / "samples.parquet").read_bytes() == (out / "seed-1" / "base" / "split" / "samples.parquet").read_bytes()

    # The table's means and paired differences are those of the per-seed rows.
    overall = {name: [table["runs"][s][name]["overall"] for s in ("0", "1")] for name in VARIANTS}
    assert table["variants"]["lfme"]["overall"]["mean"] == pytest.approx(sum(overall["lfme"]) / 2)
    claims = {c["better"]: c for c in table["claims"]}
    assert set(claims) == {"lfme_live"}  # against lfme: the one pair that ran
    cost = claims["lfme_live"]
    assert list(cost["differences"].values()) == pytest.approx([a - b for a, b in zip(overall["lfme_live"], overall["lfme"])])
    assert cost["verdict"] in ("holds", "fails", "not separated") and cost["se"] is not None
    markdown = (out / "table.md").read_text()
    assert "| SpIS + KD + SpES (LFME) |" in markdown and "| LFME, live teachers |" in markdown
    assert "two standard errors" in markdown
    assert (out / "config.yaml").is_file()

    # Seeds need not run in one go: seed 0 from an earlier table (--include), seed 1 from its finished run
    # directories (--report-only, nothing runs): the same rows, means and claims.
    earlier = tmp_path / "seed0-table.json"
    earlier.write_text(json.dumps(dict(table, runs={"0": table["runs"]["0"]})))
    shutil.rmtree(out / "seed-0")
    (out / "table.json").unlink()
    again = subprocess.run(
        command[:-10] + ["--seeds", "1", "--include", str(earlier), "--report-only"] + command[-8:],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    rebuilt = json.loads((out / "table.json").read_text())
    assert rebuilt["runs"] == table["runs"] and rebuilt["claims"] == table["claims"] and rebuilt["meta"]["seeds"] == [0, 1]
    other = subprocess.run(
        command[:-10] + ["--seeds", "1", "--include", str(earlier), "--report-only", "--set", "distill.epochs=3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert other.returncode != 0 and f"--include {earlier}: its overrides: ['experts.epochs=2', 'distill.epochs=2', 'distill.resources.num_workers=1', 'data.decode_once=true']; this run's: ['distill.epochs=3']" in other.stderr
