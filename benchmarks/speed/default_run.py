"""(h): the default `lfme run` from the command line, in this checkout and in a git worktree of an earlier commit."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.speed import ENVIRONMENT
from benchmarks.speed.common import log
from benchmarks.speed.settings import DEFAULT_CONFIG, REPO
from lfme.storage import read_json


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(ref: str, path: Path):
    """A detached git worktree of `ref` at `path`, removed when the block ends."""
    if path.exists():  # left by an interrupted run
        shutil.rmtree(path)
        git("worktree", "prune")
    git("worktree", "add", "--detach", str(path), ref)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def tree_environment(tree: Path) -> dict[str, str]:
    """ENVIRONMENT with `tree` first on PYTHONPATH, after checking that `python -m` in `tree` then imports its code.

    From the tree's root `python -m` imports the tree's packages before this
    checkout's editable install anyway, but the Ray workers of the run import
    the stages in processes of their own, which inherit PYTHONPATH.
    """
    env = dict(ENVIRONMENT, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), ENVIRONMENT.get("PYTHONPATH")])))
    probe = [sys.executable, "-c", "import pipeline; print(pipeline.__file__)"]
    imported = Path(subprocess.run(probe, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout.strip())
    if imported.resolve() != (tree / "pipeline" / "__init__.py").resolve():
        raise RuntimeError(f"python -m in {tree} imports {imported}, not the tree's pipeline")
    return env


def default_run(tree: Path, run_dir: Path, env: dict[str, str]) -> dict:
    """`lfme run ray_config.yaml` of `tree`, from its command line, on a fresh `run_dir`."""
    shutil.rmtree(run_dir, ignore_errors=True)
    output = run_dir.with_suffix(".log")
    command = [sys.executable, "-m", "pipeline.cli", "run", DEFAULT_CONFIG, "--run-dir", str(run_dir)]
    start = time.perf_counter()
    with open(output, "w") as f:
        done = subprocess.run(command, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"lfme run in {tree} failed with exit status {done.returncode}: see {output}")
    stages = read_json(run_dir / "manifest.json")["stages"]
    return {
        "wall_s": wall,
        "stages_s": {name: record["duration_s"] for name, record in stages.items()},
        "top1": read_json(run_dir / "evaluate" / "report.json")["student"]["overall"],
        "output": str(output),
    }


def tree_summary(commit: str, mine: list[dict]) -> dict:
    """One tree's runs: medians of wall and stage seconds, every run's test top-1."""
    return {
        "commit": commit,
        "wall_s": statistics.median(run["wall_s"] for run in mine),
        "stages_s": {stage: statistics.median(run["stages_s"][stage] for run in mine) for stage in mine[0]["stages_s"]},
        "top1": [run["top1"] for run in mine],
    }


def measure_default_run(args, out: Path) -> dict:
    """(h): the default run in this checkout and, unless --skip-before, in a worktree of --before-ref."""
    work = out / "default-run"
    work.mkdir(parents=True, exist_ok=True)
    trees, commits = {}, {}
    with contextlib.ExitStack() as cleanup:
        if not args.skip_before:
            trees["before"] = cleanup.enter_context(worktree(args.before_ref, work / "before-tree"))
            commits["before"] = git("rev-parse", "--short", f"{args.before_ref}^{{commit}}")
        trees["after"] = REPO
        changed = git("status", "--porcelain")
        commits["after"] = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if changed else "")
        envs = {label: tree_environment(tree) for label, tree in trees.items()}
        runs: dict[str, list[dict]] = {label: [] for label in trees}
        for r in range(args.rounds):
            for label in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                log(f"(h) round {r + 1}/{args.rounds}: lfme run {DEFAULT_CONFIG}, {label} ({commits[label]})")
                run = default_run(trees[label], work / f"{label}-{r}", envs[label])
                log(f"    {run['wall_s']:.1f} s, test top-1 {100 * run['top1']:.2f}%")
                runs[label].append(run)
    summary = {label: tree_summary(commits[label], mine) for label, mine in runs.items()}
    return {"config": DEFAULT_CONFIG, "rounds": args.rounds, "runs": runs, "trees": summary}
