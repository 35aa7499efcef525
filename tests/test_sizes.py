"""Short modules and functions: none over the house limits, except those named here until they are split.

The limits (issue 23): no module of the project's packages over 500 lines, no
function over 60. `OVER` lists what is over today, with its size; the test
fails when something new goes over, and when a listed one has been brought
under (then delete its line), so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lfme", "rundir", "stages", "pipeline")
MODULE_LINES, FUNCTION_LINES = 500, 60

# What is over today: nothing. A name goes here only with the reason it waits.
OVER: set[str] = set()


def over_the_limits() -> dict[str, int]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            source = path.read_text()
            if source.count("\n") > MODULE_LINES:
                found[name] = source.count("\n")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > FUNCTION_LINES:
                        found[f"{name}::{node.name}"] = length
    return found


def test_no_new_module_or_function_over_the_limits_and_the_list_only_shrinks():
    found = over_the_limits()
    assert set(found) - OVER == set(), f"over {MODULE_LINES} lines (module) or {FUNCTION_LINES} (function): {found}"
    assert OVER - set(found) == set(), f"now under the limits, delete from OVER: {sorted(OVER - set(found))}"
