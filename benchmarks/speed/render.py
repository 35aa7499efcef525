"""speed.md from a result (what `python -m benchmarks.speed` writes to speed.json): the goals table, then each part's details."""

from __future__ import annotations

import statistics

from benchmarks import cache_speed
from benchmarks.speed.common import DEFAULT_RUN_TOP1, GOALS, LOADER_SHARE_BEFORE, NOISY_SPREAD, PRECISION_ARCHS
from benchmarks.speed.limits import limits
from lfme.report import markdown_table


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def yes(met: bool) -> str:
    return "yes" if met else "no"


def rows_ab(ab: dict, why: dict[str, str]) -> list[list]:
    ratio = ab["training"]["ratio_cached_over_live"]
    read = [row["read_over_training_rate"] for row in ab["cache"]]
    return [
        [
            f"(a) student images/s, cache / 3 live teachers ({ab['setup']['precision']})",
            f"{ratio:.2f}x",
            ">= 2x",
            yes(ratio >= GOALS["cache_ratio"]),
            why["a"],
        ],
        [
            "(b) cache read rows/s / training images/s",
            f"{min(read):,.0f}x to {max(read):,.0f}x (C = {', '.join(str(r['num_classes']) for r in ab['cache'])})",
            ">> 1 (taken as > 10x)",
            yes(min(read) > 10),
            why["b"],
        ],
    ]


def rows_c_to_e(c: dict, d: dict, e: dict, why: dict[str, str]) -> list[list]:
    return [
        [
            "(c) time per epoch, Ray Train (1 worker) / plain PyTorch",
            pct(c["overhead"]),
            "<= +5%",
            yes(c["overhead"] <= GOALS["ray_overhead"]),
            why["c"],
        ],
        [f"(d) experts stage, {d['experts']} at once vs one at a time", f"{d['speedup']:.2f}x faster", "none set", "", why["d"]],
        ["(e) training loader epoch, images decoded every epoch / once", f"{e['speedup']:.2f}x faster", "none set", "", why["e"]],
    ]


def rows_f_g(f: dict, g: dict, why: dict[str, str]) -> list[list]:
    speedups = {arch: a["speedup"] for arch, a in f["archs"].items()}
    last_acc = {arch: [100 * statistics.median(a["modes"][p]["val_acc"]) for p in ("fp32", "bf16")] for arch, a in f["archs"].items()}
    val_accs = ", ".join(f"{arch} {fp32:.1f} / {bf16:.1f}%" for arch, (fp32, bf16) in last_acc.items())
    judged, fp32_step = g["shares"][PRECISION_ARCHS[0]]["bf16"], g["shares"][PRECISION_ARCHS[0]]["fp32"]
    return [
        [
            "(f) student epoch, fp32 / bf16",
            ", ".join(f"{arch} {x:.2f}x" for arch, x in speedups.items()) + f" (last val acc fp32 / bf16: {val_accs})",
            ">= 2x each",
            yes(min(speedups.values()) >= GOALS["bf16_speedup"]),
            why["f"],
        ],
        [
            f"(g) batched loader's share of a bf16 {PRECISION_ARCHS[0]} student step",
            f"{100 * judged['batched']:.1f}% (PIL on decoded images: {100 * judged['pil']:.0f}%); fp32 step: "
            f"{100 * fp32_step['batched']:.1f}% (PIL {100 * fp32_step['pil']:.0f}%)",
            f"<= {100 * GOALS['loader_share']:.0f}% (before: {100 * LOADER_SHARE_BEFORE:.0f}%)",
            yes(judged["batched"] <= GOALS["loader_share"]),
            why["g"],
        ],
    ]


def row_h(h: dict, why: dict[str, str]) -> list:
    after, before = h["trees"]["after"], h["trees"].get("before")
    reference_top1 = statistics.median(before["top1"]) if before else DEFAULT_RUN_TOP1
    after_top1 = statistics.median(after["top1"])
    return [
        f"(h) default `lfme run` ({h['config']}, digits), wall time",
        f"{after['wall_s']:.0f} s, test top-1 {100 * after_top1:.2f}%"
        + (f" (before: {before['wall_s']:.0f} s, {100 * reference_top1:.2f}%)" if before else " (before: not run)"),
        f"<= {GOALS['default_run_s']:.0f} s, top-1 as before ({100 * reference_top1:.1f}%)",
        yes(after["wall_s"] <= GOALS["default_run_s"] and after_top1 >= reference_top1),
        why["h"],
    ]


def goals_table(result: dict) -> list[str]:
    why = limits(result)
    rows = rows_ab(result["cache_speed"], why)
    rows += rows_c_to_e(result["distill"], result["experts"], result["decoding"], why)
    rows += rows_f_g(result["precision"], result["loader"], why)
    rows.append(row_h(result["default_run"], why))
    return markdown_table(["figure", "measured", "goal", "met", "what limits it"], rows, ["l", "r", "l", "l", "l"])


def noisy(result: dict) -> list[str]:
    """The figures whose repeats are further apart than NOISY_SPREAD."""
    ab, c, f = result["cache_speed"], result["distill"], result["precision"]
    warnings = []
    if ab["training"]["ratio_per_round"] and max(ab["training"]["ratio_per_round"]) / min(ab["training"]["ratio_per_round"]) > NOISY_SPREAD:
        warnings.append("(a): the rounds' ratios differ by more than 15%")
    for mode in ("plain", "ray"):
        if c["modes"][mode]["epoch_spread"] > NOISY_SPREAD:
            warnings.append(f"(c): the {mode} epochs' times differ by {100 * (c['modes'][mode]['epoch_spread'] - 1):.0f}%")
    for arch, a in f["archs"].items():
        for precision, m in a["modes"].items():
            if m["epoch_spread"] > NOISY_SPREAD:
                warnings.append(f"(f): the {arch} {precision} epochs' times differ by {100 * (m['epoch_spread'] - 1):.0f}%")
    return warnings


def header(meta: dict) -> list[str]:
    return [
        f"# Speed{' (quick)' if meta['quick'] else ''}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpus']} CPU cores, load average {meta['load_start']:.1f} at the start, "
        f"{meta['load_end']:.1f} at the end; torch {meta['versions']['torch']}, ray {meta['versions']['ray']}; "
        f"wall time {meta['wall_s'] / 60:.1f} min.  ",
        f"Data: CIFAR-10-LT (imbalance factor 100) from `{meta['data_root']}`, {meta['train_images']} training images; "
        f"overrides of `configs/cifar10-lt.yaml`: {', '.join(f'`{s}`' for s in meta['overrides'])}.",
        "",
    ]


def render(result: dict) -> str:
    lines = [*header(result["meta"]), *goals_table(result), ""]
    warnings = noisy(result)
    if warnings:
        lines += [f"WARNING: noisy ({'; '.join(warnings)}): load on the machine changed during the run; rerun when it is idle.", ""]
    lines += ["## (a), (b): benchmarks.cache_speed", "", "```text", cache_speed.report(result["cache_speed"]), "```", ""]
    lines += render_distill(result["distill"])
    lines += render_experts(result["experts"])
    lines += render_decoding(result["decoding"])
    lines += render_precision(result["precision"])
    lines += render_loader(result["loader"])
    lines += render_default_run(result["default_run"])
    return "\n".join(lines)


def render_distill(c: dict) -> list[str]:
    distill_rows = [
        [
            mode,
            f"{m['first_epoch_s']:.1f}",
            f"{m['epoch_s']:.1f}",
            f"{100 * (m['epoch_spread'] - 1):.0f}%",
            f"{m['startup_s']:.1f}",
            f"{m['total_s']:.1f}",
        ]
        for mode, m in c["modes"].items()
    ]
    runs_rows = [
        [
            run["mode"],
            ", ".join(f"{s:.1f}" for s in run["epoch_s"]),
            f"{run['startup_s']:.1f}",
            ", ".join(f"{name} {s:.1f}" for name, s in run["cpu_s"].items() if s >= 0.5),
        ]
        for run in c["runs"]
    ]
    same_results = "identical" if c["same_results"] else f"DIFFERENT (max difference {c['max_result_difference']:.3g})"
    return [
        "## (c) distill: Ray Train vs plain PyTorch",
        "",
        f"`stages.distill.distill_loop` through `stages.workers.fit`, {c['epochs']} epochs x {c['rounds']} round(s) "
        f"per mode; `plain` is Ray Train's local mode (the loop in this process, no actors), `ray` one worker "
        f"actor with {c['threads']} threads. Seconds per epoch from the histories (checkpoint to checkpoint); "
        f"\"later epochs\" are epochs 2..{c['epochs']} (median), the overhead's basis. Losses and validation "
        f"accuracies of every run: {same_results}.",
        "",
        *markdown_table(
            ["mode", "first epoch s", "later epochs s", "spread", "start-up s", "total s"], distill_rows, ["l", "r", "r", "r", "r", "r"]
        ),
        "",
        f"Overhead per epoch: {pct(c['overhead'])} (goal <= +5%); Ray's extra start-up: {c['startup_extra_s']:.1f} s per fit.",
        "",
        *markdown_table(["run", "epochs s", "start-up s", "CPU s by process during the fit"], runs_rows, ["l", "l", "r", "l"]),
        "",
    ]


def render_experts(d: dict) -> list[str]:
    expert_rows = [
        [
            label,
            run["max_concurrent"],
            f"{run['wall_s']:.1f}",
            ", ".join(f"{n} {s:.0f}" for n, s in run["finished_s"].items()),
            ", ".join(f"{n} {s:.1f}" for n, s in run["epochs_s"].items()),
        ]
        for label, run in d["runs"].items()
    ]
    return [
        "## (d) experts: concurrent vs sequential",
        "",
        f"The experts stage ({d['experts']} experts, 1 epoch) on fresh run directories seeded with the same split. "
        f"Ray: {d['cluster_cpus']:.0f} CPUs; each expert reserves {d['cpus_per_expert']:g} CPU(s), so {d['at_once']} "
        f"train at once.",
        "",
        *markdown_table(
            ["run", "max_concurrent", "wall s", "each expert done after (s)", "its epochs (s, from its history)"],
            expert_rows,
            ["l", "r", "r", "l", "l"],
        ),
        "",
        f"Concurrent is {d['speedup']:.2f}x faster than sequential.",
        "",
    ]


def render_decoding(e: dict) -> list[str]:
    rows = [
        [mode.replace("_", " "), ", ".join(f"{t:.2f}" for t in e["epoch_s"][mode]), f"{statistics.median(e['epoch_s'][mode]):.2f}"]
        for mode in e["epoch_s"]
    ]
    return [
        "## (e) image decoding: every epoch vs once",
        "",
        f"One epoch of the distill stage's training loader over the {e['images']} training images, no model, "
        f"in this process (no loader workers); {e['rounds']} rounds in alternating order.",
        "",
        *markdown_table(["images decoded", "epochs s", "median s"], rows, ["l", "l", "r"]),
        "",
        f"Decoding once: {e['decode_s']:.1f} s when the loader is made, then {e['speedup']:.2f}x faster epochs.",
        "",
    ]


def render_precision(f: dict) -> list[str]:
    rows = [
        [
            arch,
            precision + ("" if m["ran_in"] == [precision] else f" (ran in {', '.join(m['ran_in'])})"),
            f"{m['first_epoch_s']:.1f}",
            f"{m['epoch_s']:.1f}",
            f"{100 * (m['epoch_spread'] - 1):.0f}%",
            f"{m['images_per_s']:.0f}",
            f"{m['ms_per_step']:.0f}",
            ", ".join(f"{100 * acc:.1f}%" for acc in m["val_acc"]),
        ]
        for arch, a in f["archs"].items()
        for precision, m in a["modes"].items()
    ]
    return [
        "## (f) student epoch: fp32 vs bf16",
        "",
        f"`stages.distill.distill_loop` in local mode (as (c)'s plain runs) on the base run's cache, "
        f"{f['epochs']} epochs x {f['rounds']} round(s) per arch and precision, the order alternating; "
        f"{f['images']} training images ({f['batches']} batches) per epoch, batched augmentation in the training "
        f"process, {f['threads']} threads. Later epochs: 2..{f['epochs']} (median); img/s and ms per step from it.",
        "",
        *markdown_table(
            ["arch", "precision", "first epoch s", "later epochs s", "spread", "img/s", "ms/step", "last val acc"],
            rows,
            ["l", "l", "r", "r", "r", "r", "r", "r"],
        ),
        "",
        "bf16 over fp32: " + ", ".join(f"{arch} {a['speedup']:.2f}x" for arch, a in f["archs"].items()) + " (goal >= 2x each).",
        "",
    ]


def render_loader(g: dict) -> list[str]:
    loaders = {"pil": "PIL transforms, decoded images", "batched": "batched transform (make_loader, decode_once)"}
    timing = [
        [
            loaders[kind],
            ", ".join(f"{s:.2f}" for s in g["epoch_s"][kind]),
            f"{ms:.1f}",
            f"{1000 * ms / g['batch_size']:.0f}",
        ]
        for kind, ms in g["ms_per_batch"].items()
    ]
    shares = [
        [arch, precision, f"{s['step_ms']:.0f}", f"{s['compute_ms']:.0f}", f"{100 * s['batched']:.1f}%", f"{100 * s['pil']:.1f}%"]
        for arch, by_precision in g["shares"].items()
        for precision, s in by_precision.items()
    ]
    return [
        "## (g) loader per step: PIL vs batched",
        "",
        f"The student's training loader alone over {g['images']} images an epoch ({g['batches']} batches of "
        f"{g['batch_size']}, the student's sampler), no model, in this process at {g['threads']} thread(s); "
        f"{g['rounds']} rounds in alternating order.",
        "",
        *markdown_table(["loader", "epochs s", "ms per batch", "us per image"], timing, ["l", "l", "r", "r"]),
        "",
        f"Batched is {g['speedup']:.1f}x faster. Share of a student step (step and compute from (f): compute = step "
        f"- batched loader, which (f)'s steps ran; validation and checkpoint included), goal <= "
        f"{100 * GOALS['loader_share']:.0f}% for bf16 {PRECISION_ARCHS[0]} (before: {100 * LOADER_SHARE_BEFORE:.0f}%):",
        "",
        *markdown_table(
            ["student", "precision", "step ms", "compute ms", "batched share", "PIL share"], shares, ["l", "l", "r", "r", "r", "r"]
        ),
        "",
    ]


def render_default_run(h: dict) -> list[str]:
    trees = h["trees"]
    stages = list(dict.fromkeys(stage for tree in trees.values() for stage in tree["stages_s"]))
    rows = [
        [
            label,
            tree["commit"],
            f"{tree['wall_s']:.1f}",
            *(f"{tree['stages_s'][stage]:.1f}" if stage in tree["stages_s"] else "" for stage in stages),
            f"{tree['wall_s'] - sum(tree['stages_s'].values()):.1f}",
            ", ".join(f"{100 * top1:.2f}%" for top1 in tree["top1"]),
        ]
        for label, tree in trees.items()
    ]
    return [
        "## (h) the default run, before and after",
        "",
        f"`python -m pipeline.cli run {h['config']}` in a subprocess on a fresh run directory, {h['rounds']} round(s) "
        f"per tree{', order alternating' if h['rounds'] > 1 and len(trees) > 1 else ''}; wall time of the subprocess, "
        f"stage seconds from the run's manifest (medians), test top-1 of each run."
        + ("" if "before" in trees else " The before-run was skipped (--skip-before)."),
        "",
        *markdown_table(
            ["tree", "commit", "wall s", *(f"{stage} s" for stage in stages), "outside the stages s", "test top-1"],
            rows,
            ["l", "l", "r", *("r" for _ in stages), "r", "r"],
        ),
        "",
    ]
