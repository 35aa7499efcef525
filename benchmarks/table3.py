"""The paper's Table 3 (ablation) on one preset, plus the student with live teachers.

    python -m benchmarks.table3 configs/cifar10-lt.yaml --scale cpu --set data.root=../shared/data/cifar10
    python -m benchmarks.table3 configs/tiny-imagenet-100-lt.yaml --scale cpu --set data.root=../shared/data/tiny-imagenet-100
    python -m benchmarks.table3 configs/cifar10-lt.yaml --scale paper      # GPU machines, data in data/cifar10

The presets read data/ (README, "Data for the presets"); this project's own
runs give its data folder explicitly, as above.

Variants: the paper's seven, LFME with the official code's SpIS
(`lfme_official`), and LFME with live teachers. What runs, all with the same
model, epochs and seed:
1. split, experts and cache, once, in `<out>/base` (the pipeline's own stages).
2. Each variant in `VARIANTS` as a run directory `<out>/<variant>/` that starts
   from base's split, experts and cache (`pipeline.reuse.reuse_stages`, what
   `lfme run --reuse` does), so `lfme run` skips those and runs only distill
   and evaluate with the variant's switches. Every student therefore learns from the same
   experts and the same cache bytes; each variant's distill stage checks the
   copied cache against the copied experts' SHA-256 as usual.
3. `<out>/table.json` and `<out>/table.md`: overall and Many/Medium/Few test
   top-1 of every variant, each expert against the class-sampled student on
   the expert's classes (KD's premise), the paper's ImageNet-LT numbers
   beside them, the paper's claims (KD helps, SpES helps, SpIS helps, class
   sampling beats instance sampling) and ours (the official SpIS against the
   paper's, live teachers against the cache) judged by `RULE`, and the wall
   time of each student. LFME's plots (w_l per epoch, per-class accuracy
   against training count) are copied beside the table.

`--seeds 0,1,2` repeats 1-2 per seed in `<out>/seed-<s>/` (each seed its own
experts, cache and students; the long-tailed split is the protocol's and the
same for all), except the instance-sampling variants, which run with the
first seed only. The table then gives mean and standard deviation per
variant, and each claim's paired differences (better minus worse, same seed),
their mean and standard error, and its verdict: holds where the mean is more
than two standard errors above 0, fails where more than two below, not
separated otherwise (always, with one seed).

Seeds need not run in one go: `--include earlier/table.json` adds the seeds
of an earlier table of the same preset, scale and overrides (say, committed
by a session whose machine is gone) to the seeds run now, and
`--report-only` runs nothing and builds the table from the finished run
directories under `--out`.

`--scale cpu` shortens the schedule so one preset finishes in about an hour on
2 CPU cores (`benchmarks.scales.CPU_SCALE`, printed in the table); `--scale
cpu-long` is 3x its epochs, in bf16, with an expert budget of 600 SGD steps
(`CPU_LONG_SCALE`), for the 3-seed claims in about 90 minutes (measured in
docs/RESULTS.md); `--scale paper` keeps the preset's recipe (ResNet-32, 200
epochs). Rerunning the command skips every
stage already done and resumes an interrupted one, like `lfme run`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.scales import SCALES
from lfme import storage
from lfme.report import format_percent, markdown_table
from lfme.storage import read_json, write_json_atomic, write_text_atomic
from pipeline.graph import DISTILL_ADDED, TEACHER_STAGES, fingerprints
from pipeline.manifest import Manifest
from pipeline.reuse import reuse_stages
from pipeline.ray_session import init_ray
from pipeline.runner import run_pipeline
from rundir.config import config_from_dict, dump_config, load_config
from rundir.fields import ConfigError
from rundir.layout import history_file, report_dir

REPO = Path(__file__).resolve().parents[1]



def switches(sampling: str, kd: bool, spes: bool, spis: bool, teachers: str = "cache") -> list[str]:
    return [
        f"distill.sampling={sampling}",
        f"distill.kd={str(kd).lower()}",
        f"distill.spes={str(spes).lower()}",
        f"distill.spis={str(spis).lower()}",
        f"distill.teachers={teachers}",
    ]


# Kept logits per expert in the `lfme_topk` variant: on Tiny-ImageNet-100-LT
# the experts' subsets have about 33 classes, so 5 drops most of them.
TOP_K = 5
# name -> (row label, --set switches, the paper's ImageNet-LT overall top-1 or None)
VARIANTS = {
    "ins_samp": ("Ins.Samp", switches("instance", False, False, False), 20.9),
    "ins_samp_kd": ("Ins.Samp + KD", switches("instance", True, False, False), 32.2),
    "ins_samp_kd_spes": ("Ins.Samp + KD + SpES", switches("instance", True, True, False), 32.6),
    "cls_samp": ("Cls.Samp", switches("class", False, False, False), 32.6),
    "cls_samp_kd": ("Cls.Samp + KD", switches("class", True, False, False), 35.8),
    "cls_samp_kd_spes": ("Cls.Samp + KD + SpES", switches("class", True, True, False), 37.1),
    "lfme": ("SpIS + KD + SpES (LFME)", switches("class", True, True, True), 37.2),
    # The official code's SpIS (lfme.selfpaced): its initial weights, v_i at 1 halfway, unclipped, on the logits.
    "lfme_official": (
        "LFME (official SpIS)",
        switches("class", True, True, True)
        + ["distill.spis_init=official", "distill.spis_horizon=half", "distill.spis_clip=false", "distill.spis_on=logits"],
        None,
    ),
    "lfme_live": ("LFME, live teachers", switches("class", True, True, True, teachers="live"), None),
    # A cache of each expert's TOP_K largest logits (lfme.teacher_cache.TopK): its own cache stage.
    "lfme_topk": (f"LFME, top-{TOP_K} cache", switches("class", True, True, True) + [f"cache.top_k={TOP_K}"], None),
    # Today's simple baseline (Menon et al. 2021): instance sampling with the logit-adjusted loss, and LFME's
    # KD, SpES and SpIS on top of that base loss. Instance sampling: the loss already balances the classes
    # (class sampling on top would correct twice).
    "logit_adj": ("Logit adj.", switches("instance", False, False, False) + ["distill.base_loss=logit_adjusted"], None),
    "lfme_logit_adj": ("LFME + logit adj.", switches("instance", True, True, True) + ["distill.base_loss=logit_adjusted"], None),
    # Caches of K augmented views per image that the student replays (lfme.data.views): each its own cache stage.
    **{
        f"lfme_views{k}": (f"LFME, cache of {k} views", switches("class", True, True, True) + [f"cache.views={k}"], None)
        for k in (2, 4, 8)
    },
    # The same storage shared by the student's draws (cache.allot: draws): a tail image gets hundreds of views, a head one one or two.
    **{
        f"lfme_views{k}_draws": (
            f"LFME, cache of {k} views per image allotted by draws",
            switches("class", True, True, True) + [f"cache.views={k}", "cache.allot=draws"],
            None,
        )
        for k in (4, 8)
    },
}

def variant_row(name: str, run_dir: str) -> dict:
    label, sets, paper = VARIANTS[name]
    report = read_json(storage.join(report_dir(run_dir), "report.json"))
    shots = report["student"]["shots"]["inclusive"]
    distill = Manifest.load(run_dir).record("distill")
    history = read_json(history_file(run_dir))
    return {
        "variant": name,
        "label": label,
        "switches": sets,
        "overall": report["student"]["overall"],
        # The student on each expert's subset: the split's own many/medium/few
        # (on CIFAR-10-LT the literature's N<=20 "few" group is empty).
        "subsets": {name: e["student_accuracy"] for name, e in report["experts"].items()},
        "many": shots["many"],
        "medium": shots["medium"],
        "few": shots["few"],
        "shot_rule": shots["rule"],
        "paper_imagenet_lt_overall": paper,
        "distill_seconds": distill.duration_s,
        # The cache this student read: its own stage, or base's when shared (reuse copies the record).
        "cache_seconds": Manifest.load(run_dir).record("cache").duration_s,
        # A student epoch (training and validation), the median of those after the first (which pays start-up).
        "epoch_seconds": statistics.median(h["seconds"] for h in history[1:] or history),
        # What the student ran in: a requested bf16 falls back to fp32 on a CPU without native bf16.
        "precision": history[-1]["precision"],
        "experts": report["experts"],
    }


CLAIMS = [
    ("KD helps instance sampling", "ins_samp_kd", "ins_samp"),
    ("KD helps class sampling", "cls_samp_kd", "cls_samp"),
    ("SpES helps KD (instance sampling)", "ins_samp_kd_spes", "ins_samp_kd"),
    ("SpES helps KD (class sampling)", "cls_samp_kd_spes", "cls_samp_kd"),
    ("class sampling beats instance sampling", "cls_samp", "ins_samp"),
    ("LFME beats class sampling", "lfme", "cls_samp"),
    ("SpIS helps (LFME vs Cls.Samp + KD + SpES)", "lfme", "cls_samp_kd_spes"),
    ("the official SpIS beats the paper's", "lfme_official", "lfme"),
    ("live teachers beat the cache (the cache's cost)", "lfme_live", "lfme"),
    ("logit adjustment beats class sampling", "logit_adj", "cls_samp"),
    ("LFME + logit adj. beats logit adj.", "lfme_logit_adj", "logit_adj"),
    (f"the top-{TOP_K} cache beats the full one (its cost)", "lfme_topk", "lfme"),
    *((f"live teachers beat a cache of {k} views (its cost)", "lfme_live", f"lfme_views{k}") for k in (2, 4, 8)),
    *((f"a cache of {k} views beats one of the un-augmented image", f"lfme_views{k}", "lfme") for k in (2, 4, 8)),
    *((f"live teachers beat a cache of {k} views allotted by draws (its cost)", "lfme_live", f"lfme_views{k}_draws") for k in (4, 8)),
    *((f"a cache of {k} views allotted by draws beats one of the un-augmented image", f"lfme_views{k}_draws", "lfme") for k in (4, 8)),
    *((f"allotting {k} views by draws beats {k} views each", f"lfme_views{k}_draws", f"lfme_views{k}") for k in (4, 8)),
]
# Variants run with the first seed only: instance sampling is far behind class
# sampling at CPU scale (docs/RESULTS.md), so its rows are not among the claims
# that need the seeds.
FIRST_SEED_ONLY = ("ins_samp", "ins_samp_kd", "ins_samp_kd_spes")
RULE = (
    "A claim holds where the mean of its paired differences over seeds (better variant minus worse, same seed) "
    "is more than two standard errors above 0, fails where it is more than two below, and is not separated "
    "otherwise; one seed gives no standard error, so a claim with one seed is never separated."
)


def paired(differences: list[float]) -> dict:
    """Mean, standard error and verdict (RULE) of paired differences, one per seed."""
    n = len(differences)
    mean = statistics.fmean(differences) if n else float("nan")
    se = statistics.stdev(differences) / math.sqrt(n) if n >= 2 else None
    if se is None:
        verdict = "not separated"
    elif mean > 2 * se:
        verdict = "holds"
    elif mean < -2 * se:
        verdict = "fails"
    else:
        verdict = "not separated"
    return {"n": n, "mean": mean, "se": se, "verdict": verdict}


def spread(values: list[float]) -> dict:
    """Mean and standard deviation (n - 1; 0 for one value) of one number over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def claims_over_seeds(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """The paper's claims and ours, each judged on the seeds where both of its variants ran."""
    out = []
    for claim, better, worse in CLAIMS:
        seeds = [s for s, rows in runs.items() if better in rows and worse in rows]
        if not seeds:
            continue
        differences = {s: runs[s][better]["overall"] - runs[s][worse]["overall"] for s in seeds}
        subsets = {
            name: paired([runs[s][better]["subsets"][name] - runs[s][worse]["subsets"][name] for s in seeds])
            for name in runs[seeds[0]][better]["subsets"]
        }
        out.append({"claim": claim, "better": better, "worse": worse, "differences": differences,
                     **paired(list(differences.values())), "subsets": subsets})
    return out


def variants_over_seeds(runs: dict[int, dict[str, dict]]) -> dict[str, dict]:
    names = list(dict.fromkeys(name for rows in runs.values() for name in rows))
    out = {}
    for name in names:
        rows = [rows[name] for rows in runs.values() if name in rows]
        out[name] = {
            "label": rows[0]["label"],
            "seeds": [s for s, r in runs.items() if name in r],
            "overall": spread([r["overall"] for r in rows]),
            "subsets": {k: spread([r["subsets"][k] for r in rows]) for k in rows[0]["subsets"]},
            **{k: spread([r[k] for r in rows]) if all(r[k] is not None for r in rows) else None for k in ("many", "medium", "few")},
            "paper_imagenet_lt_overall": rows[0]["paper_imagenet_lt_overall"],
            "distill_seconds": statistics.fmean(r["distill_seconds"] for r in rows),
            **{key: _mean_of(rows, key) for key in ("cache_seconds", "epoch_seconds")},
        }
    return out


def _mean_of(rows: list[dict], key: str) -> float | None:
    """The mean of `key` over rows that recorded it (rows of older tables may not have)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def premise(runs: dict[int, dict[str, dict]], student: str = "cls_samp") -> list[dict]:
    """Per subset, each expert against a student on the expert's test samples, on equal terms, per seed.

    Equal terms: both predict among the subset's classes only (the expert's
    whole label space; the student's `student_accuracy_within_subset` of the
    evaluate report), which is what a KD term over S_l can teach. KD can only
    help where the expert is ahead; the verdict is RULE's on expert minus
    student. The student is `student` (the class-sampled one), else the first
    variant that ran with every seed. Rows of reports written before the
    within-subset accuracy was recorded are left out (benchmarks.premise
    scores their students again).
    """
    if not any(student in rows for rows in runs.values()):
        student = next(iter(next(iter(runs.values()))))
    seeds = [
        s for s, rows in runs.items()
        if student in rows and all("student_accuracy_within_subset" in e for e in rows[student]["experts"].values())
    ]
    if not seeds:
        return []
    out = []
    for name in runs[seeds[0]][student]["experts"]:
        expert = {s: runs[s][student]["experts"][name]["accuracy"] for s in seeds}
        learner = {s: runs[s][student]["experts"][name]["student_accuracy_within_subset"] for s in seeds}
        gap = paired([expert[s] - learner[s] for s in seeds])
        out.append({"subset": name, "student_variant": student, "expert": spread(list(expert.values())),
                    "student": spread(list(learner.values())), "gap": gap})
    return out


def pm(x: dict | None) -> str:
    """A value over seeds: its mean, ± its standard deviation where more than one seed ran."""
    if x is None:
        return "n/a"
    return format_percent(x["mean"]) if len(x["values"]) == 1 else f"{100 * x['mean']:.1f} ± {100 * x['std']:.1f}"


def points(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}"


def variants_table(variants: dict[str, dict], subsets: list) -> list[str]:
    return markdown_table(
        ["variant", "seeds", "overall", "per seed", *(f"subset {s}" for s in subsets), "many", "medium", "few",
         "paper (ImageNet-LT)", "student wall s", "cache stage s", "student s/epoch"],
        [
            [
                v["label"],
                ",".join(map(str, v["seeds"])),
                pm(v["overall"]),
                ", ".join(format_percent(x) for x in v["overall"]["values"]),
                *(pm(v["subsets"][s]) for s in subsets),
                pm(v["many"]),
                pm(v["medium"]),
                pm(v["few"]),
                "" if v["paper_imagenet_lt_overall"] is None else f"{v['paper_imagenet_lt_overall']:.1f}",
                f"{v['distill_seconds']:.0f}",
                "" if v["cache_seconds"] is None else f"{v['cache_seconds']:.0f}",
                "" if v["epoch_seconds"] is None else f"{v['epoch_seconds']:.1f}",
            ]
            for v in variants.values()
        ],
        ["l", "l", "r", "l"] + ["r"] * (7 + len(subsets)),
    )


def claims_table(claims: list[dict]) -> list[str]:
    return markdown_table(
        ["claim", "per seed (points)", "mean", "standard error", "verdict", "per subset: mean ± SE (verdict)"],
        [
            [c["claim"], ", ".join(points(d) for d in c["differences"].values()), points(c["mean"]),
             "" if c["se"] is None else f"{100 * c['se']:.1f}", c["verdict"],
             "; ".join(f"{name} {points(p['mean'])}" + ("" if p["se"] is None else f" ± {100 * p['se']:.1f} ({p['verdict']})")
                       for name, p in c.get("subsets", {}).items())]
            for c in claims
        ],
        ["l", "l", "r", "r", "l", "l"],
    )


def premise_table(premise_rows: list[dict]) -> list[str]:
    return markdown_table(
        ["expert", "expert on its subset", f"{premise_rows[0]['student_variant'] if premise_rows else 'student'} within that subset",
         "expert - student (points)", "standard error", "verdict"],
        [
            [p["subset"], pm(p["expert"]), pm(p["student"]), points(p["gap"]["mean"]),
             "" if p["gap"]["se"] is None else f"{100 * p['gap']['se']:.1f}",
             {"holds": "expert ahead", "fails": "expert behind"}.get(p["gap"]["verdict"], "not separated")]
            for p in premise_rows
        ],
        ["l", "r", "r", "r", "r", "l"],
    )


def header(runs: dict[int, dict[str, dict]], meta: dict, first: dict) -> list[str]:
    """The title, the command, what the numbers are, the overrides, the precision, the wall time and versions."""
    return [
        f"# Table 3 on {meta['preset']} (scale: {meta['scale']}, seeds {', '.join(map(str, runs))})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Test top-1 (%), mean ± standard deviation over seeds where more than one ran. `subset X`: the student on the "
        f"classes of expert X (the split's groups); many/medium/few: the literature's groups, {first['shot_rule']} "
        f"(n/a: no such class). Each seed trains its own experts, cache and students; the long-tailed split is the "
        f"protocol's, the same for every seed. The instance-sampling rows run with the first seed only.",
        f"Schedule overrides: {', '.join(f'`{s}`' for s in meta['overrides']) or 'none (the preset as is)'}.",
        f"Precision the students ran in, per seed: "
        f"{'; '.join(f'{seed}: ' + ', '.join(sorted({r.get('precision', 'not recorded') for r in rows.values()})) for seed, rows in runs.items())}.",
        f"Wall time of the whole benchmark: {meta['wall_seconds'] / 60:.1f} min; versions: {meta['versions']}.",
        "",
    ]


def render(runs: dict[int, dict[str, dict]], meta: dict) -> str:
    first = next(iter(next(iter(runs.values())).values()))
    lines = [
        *header(runs, meta, first),
        *variants_table(variants_over_seeds(runs), list(first["subsets"])),
        "",
        "The premise of KD on equal terms, per subset: each expert against the student on the expert's test samples, "
        "both predicting among the subset's classes only.",
        "",
        *premise_table(premise(runs)),
        "",
        RULE,
        "",
        *claims_table(claims_over_seeds(runs)),
        "",
    ]
    return "\n".join(lines)


def run_seed(preset: str, seed: int, names: list[str], overrides: list[str], root: Path, first: bool) -> dict[str, dict]:
    """Split, experts and cache in `root/base`, then each variant's student from them; each variant's row.

    One seed keeps the single-run layout (`<out>/base`, `<out>/<variant>`);
    with `--seeds` each seed has a folder of its own. The instance-sampling
    variants run with the first seed only (FIRST_SEED_ONLY).
    """
    seeded = overrides + [f"seed={seed}"]
    base = str(root / "base")
    base_config = load_config(preset, seeded + [f"run_dir={base}"])
    run_pipeline(base_config, through=TEACHER_STAGES[-1])
    for name in seed_variants(names, first):
        run_dir = str(root / name)
        config = load_config(preset, seeded + VARIANTS[name][1] + [f"run_dir={run_dir}"])
        print(f"\n######## seed {seed}, {name}: {VARIANTS[name][0]}", flush=True)
        # Every teacher stage the variant shares with base (all, but the cache of a top-k variant).
        same = fingerprints(config), fingerprints(base_config)
        reuse_stages(config, base, run_dir, tuple(s for s in TEACHER_STAGES if same[0][s] == same[1][s]))
        run_pipeline(config)
    return seed_rows(names, root, first)


def seed_variants(names: list[str], first: bool) -> list[str]:
    return [n for n in names if first or n not in FIRST_SEED_ONLY]


def seed_rows(names: list[str], root: Path, first: bool) -> dict[str, dict]:
    """Each variant's row, read from its finished run directory under `root`."""
    return {name: variant_row(name, str(root / name)) for name in seed_variants(names, first)}


def included_runs(paths: list[str], preset: str, scale: str, overrides: list[str]) -> dict[int, dict[str, dict]]:
    """The seeds of earlier `table.json`s (e.g. committed from another session), checked to be the same protocol.

    Same protocol: the same scale and overrides, and the same settings of
    every stage, compared by fingerprint (pipeline.graph) between the saved
    config of the earlier table and this run's at the earlier table's seed.
    """
    runs: dict[int, dict[str, dict]] = {}
    for path in paths:
        table = read_json(path)
        meta = table["meta"]
        for key, want in (("scale", scale), ("overrides", overrides)):
            if meta[key] != want:
                raise SystemExit(f"--include {path}: its {key}: {meta[key]!r}; this run's: {want!r} (not the same protocol)")
        # A field the earlier table's config lacks was added since: it ran as before the field existed.
        saved = {**meta["config"], "distill": {**DISTILL_ADDED, **meta["config"].get("distill", {})}}
        try:
            theirs = fingerprints(config_from_dict(saved))
        except ConfigError as err:
            raise SystemExit(f"--include {path}: its config is not one this version reads ({err}): not the same protocol") from None
        ours = fingerprints(load_config(preset, overrides + [f"seed={meta['config']['seed']}"]))
        differ = [stage for stage in theirs if theirs[stage] != ours[stage]]
        if differ:
            raise SystemExit(
                f"--include {path}: its {differ[0]} stage has other settings than this run's {preset} at seed "
                f"{meta['config']['seed']} (fingerprint {theirs[differ[0]]} against {ours[differ[0]]}): not the same protocol"
            )
        runs.update({int(seed): rows for seed, rows in table["runs"].items()})
    return runs


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="a config, e.g. configs/cifar10-lt.yaml")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--out", help="results folder (default: benchmarks/results/<preset>-<scale>)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--seeds", help="comma-separated seeds, each its own experts, cache and students (default: the config's)")
    parser.add_argument(
        "--include", action="append", default=[], metavar="TABLE_JSON",
        help="an earlier table.json of the same protocol whose seeds join the table (those not run now)",
    )
    parser.add_argument(
        "--report-only", action="store_true",
        help="run nothing: build the table from the finished run directories under --out (and --include)",
    )
    return parser


def collect_runs(args, names: list[str], overrides: list[str], seeds: list[int], roots: dict[int, Path]) -> dict[int, dict[str, dict]]:
    """Every seed's rows, by seed: the included tables', then each seed's of --seeds, run now or (--report-only) read."""
    runs = included_runs(args.include, args.preset, args.scale, overrides)
    lowest = min([*seeds, *runs])  # the instance-sampling rows' seed (FIRST_SEED_ONLY)
    if args.report_only:
        runs.update({seed: seed_rows(names, roots[seed], first=seed == lowest) for seed in seeds})
    else:
        # One Ray for every stage of every seed and variant (run_pipeline leaves a
        # Ray it did not start running), rather than one started per variant.
        started_ray = init_ray(load_config(args.preset, overrides).ray)
        try:
            for seed in seeds:
                runs[seed] = run_seed(args.preset, seed, names, overrides, roots[seed], first=seed == lowest)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    return dict(sorted(runs.items()))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
    overrides = SCALES[args.scale] + args.set
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{Path(args.preset).stem}-{args.scale}").resolve()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [load_config(args.preset, overrides).seed]
    start = time.monotonic()
    roots = {seed: out / f"seed-{seed}" if args.seeds else out for seed in seeds}
    runs = collect_runs(args, names, overrides, seeds, roots)
    first = roots[seeds[0]]
    base_config = load_config(args.preset, overrides + [f"seed={seeds[0]}", f"run_dir={first / 'base'}"])

    meta = {
        "preset": args.preset,
        "scale": args.scale,
        "seeds": list(runs),
        "included": args.include,
        "overrides": overrides,
        "command": " ".join(["python", "-m", "benchmarks.table3", *(argv if argv is not None else sys.argv[1:])]),
        "wall_seconds": time.monotonic() - start,
        "versions": Manifest.load(str(first / "base")).data.get("versions"),
        "config": base_config.to_dict(),
        "rule": RULE,
    }
    table = {
        "meta": meta,
        "runs": runs,
        "variants": variants_over_seeds(runs),
        "claims": claims_over_seeds(runs),
        "premise": premise(runs),
    }
    write_json_atomic(out / "table.json", table)
    write_text_atomic(out / "table.md", render(runs, meta))
    write_text_atomic(out / "config.yaml", dump_config(base_config))
    if "lfme" in names:
        for plot in ("expert_weights.png", "per_class_accuracy.png"):
            shutil.copyfile(first / "lfme" / "evaluate" / plot, out / f"lfme_{plot}")
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
