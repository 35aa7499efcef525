"""`lfme status`: what each stage of a run did, the driver holding it, and the latest epoch line.

Reads only the manifest, the lease and the run's log files: no torch, no Ray.
"""

from __future__ import annotations


from lfme import storage
from lfme.report import summary_table
from pipeline.lease import TIMEOUT_S, read_holder
from pipeline.manifest import Manifest
from rundir.layout import logs_dir


def manifest_data(run_dir: str) -> dict:
    """The run's manifest as data; FileNotFoundError naming the folder when it is not a run directory."""
    path = Manifest(run_dir, {}).path
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory")
    return storage.read_json(path)


def summary_rows(manifest: dict) -> list[dict]:
    rows = []
    for stage, rec in manifest.get("stages", {}).items():
        summary = rec.get("summary") or {}
        headline = ", ".join(f"{k}={_short(v)}" for k, v in summary.items() if not isinstance(v, (dict, list)))
        rows.append(
            {
                "stage": stage,
                "status": rec["status"],
                "fingerprint": rec["fingerprint"],
                "seconds": rec.get("duration_s"),
                "attempts": rec.get("attempts"),
                "resumed": "yes" if rec.get("resumes") else "",
                "result": headline[:80],
            }
        )
    return rows


def _short(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def status_text(run_dir: str) -> str:
    data = manifest_data(run_dir)
    lines = [f"run {run_dir}  (created {data.get('created_at')}, updated {data.get('updated_at')})"]
    holder = read_holder(run_dir)
    gone = holder.stale_because(TIMEOUT_S) if holder is not None else "no driver holds the run"
    if holder is None:
        lines.append("driver: none")
    elif gone:
        lines.append(f"driver: gone ({gone}); its lease: {holder.describe()}")
    else:
        lines.append(f"driver: {holder.describe()}")
    rows = summary_rows(data)
    for row in rows:
        if row["status"] == "running" and gone:  # what the next driver will record
            row["status"] = "interrupted"
    lines.append(summary_table(rows, ["stage", "status", "fingerprint", "seconds", "attempts", "resumed", "result"]))
    return "\n".join(lines)


def latest_progress(run_dir: str) -> str | None:
    """The last epoch line (`[expert few] epoch 3/15 ...`, `[student] ...`) of the run's newest log, without Ray's prefix."""
    folder = logs_dir(run_dir)
    if not storage.exists(folder):
        return None
    logs = sorted(name for name in storage.list_files(folder) if name.startswith("lfme-"))
    if not logs:
        return None
    for name in sorted(logs, key=lambda name: name.split("-")[2:4], reverse=True):  # lfme-<command>-<date>-<time>-<pid>.log
        for line in reversed(storage.read_text(storage.join(folder, name)).splitlines()):
            _, bracket, rest = line.partition(" [")
            if bracket and " epoch " in rest:
                return "latest: [" + rest
    return None
