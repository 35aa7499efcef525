"""The paper's Table 3 (ablation) on one preset, plus the student with live teachers.

    python benchmarks/table3.py configs/cifar10-lt.yaml --scale cpu
    python benchmarks/table3.py configs/tiny-imagenet-100-lt.yaml --scale cpu
    python benchmarks/table3.py configs/cifar10-lt.yaml --scale paper      # GPU machines

Variants: the paper's seven, LFME with the official code's SpIS
(`lfme_official`), and LFME with live teachers. What runs, all with the same
model, epochs and seed:
1. split, experts and cache, once, in `<out>/base` (the pipeline's own stages).
2. Each variant in `VARIANTS` as a run directory `<out>/<variant>/` that starts
   from a copy of base's split, experts and cache (files and manifest
   records), so `lfme run` skips those and runs only distill and evaluate with
   the variant's switches. Every student therefore learns from the same
   experts and the same cache bytes; each variant's distill stage checks the
   copied cache against the copied experts' SHA-256 as usual.
3. `<out>/table.json` and `<out>/table.md`: overall and Many/Medium/Few test
   top-1 of every variant, each expert on its own subset, the paper's
   ImageNet-LT numbers beside them, the three orderings the paper claims
   (KD helps, SpES helps, class sampling beats instance sampling) checked, and
   the wall time of each student. LFME's plots (w_l per epoch, per-class
   accuracy against training count) are copied beside the table.

`--scale cpu` shortens the schedule so one preset finishes in about an hour on
2 CPU cores (`CPU_SCALE`, printed in the table); `--scale paper` keeps the
preset's recipe (ResNet-32, 200 epochs). Rerunning the command skips every
stage already done and resumes an interrupted one, like `lfme run`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lfme.report import format_percent, markdown_table  # noqa: E402
from lfme.storage import read_json, write_json_atomic, write_text_atomic  # noqa: E402
from pipeline.config import Config, dump_config, load_config  # noqa: E402
from pipeline.graph import fingerprints  # noqa: E402
from pipeline.manifest import Manifest  # noqa: E402
from pipeline.runner import run_pipeline  # noqa: E402

SHARED_STAGES = ("split", "experts", "cache")


def switches(sampling: str, kd: bool, spes: bool, spis: bool, teachers: str = "cache") -> list[str]:
    return [
        f"distill.sampling={sampling}",
        f"distill.kd={str(kd).lower()}",
        f"distill.spes={str(spes).lower()}",
        f"distill.spis={str(spis).lower()}",
        f"distill.teachers={teachers}",
    ]


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
}

# One hour on 2 CPU cores: a small ResNet on 32x32 images (Tiny-ImageNet
# downscaled from 64x64), a short cosine schedule, one 2-thread student worker
# (two 1-thread DDP workers only add all-reduces).
CPU_SCALE = [
    "model.arch=resnet8",
    "data.image_size=32",
    "experts.epochs=8",
    "distill.epochs=8",
    "experts.lr_schedule=cosine",
    "distill.lr_schedule=cosine",
    "experts.batch_size=128",
    "distill.batch_size=128",
    "experts.resources.cpus_per_worker=1",
    "distill.resources.num_workers=1",
    "distill.resources.cpus_per_worker=2",
    "cache.resources.cpus_per_worker=1",
    "data.loader_workers=0",
]
SCALES = {"cpu": CPU_SCALE, "paper": []}


def share_upstream(base: str, variant: str, config: Config, stages: tuple[str, ...] = SHARED_STAGES) -> None:
    """Seed a variant's run directory with base's `stages` (split, experts and cache), files and manifest records."""
    manifest = Manifest.load(variant)
    fps = fingerprints(config)
    if all(manifest.is_done(stage, fps[stage]) for stage in stages):
        return
    source = Manifest.load(base)
    for stage in stages:
        shutil.rmtree(Path(variant, stage), ignore_errors=True)
        shutil.copytree(Path(base, stage), Path(variant, stage))
        manifest.data["stages"][stage] = source.data["stages"][stage]
    manifest.save()


def variant_row(name: str, run_dir: str) -> dict:
    label, sets, paper = VARIANTS[name]
    report = read_json(Path(run_dir, "evaluate", "report.json"))
    shots = report["student"]["shots"]["inclusive"]
    distill = Manifest.load(run_dir).record("distill")
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
        "experts": report["experts"],
    }


def orderings(rows: dict[str, dict]) -> list[dict]:
    """The paper's claims, each as (better, worse) variants: does our run agree? (Those whose variants ran.)"""
    claims = [
        ("KD helps instance sampling", "ins_samp_kd", "ins_samp"),
        ("KD helps class sampling", "cls_samp_kd", "cls_samp"),
        ("SpES helps KD (instance sampling)", "ins_samp_kd_spes", "ins_samp_kd"),
        ("SpES helps KD (class sampling)", "cls_samp_kd_spes", "cls_samp_kd"),
        ("class sampling beats instance sampling", "cls_samp", "ins_samp"),
        ("LFME beats class sampling", "lfme", "cls_samp"),
        ("SpIS helps (LFME vs Cls.Samp + KD + SpES)", "lfme", "cls_samp_kd_spes"),
    ]
    out = []
    for claim, better, worse in claims:
        if better not in rows or worse not in rows:
            continue
        delta = rows[better]["overall"] - rows[worse]["overall"]
        out.append({"claim": claim, "better": better, "worse": worse, "delta": delta, "holds": delta > 0})
    return out


def render(rows: dict[str, dict], claims: list[dict], meta: dict) -> str:
    subsets = list(next(iter(rows.values()))["subsets"])
    table = markdown_table(
        ["variant", "overall", *(f"subset {s}" for s in subsets), "many", "medium", "few", "paper (ImageNet-LT)", "student wall s"],
        [
            [
                row["label"],
                format_percent(row["overall"]),
                *(format_percent(row["subsets"][s]) for s in subsets),
                format_percent(row["many"]),
                format_percent(row["medium"]),
                format_percent(row["few"]),
                "" if row["paper_imagenet_lt_overall"] is None else f"{row['paper_imagenet_lt_overall']:.1f}",
                f"{row['distill_seconds']:.0f}",
            ]
            for row in rows.values()
        ],
        ["l"] + ["r"] * (6 + len(subsets)),
    )
    shown = rows.get("lfme") or next(iter(rows.values()))  # the experts are the same under every variant
    experts = shown["experts"]
    expert_table = markdown_table(
        ["expert", "classes", "expert on its subset", f"{shown['label']} on that subset"],
        [
            [name, len(e["classes"]), format_percent(e["accuracy"]), format_percent(e["student_accuracy"])]
            for name, e in experts.items()
        ],
        ["l", "r", "r", "r"],
    )
    claim_table = markdown_table(
        ["paper's claim", "delta (points)", "holds here"],
        [[c["claim"], f"{100 * c['delta']:+.1f}", "yes" if c["holds"] else "no"] for c in claims],
        ["l", "r", "l"],
    )
    lines = [
        f"# Table 3 on {meta['preset']} (scale: {meta['scale']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Test top-1 (%). `subset X`: the student on the classes of expert X (the split's groups); "
        f"many/medium/few: the literature's groups, {next(iter(rows.values()))['shot_rule']} (n/a: no such class).",
        f"Schedule overrides: {', '.join(f'`{s}`' for s in meta['overrides']) or 'none (the preset as is)'}.",
        f"Wall time of the whole benchmark: {meta['wall_seconds'] / 60:.1f} min; versions: {meta['versions']}.",
        "",
        *table,
        "",
        *expert_table,
        "",
        *claim_table,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="a config, e.g. configs/cifar10-lt.yaml")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--out", help="results folder (default: benchmarks/results/<preset>-<scale>)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = parser.parse_args(argv)

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
    overrides = SCALES[args.scale] + args.set
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{Path(args.preset).stem}-{args.scale}").resolve()
    start = time.monotonic()

    base = str(out / "base")
    base_config = load_config(args.preset, overrides + [f"run_dir={base}"])
    for stage in SHARED_STAGES:
        run_pipeline(base_config, only=stage)

    rows = {}
    for name in names:
        run_dir = str(out / name)
        config = load_config(args.preset, overrides + VARIANTS[name][1] + [f"run_dir={run_dir}"])
        print(f"\n######## {name}: {VARIANTS[name][0]}", flush=True)
        share_upstream(base, run_dir, config)
        run_pipeline(config)
        rows[name] = variant_row(name, run_dir)

    claims = orderings(rows)
    meta = {
        "preset": args.preset,
        "scale": args.scale,
        "overrides": overrides,
        "command": " ".join(["python", "benchmarks/table3.py", *(argv if argv is not None else sys.argv[1:])]),
        "wall_seconds": time.monotonic() - start,
        "versions": Manifest.load(base).data.get("versions"),
        "config": base_config.to_dict(),
    }
    write_json_atomic(out / "table.json", {"meta": meta, "rows": rows, "claims": claims})
    write_text_atomic(out / "table.md", render(rows, claims, meta))
    write_text_atomic(out / "config.yaml", dump_config(base_config))
    if "lfme" in rows:
        for plot in ("expert_weights.png", "per_class_accuracy.png"):
            shutil.copyfile(out / "lfme" / "evaluate" / plot, out / f"lfme_{plot}")
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
