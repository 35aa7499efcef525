"""A claim across two Table 3 files: a variant of one table against a variant of another, paired by seed.

    python -m benchmarks.across docs/results/A-table3.json:lfme docs/results/B-table3.json:lfme \
        --claim "LFME with joint experts beats LFME with scratch experts"

`benchmarks.table3` judges claims between the variants of one table, which
share their experts and cache. Two tables of one preset and scale that differ
in a setting of the experts (say `experts.init=joint` against `scratch`) can
only be compared across files: the same seed has the same split and the same
students' seeds in both, so the difference per seed is a paired one, judged by
the same rule (`benchmarks.table3.RULE`: mean over the seeds both tables ran,
more than two standard errors from 0). The first argument is the claimed
better one.

The tables must share their preset and scale (else this stops, naming the
field); the overrides that differ are printed, since they are what the claim
compares. Tables made on different machines pair as well, but a row that
both ran with the same settings shows the machines' own difference: where
the two tables share a variant with identical switches and no expert (class
sampling), its per-seed difference is printed beside the claim as that
baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.table3 import RULE, claims_table, paired

# Rows that use no expert: where both tables have one, its difference is what the machines (not the experts) differ by.
EXPERT_FREE = ("cls_samp", "logit_adj")


def load(spec: str) -> tuple[str, dict, str]:
    """`path:variant` -> (path, the table, variant), the variant checked to be in every seed of the table."""
    path, sep, variant = spec.rpartition(":")
    if not sep or not path:
        raise SystemExit(f"{spec}: expected TABLE_JSON:VARIANT")
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{path}: cannot read a Table 3 file ({err})") from None
    missing = [seed for seed, rows in table["runs"].items() if variant not in rows]
    if missing:
        raise SystemExit(f"{path}: no variant {variant!r} in seed(s) {', '.join(missing)}")
    return path, table, variant


def across(better: tuple[str, dict, str], worse: tuple[str, dict, str], claim: str) -> dict:
    """The claim's paired differences over the seeds both tables ran, overall and per subset, with `paired`'s verdict."""
    (path_a, a, name_a), (path_b, b, name_b) = better, worse
    for key in ("preset", "scale"):
        if a["meta"][key] != b["meta"][key]:
            raise SystemExit(f"{path_a} and {path_b}: their {key} differs ({a['meta'][key]!r}, {b['meta'][key]!r})")
    seeds = sorted(set(a["runs"]) & set(b["runs"]), key=int)
    if not seeds:
        raise SystemExit(f"{path_a} and {path_b}: no seed in common")
    rows_a = {s: a["runs"][s][name_a] for s in seeds}
    rows_b = {s: b["runs"][s][name_b] for s in seeds}
    differences = {s: rows_a[s]["overall"] - rows_b[s]["overall"] for s in seeds}
    subsets = {name: paired([rows_a[s]["subsets"][name] - rows_b[s]["subsets"][name] for s in seeds])
               for name in rows_a[seeds[0]]["subsets"]}
    baselines = {
        name: {s: a["runs"][s][name]["overall"] - b["runs"][s][name]["overall"] for s in seeds}
        for name in EXPERT_FREE
        if all(name in a["runs"][s] and name in b["runs"][s] for s in seeds)
        and a["runs"][seeds[0]][name].get("switches") == b["runs"][seeds[0]][name].get("switches")
    }
    return {"claim": claim, "differences": differences, **paired(list(differences.values())), "subsets": subsets,
            "baselines": baselines,
            "overrides": {"only_better": [o for o in a["meta"]["overrides"] if o not in b["meta"]["overrides"]],
                          "only_worse": [o for o in b["meta"]["overrides"] if o not in a["meta"]["overrides"]]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("better", help="TABLE_JSON:VARIANT, the claimed better one")
    parser.add_argument("worse", help="TABLE_JSON:VARIANT")
    parser.add_argument("--claim", help="the claim's words (default: the two specs)")
    args = parser.parse_args(argv)
    result = across(load(args.better), load(args.worse), args.claim or f"{args.better} beats {args.worse}")
    print("\n".join(claims_table([result])))
    print(f"\nOverrides only in the first: {result['overrides']['only_better'] or 'none'}; "
          f"only in the second: {result['overrides']['only_worse'] or 'none'}.")
    for name, diffs in result["baselines"].items():
        print(f"Baseline {name} (same switches, no expert), first minus second per seed (points): "
              + ", ".join(f"{s}: {100 * d:+.1f}" for s, d in diffs.items()))
    print(f"\n{RULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
