"""The package's layers only look down, and the benchmarks use only public names.

Layers, bottom to top (docs/ARCHITECTURE.md draws them):
    lfme      the method: plain PyTorch, numpy, pyarrow; no Ray
    rundir    config schema, run-directory layout, data loaders, stage context; no Ray
    stages    one module per stage, plus the Ray plumbing they share (workers, ray_compat)
    pipeline  graph, manifest, lease, runner, reuse, tune, console, CLI
Every import is checked, function-level ones included (they are how a cycle
hides). A stage module never imports another stage module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["lfme", "rundir", "stages", "pipeline"]
STAGE_MODULES = {"stages.split", "stages.experts", "stages.cache", "stages.distill", "stages.evaluate"}
NO_RAY = {"lfme", "rundir"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, imported name or "") of every import in the file, relative ones resolved."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from stages import workers` imports the module stages.workers
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full, "") if is_module(full) else (node.lineno, base, alias.name))
    return found


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def layer_of(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def violations(me: str, found: list[tuple[int, str, str]]) -> list[str]:
    """What is wrong with module `me` importing `found` (see the module docstring)."""
    mine = layer_of(me)
    wrong = []
    for line, module, _ in found:
        theirs = layer_of(module)
        if theirs is not None and theirs > mine:
            wrong.append(f"line {line}: {module} is in a layer above {me}")
        if me.split(".")[0] in NO_RAY and module.split(".")[0] == "ray":
            wrong.append(f"line {line}: {module} (Ray) below the stages")
        if me in STAGE_MODULES and module in STAGE_MODULES and module != me:
            wrong.append(f"line {line}: stage {me} imports stage {module}")
        if me.startswith("stages.") and me not in STAGE_MODULES and module in STAGE_MODULES:
            wrong.append(f"line {line}: {me} (shared by the stages) imports stage {module}")
    return wrong


def private(module: str, name: str) -> bool:
    """A leading underscore marks a private module or name; dunder names (__future__) are not private."""
    return any(part.startswith("_") and not part.endswith("__") for part in [*module.split("."), name] if part)


@pytest.mark.parametrize("path", sources(*LAYERS), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_look_down(path):
    wrong = violations(module_name(path), imports(path))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sources("benchmarks"), ids=lambda p: str(p.relative_to(REPO)))
def test_benchmarks_use_public_names_only(path):
    wrong = []
    for line, module, name in imports(path):
        if private(module, name):
            wrong.append(f"line {line}: {module}{'.' + name if name else ''} is private")
    text = path.read_text()
    if "sys.path" in text:
        wrong.append("puts something on sys.path: run benchmarks as modules (python -m benchmarks.NAME)")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_function_level_and_package_imports():
    found = {module for _, module, _ in imports(REPO / "stages" / "cache.py")}
    assert "stages.tasks" in found and "rundir.layout" in found  # `from stages import tasks`: a module
    tune = {module for _, module, _ in imports(REPO / "pipeline" / "tune.py")}
    assert "stages.distill" in tune  # imported inside a function


def test_the_checker_flags_each_kind_of_violation():
    assert violations("lfme.engine", [(3, "rundir.config", "Config")]) == ["line 3: rundir.config is in a layer above lfme.engine"]
    assert violations("rundir.layout", [(4, "ray.train", "")]) == ["line 4: ray.train (Ray) below the stages"]
    assert violations("stages.evaluate", [(5, "stages.distill", "")]) == ["line 5: stage stages.evaluate imports stage stages.distill"]
    assert violations("stages.workers", [(6, "stages.cache", "")]) == ["line 6: stages.workers (shared by the stages) imports stage stages.cache"]
    assert violations("stages.distill", [(7, "stages.workers", ""), (8, "rundir.layout", "load_split"), (9, "lfme.losses", "")]) == []
    assert violations("pipeline.tune", [(1, "stages.distill", "distill_loop")]) == []
    assert private("ray.train.v2._internal", "") and private("benchmarks.table3", "_helper")
    assert not private("__future__", "annotations") and not private("pipeline.reuse", "reuse_stages")
