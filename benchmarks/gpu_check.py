"""The Python half of benchmarks/gpu_check.sh: versions, generated data, GPU sampling, one JSON per step, the summary.

    python -m benchmarks.gpu_check versions
    python -m benchmarks.gpu_check make-cifar ROOT --train-per-class N --test-per-class M
    python -m benchmarks.gpu_check watch FILE [--interval S]          # until killed
    python -m benchmarks.gpu_check run-record NAME RUN_DIR LOG --rc RC --wall S [--gpu-samples FILE] [--command ...]
    python -m benchmarks.gpu_check junit-record NAME JUNIT_XML --rc RC --wall S [--command ...]
    python -m benchmarks.gpu_check step OUT_JSON STEP --mode MODE [--part FILE ...] [--skipped REASON]
    python -m benchmarks.gpu_check summary OUT_DIR

gpu_check.sh (its header says what it runs and why) times each step with
`timeout` and hands what the step left to one of these subcommands, which
write JSON: a *part* (one command of a step: its exit code, wall time and what
it produced) and a *step* (its parts, a status, the versions). Nothing here
imports Ray, and torch only inside `versions`, so a missing package is
reported by the step that needs it, never by the bookkeeping.

Statuses: `ok` (exit code 0), `timeout` (124, or 130/137 after the
time box's SIGINT/SIGKILL), `failed` (anything else), `skipped` (with the
reason), `partial` (a run meant to be cut by its time box, step 4, that
was: what it got through is the result). A step is the worst of its parts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# One colour per class, far apart, so a ResNet on the generated images learns
# something (the pipeline's accuracies then show it ran), whatever the noise.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 0, 128),
]
STATUS_ORDER = ["ok", "skipped", "partial", "timeout", "failed"]  # a step is the worst of its parts
# The progress line every training stage prints (lfme.engine.progress_line).
PROGRESS = re.compile(
    r"\[(?P<tag>[^\[\]]+)\] epoch (?P<epoch>\d+)/(?P<epochs>\d+) .*?val acc (?P<val>[\d.]+)%\s+"
    r"(?P<spe>[\d.]+)s/epoch\s+ETA (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)"
)


def status_of(rc: int | None) -> str:
    if rc is None:
        return "skipped"
    if rc == 0:
        return "ok"
    # timeout(1) exits 124 when it stopped the command; a command that dies of
    # the SIGINT it sent exits 130 (lfme run: "interrupted"), of SIGKILL 137.
    return "timeout" if rc in (124, 130, 137) else "failed"


def worst(statuses: list[str]) -> str:
    return max(statuses, key=STATUS_ORDER.index) if statuses else "skipped"


# ----------------------------------------------------------------------------- versions


def _run(command: list[str], timeout: float = 20) -> str | None:
    if not shutil.which(command[0]):
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def versions() -> dict:
    """Python, torch, CUDA, cuDNN, the GPU (torch and nvidia-smi), Ray: each as found, or why not."""
    info: dict = {"python": platform.python_version(), "executable": sys.executable, "host": platform.node(),
                  "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
            info["cudnn"] = torch.backends.cudnn.version()
    except Exception as err:  # reported, not raised: the steps say what they need
        info["torch"] = f"not importable: {type(err).__name__}: {err}"
    for name in ("ray", "numpy", "pyarrow", "pytest"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as err:
            info[name] = f"not importable: {type(err).__name__}: {err}"
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    info["nvidia_smi"] = smi if smi is not None else "not available"
    return info


# ----------------------------------------------------------------------------- data


def _write_class(job: tuple[str, int, int, int]) -> int:
    import numpy as np
    from PIL import Image

    folder, label, count, seed = job
    rng = np.random.default_rng([seed, label, count])
    Path(folder).mkdir(parents=True, exist_ok=True)
    colour = np.array(PALETTE[label % len(PALETTE)], dtype=np.float32)
    for i in range(count):
        pixels = np.clip(colour + rng.normal(0, 48, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder) / f"{i:05d}.png", compress_level=1)
    return count


def make_cifar(root: str | Path, train_per_class: int, test_per_class: int, seed: int = 0, workers: int | None = None) -> dict:
    """A CIFAR-10-shaped ImageFolder tree: root/{train,test}/<CIFAR-10 class>/NNNNN.png, 32x32 RGB.

    Each class is its own colour plus Gaussian noise (learnable, meaningless
    beyond that). The tree is written afresh; `configs/cifar10-lt.yaml` reads it
    with `--set data.root=ROOT`.
    """
    root = Path(root)
    start = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    jobs = [
        (str(root / split / name), label, count, seed)
        for split, count in (("train", train_per_class), ("test", test_per_class))
        for label, name in enumerate(CIFAR10_CLASSES)
    ]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = sum(pool.map(_write_class, jobs))
    else:
        written = sum(map(_write_class, jobs))
    return {"root": str(root), "images": written, "train_per_class": train_per_class, "test_per_class": test_per_class,
            "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------- GPU sampling


def gpu_sample() -> dict | None:
    """One nvidia-smi reading: utilisation (%), memory used (MiB), and the processes holding GPU memory by name."""
    line = _run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"])
    if not line:
        return None
    util, mem = (float(x) for x in line.splitlines()[0].split(","))
    processes = {}
    apps = _run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]) or ""
    for row in apps.splitlines():
        try:
            pid, used = (x.strip() for x in row.split(","))
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") or pid
        except (OSError, ValueError):
            continue
        processes[name] = processes.get(name, 0.0) + float(used)
    return {"t": time.time(), "util": util, "mem_mib": mem, "processes": processes}


def watch(path: str, interval: float) -> None:
    """Append one JSON line per `interval` seconds to `path` until killed."""
    with open(path, "a") as f:
        while True:
            sample = gpu_sample()
            if sample is not None:
                f.write(json.dumps(sample) + "\n")
                f.flush()
            time.sleep(interval)


def read_samples(path: str | None) -> list[dict]:
    if not path or not Path(path).is_file():
        return []
    samples = []
    for line in Path(path).read_text().splitlines():
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError:  # the last line, cut by the kill
            pass
    return samples


def window(samples: list[dict], start: float | None, end: float | None) -> dict | None:
    """What the GPU did between two times (seconds since the epoch): utilisation, memory, processes by name."""
    if not samples or start is None or end is None:
        return None
    inside = [s for s in samples if start - 0.5 <= s["t"] <= end + 0.5]
    if not inside:
        return {"samples": 0}
    processes: dict[str, float] = {}
    for s in inside:
        for name, mib in s.get("processes", {}).items():
            processes[name] = max(processes.get(name, 0.0), mib)
    return {
        "samples": len(inside),
        "util_mean": round(statistics.fmean(s["util"] for s in inside), 1),
        "util_max": max(s["util"] for s in inside),
        "mem_max_mib": max(s["mem_mib"] for s in inside),
        "processes_max_mib": processes,
    }


# ----------------------------------------------------------------------------- records


def _iso(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def progress(text: str) -> dict:
    """The last progress line of each tag (`[expert many] epoch 3/200 ... 1.2s/epoch ETA 0:03:58`)."""
    last = {}
    for match in PROGRESS.finditer(text):
        eta = int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"])
        last[match["tag"]] = {
            "epoch": int(match["epoch"]),
            "epochs": int(match["epochs"]),
            "val_acc": float(match["val"]) / 100,
            "seconds_per_epoch": float(match["spe"]),
            "eta_s": eta,
        }
    return last


def run_record(run_dir: str | Path, log_text: str, samples: list[dict]) -> dict:
    """A run directory as the step reports it: each stage's status, seconds, device and GPU use; experts; student.

    Read from the run's manifest.json (status, duration, summary per stage),
    experts/*/result.json (device, gpu_ids, precision, epochs, seconds per
    epoch), distill/history.json (seconds and precision per epoch),
    config.yaml (the resources each stage asked for) and the console's
    progress lines (how far an unfinished stage got, and its ETA).
    """
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json") or {}
    record: dict = {"run_dir": str(run_dir), "stages": {}, "experts": {}, "progress": progress(log_text)}
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        import yaml

        config = yaml.safe_load(config_file.read_text()) or {}
        record["precision"] = config.get("precision")
        record["ray"] = config.get("ray")
        record["resources"] = {
            stage: (config.get(stage) or {}).get("resources") for stage in ("experts", "cache", "distill", "evaluate")
        }
        record["epochs"] = {stage: (config.get(stage) or {}).get("epochs") for stage in ("experts", "distill")}
        record["model"] = (config.get("model") or {}).get("arch")
    for name, stage in (manifest.get("stages") or {}).items():
        start, end = _iso(stage.get("started_at")), _iso(stage.get("finished_at"))
        record["stages"][name] = {
            "status": stage.get("status"),
            "duration_s": stage.get("duration_s"),
            "attempts": stage.get("attempts"),
            "summary": stage.get("summary"),
            "gpu": window(samples, start, end if end is not None else (start and time.time())),
        }
    for path in sorted(run_dir.glob("experts/*/result.json")):
        result = _read_json(path) or {}
        seconds = [h["seconds"] for h in result.get("history", []) if "seconds" in h]
        record["experts"][path.parent.name] = {
            key: result.get(key) for key in ("device", "gpu_ids", "precision", "epochs", "steps", "val_accuracy")
        } | {
            "seconds": round(result["finished_at"] - result["started_at"], 2) if "finished_at" in result else None,
            "epoch_s_median": round(statistics.median(seconds), 3) if seconds else None,
            "gpu": window(samples, result.get("started_at"), result.get("finished_at")),
        }
    history = _read_json(run_dir / "distill" / "history.json")
    if history:
        seconds = [h["seconds"] for h in history if "seconds" in h]
        record["student"] = {
            "epochs": len(history),
            "precision": sorted({h.get("precision") for h in history if h.get("precision")}),
            "epoch_s_first": round(seconds[0], 3) if seconds else None,
            "epoch_s_median_later": round(statistics.median(seconds[1:]), 3) if len(seconds) > 1 else None,
            "val_acc": history[-1].get("val_acc"),
        }
    report = _read_json(run_dir / "evaluate" / "report.json")
    if report:
        record["test_top1"] = report.get("student", {}).get("overall")
    if manifest.get("versions"):
        record["versions"] = manifest["versions"]
    return record


def projection(record: dict) -> dict | None:
    """Seconds a whole run would take at the speed measured so far: experts (concurrent) + student + the rest.

    For a run stopped by its time box: each expert's and the student's epochs
    times its seconds per epoch (finished experts as measured), plus the
    stages that finished; None when the student's speed is not known yet.
    """
    epochs = record.get("epochs") or {}
    experts = []
    for expert in record.get("experts", {}).values():
        if expert.get("seconds") is not None:
            experts.append(expert["seconds"])
    for tag, line in record.get("progress", {}).items():
        if tag.startswith("expert ") and tag[len("expert "):] not in record.get("experts", {}):
            experts.append(line["epochs"] * line["seconds_per_epoch"])
    student = record.get("progress", {}).get("student")
    if student is None or not experts:
        return None
    other = sum(
        (s.get("duration_s") or 0) for name, s in record.get("stages", {}).items() if name in ("split", "cache", "evaluate")
    )
    student_s = student["epochs"] * student["seconds_per_epoch"]
    return {
        "experts_s": round(max(experts), 1),
        "student_s": round(student_s, 1),
        "other_stages_s": round(other, 1),
        "total_s": round(max(experts) + student_s + other, 1),
        "epochs": epochs,
        "note": "experts run at once: the slowest counts; cache and evaluate as measured if they ran, else 0",
    }


def junit_record(xml_path: str | Path) -> dict:
    """pytest's JUnit XML as one entry per test: outcome, seconds, and the skip reason or failure message."""
    tests = []
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as err:
        return {"error": f"no JUnit XML: {err}", "tests": []}
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip()[:2000]
                break
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def part(name: str, rc: int | None, wall_s: float | None, command: str | None, boxed: bool = False, **details) -> dict:
    """One command of a step. `boxed`: the command is expected to be cut by its time box (a timeout is `partial`)."""
    status = status_of(rc)
    if boxed and status == "timeout":
        status = "partial"
    return {"name": name, "status": status, "rc": rc, "wall_s": wall_s, "command": command, **details}


def write_step(
    out: str | Path,
    step: str,
    mode: str,
    parts: list[dict],
    skipped: str | None = None,
    versions_file: str | None = None,
    failed: str | None = None,
) -> dict:
    """The step's JSON: its parts, its status (the worst part's; `skipped` or `failed` with a reason), the versions."""
    statuses = [p["status"] for p in parts]
    status = "skipped" if skipped else "failed" if failed else worst(statuses)
    # A step whose own checks failed (a test, a wrong device) is failed even if its commands exited 0.
    if not skipped and any(p.get("problems") for p in parts) and status == "ok":
        status = "failed"
    record = {
        "step": step,
        "status": status,
        "reason": skipped or failed,
        "mode": mode,
        "wall_s": round(sum(p.get("wall_s") or 0 for p in parts), 1),
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": (_read_json(Path(versions_file)) if versions_file else None) or versions(),
        "parts": parts,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{out}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    tmp.replace(out)
    return record


def run_problems(record: dict, mode: str) -> list[str]:
    """What a finished default run on the GPU got wrong: a stage not done, an expert not on CUDA."""
    problems = [f"stage {n}: {s['status']}" for n, s in record["stages"].items() if s["status"] != "done"]
    if not record["stages"]:
        problems.append("no stage recorded (manifest.json missing)")
    if mode == "cuda":
        problems += [f"expert {n} ran on {e['device']}" for n, e in record["experts"].items() if not str(e["device"]).startswith("cuda")]
    return problems


def cache_speed_line(result: dict) -> str:
    """benchmarks.cache_speed's headline: images/s cached and live, their ratio, the device and precision."""
    modes = result["training"]["modes"]
    setup = result.get("setup", {})
    return (
        f"{result.get('config', {}).get('arch')} {setup.get('precision')} on {setup.get('device')}: "
        f"cached {modes['cached']['images_per_s']:.0f} img/s, live {modes['live']['images_per_s']:.0f} img/s, "
        f"ratio {result['training']['ratio_cached_over_live']:.2f}x"
    )


# ----------------------------------------------------------------------------- summary


def _part_line(p: dict) -> str:
    bits = [f"{p['name']}: {p['status']}"]
    if p.get("wall_s") is not None:
        bits.append(f"{p['wall_s']:.0f} s")
    if "junit" in p:
        counts = p["junit"].get("counts", {})
        bits.append(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if "run" in p:
        stages = p["run"]["stages"]
        bits.append(" ".join(f"{n} {s['duration_s']:.1f}s" if s.get("duration_s") is not None else f"{n} {s['status']}"
                             for n, s in stages.items()))
        devices = sorted({str(e.get("device")) for e in p["run"]["experts"].values()})
        if devices:
            bits.append(f"experts on {'/'.join(devices)}")
        if p["run"].get("test_top1") is not None:
            bits.append(f"top-1 {100 * p['run']['test_top1']:.1f}%")
    if "run" in p and p["status"] in ("partial", "timeout"):
        bits.append("reached " + ", ".join(f"{tag} {line['epoch']}/{line['epochs']} at {line['seconds_per_epoch']}s/epoch"
                                           for tag, line in p["run"]["progress"].items()) or "no epoch")
    if p.get("projection"):
        bits.append(f"projected whole run {p['projection']['total_s']:.0f} s")
    if "speed" in p:
        bits.append(p["speed"])
    for problem in p.get("problems", [])[:5]:
        bits.append(f"PROBLEM: {problem}")
    return "; ".join(bits)


STEPS = ["tests", "run", "speed", "paper"]  # gpu_check.sh's order


def step_files(out_dir: str | Path) -> list[Path]:
    """The step JSONs in `out_dir`, in the script's order (others after, by name)."""
    paths = [p for p in Path(out_dir).glob("gpu-*.json") if p.name != "gpu-summary.json"]
    rank = {f"gpu-{name}.json": i for i, name in enumerate(STEPS)}
    return sorted(paths, key=lambda p: (rank.get(p.name, len(STEPS)), p.name))


def _first_line(text: str | None) -> str:
    return text.strip().splitlines()[0][:200] if text and text.strip() else ""


def summary(out_dir: str | Path) -> str:
    """One line per step, one per part; the tests that did not pass (skips grouped by their reason)."""
    lines = []
    for path in step_files(out_dir):
        step = _read_json(path)
        if not step:
            continue
        head = f"{step['step']:<7} {step['status']:<8} {step['wall_s']:>6.0f} s"
        lines.append(head + (f"  ({step['reason']})" if step.get("reason") else ""))
        for p in step.get("parts", []):
            lines.append("          " + _part_line(p))
            tests = p.get("junit", {}).get("tests", [])
            for t in tests:
                if t["outcome"] in ("failed", "error"):
                    lines.append(f"            {t['outcome']}: {t['test']}: {_first_line(t['message'])}")
            skips = collections.Counter(_first_line(t["message"]) for t in tests if t["outcome"] == "skipped")
            lines += [f"            skipped x{n}: {reason}" for reason, n in skips.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def record_parser(sub, name: str) -> None:
    """The arguments of run-record, junit-record or command-record: the part's name and own inputs, then the common ones."""
    p = sub.add_parser(name)
    p.add_argument("name")
    if name == "run-record":
        p.add_argument("run_dir")
        p.add_argument("log")
        p.add_argument("--gpu-samples")
        p.add_argument("--mode", default="cuda")
        p.add_argument("--expect-done", action="store_true", help="a stage not done or an expert off CUDA is a problem")
        p.add_argument("--boxed", action="store_true", help="cut by its time box as planned: a timeout is 'partial'")
    if name == "junit-record":
        p.add_argument("xml")
        p.add_argument("--no-skips", action="store_true", help="a skipped test is a problem (on a GPU machine)")
    if name == "command-record":
        p.add_argument("--json", help="a JSON file the command wrote, kept whole in the part")
        p.add_argument("--text", help="a one-line figure for the summary")
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--command", dest="cmd")
    p.add_argument("--out", required=True)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions")
    p = sub.add_parser("make-cifar")
    p.add_argument("root")
    p.add_argument("--train-per-class", type=int, required=True)
    p.add_argument("--test-per-class", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("watch")
    p.add_argument("file")
    p.add_argument("--interval", type=float, default=0.5)
    for name in ("run-record", "junit-record", "command-record"):
        record_parser(sub, name)
    p = sub.add_parser("step")
    p.add_argument("out")
    p.add_argument("step")
    p.add_argument("--mode", required=True)
    p.add_argument("--part", action="append", default=[])
    p.add_argument("--skipped", help="the step did not run: why")
    p.add_argument("--failed", help="the step could not run: why (a failure, unlike --skipped)")
    p.add_argument("--versions", help="versions JSON written once by `versions` (default: read them again)")
    p = sub.add_parser("summary")
    p.add_argument("out_dir")
    p.add_argument("--json")
    p.add_argument("--versions")
    return parser


def run_details(args) -> dict:
    """run-record: the run's record, its projection when boxed, its problems when it should have finished, the log's tail."""
    log_text = Path(args.log).read_text(errors="replace") if Path(args.log).is_file() else ""
    record = run_record(args.run_dir, log_text, read_samples(args.gpu_samples))
    details: dict = {"run": record}
    if args.boxed:  # a run cut by its time box: how long the whole would take at the speed it showed
        details["projection"] = projection(record)
    if args.expect_done and args.rc == 0:
        details["problems"] = run_problems(record, args.mode)
    details["log_tail"] = log_text[-3000:]
    return details


def junit_details(args) -> dict:
    """junit-record: the tests, and as problems those that failed (and skipped ones with --no-skips), or that none ran."""
    details: dict = {"junit": junit_record(args.xml)}
    bad = [t["test"] for t in details["junit"]["tests"] if t["outcome"] in ("failed", "error")]
    if args.no_skips:
        bad += [f"{t['test']} skipped: {t['message']}" for t in details["junit"]["tests"] if t["outcome"] == "skipped"]
    if not details["junit"]["tests"]:
        bad.append(details["junit"].get("error") or "no test ran")
    if bad:
        details["problems"] = bad
    return details


def command_details(args) -> dict:
    """command-record: the JSON the command wrote, and a one-line figure for the summary."""
    details: dict = {}
    if args.json:
        details["result"] = _read_json(Path(args.json))
        if details["result"] and "training" in details["result"]:
            details["speed"] = cache_speed_line(details["result"])
    if args.text:
        details["speed"] = args.text
    return details


RECORDS = {"run-record": run_details, "junit-record": junit_details, "command-record": command_details}


def write_summary(args) -> None:
    text = summary(args.out_dir)
    print(text)
    if args.json:
        steps = {p.stem[len("gpu-"):]: (_read_json(p) or {}).get("status") for p in step_files(args.out_dir)}
        found = (_read_json(Path(args.versions)) if args.versions else None) or versions()
        Path(args.json).write_text(json.dumps({"steps": steps, "versions": found, "summary": text}, indent=1) + "\n")


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "versions":
        print(json.dumps(versions(), indent=1))
    elif args.command == "make-cifar":
        print(json.dumps(make_cifar(args.root, args.train_per_class, args.test_per_class, args.seed)))
    elif args.command == "watch":
        watch(args.file, args.interval)
    elif args.command in RECORDS:
        details = RECORDS[args.command](args)
        boxed = getattr(args, "boxed", False)
        Path(args.out).write_text(json.dumps(part(args.name, args.rc, round(args.wall, 1), args.cmd, boxed, **details), default=str))
    elif args.command == "step":
        parts = [json.loads(Path(f).read_text()) for f in args.part if Path(f).is_file()]
        record = write_step(args.out, args.step, args.mode, parts, args.skipped, args.versions, args.failed)
        print(f"{args.step}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))
    elif args.command == "summary":
        write_summary(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
