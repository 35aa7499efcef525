"""speed.md from a result (what `python -m benchmarks.speed` writes to speed.json): the goals table, then each part's details."""

from __future__ import annotations

import statistics

from benchmarks import cache_speed
from benchmarks.speed.settings import DEFAULT_RUN_TOP1, GOALS, LOADER_SHARE_BEFORE, NOISY_SPREAD, PRECISION_ARCHS
from benchmarks.speed.limits import limits
from lfme.report import markdown_table


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def yes(met: bool) -> str:
    return "yes" if met else "no"


def rows_ab(result: dict, why: dict[str, str]) -> list[list]:
    ab = result["cache_speed"]
    ratio = ab["training"]["ratio_cached_over_live"]
    read = [row["read_over_training_rate"] for row in ab["cache"]]
    precision = ab["setup"].get("precision")
    return [
        [
            f"(a) student images/s, cache / 3 live teachers{f' ({precision})' if precision else ''}",
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


def row_c(result: dict, why: dict[str, str]) -> list[list]:
    overhead = result["distill"]["overhead"]
    return [["(c) time per epoch, Ray Train (1 worker) / plain PyTorch", pct(overhead), "<= +5%", yes(overhead <= GOALS["ray_overhead"]), why["c"]]]


def row_d(result: dict, why: dict[str, str]) -> list[list]:
    d = result["experts"]
    return [[f"(d) experts stage, {d['experts']} at once vs one at a time", f"{d['speedup']:.2f}x faster", "none set", "", why["d"]]]


def row_e(result: dict, why: dict[str, str]) -> list[list]:
    speedup = result["decoding"]["speedup"]
    return [["(e) training loader epoch, images decoded every epoch / once", f"{speedup:.2f}x faster", "none set", "", why["e"]]]


def row_f(result: dict, why: dict[str, str]) -> list[list]:
    f = result["precision"]
    speedups = {arch: a["speedup"] for arch, a in f["archs"].items()}
    last_acc = {arch: [100 * statistics.median(a["modes"][p]["val_acc"]) for p in ("fp32", "bf16")] for arch, a in f["archs"].items()}
    val_accs = ", ".join(f"{arch} {fp32:.1f} / {bf16:.1f}%" for arch, (fp32, bf16) in last_acc.items())
    return [
        [
            "(f) student epoch, fp32 / bf16",
            ", ".join(f"{arch} {x:.2f}x" for arch, x in speedups.items()) + f" (last val acc fp32 / bf16: {val_accs})",
            ">= 2x each",
            yes(min(speedups.values()) >= GOALS["bf16_speedup"]),
            why["f"],
        ]
    ]


def row_g(result: dict, why: dict[str, str]) -> list[list]:
    shares = result["loader"]["shares"][PRECISION_ARCHS[0]]
    judged, fp32_step = shares["bf16"], shares["fp32"]
    return [
        [
            f"(g) batched loader's share of a bf16 {PRECISION_ARCHS[0]} student step",
            f"{100 * judged['batched']:.1f}% (PIL on decoded images: {100 * judged['pil']:.0f}%); fp32 step: "
            f"{100 * fp32_step['batched']:.1f}% (PIL {100 * fp32_step['pil']:.0f}%)",
            f"<= {100 * GOALS['loader_share']:.0f}% (before: {100 * LOADER_SHARE_BEFORE:.0f}%)",
            yes(judged["batched"] <= GOALS["loader_share"]),
            why["g"],
        ]
    ]


def row_h(result: dict, why: dict[str, str]) -> list[list]:
    h = result["default_run"]
    after, before = h["trees"]["after"], h["trees"].get("before")
    reference_top1 = statistics.median(before["top1"]) if before else DEFAULT_RUN_TOP1
    after_top1 = statistics.median(after["top1"])
    return [
        [
            f"(h) default `lfme run` ({h['config']}, digits), wall time",
            f"{after['wall_s']:.0f} s, test top-1 {100 * after_top1:.2f}%"
            + (f" (before: {before['wall_s']:.0f} s, {100 * reference_top1:.2f}%)" if before else " (before: not run)"),
            f"<= {GOALS['default_run_s']:.0f} s, top-1 as before ({100 * reference_top1:.1f}%)",
            yes(after["wall_s"] <= GOALS["default_run_s"] and after_top1 >= reference_top1),
            why["h"],
        ]
    ]


# The goals table's rows, in order, and the part of the result each needs.
ROWS = [
    ("cache_speed", rows_ab),
    ("distill", row_c),
    ("experts", row_d),
    ("decoding", row_e),
    ("precision", row_f),
    ("loader", row_g),
    ("default_run", row_h),
]


def goals_table(result: dict) -> list[str]:
    why = limits(result)
    rows = [row for part, make in ROWS if part in result for row in make(result, why)]
    return markdown_table(["figure", "measured", "goal", "met", "details"], rows, ["l", "r", "l", "l", "l"])


def noisy(result: dict) -> list[str]:
    """The figures whose repeats are further apart (max / min) than NOISY_SPREAD."""
    warnings = []
    ratios = result["cache_speed"]["training"]["ratio_per_round"] if "cache_speed" in result else []
    if ratios and max(ratios) / min(ratios) > NOISY_SPREAD:
        warnings.append(f"(a): the rounds' ratios differ by {100 * (max(ratios) / min(ratios) - 1):.0f}%")
    distill_modes = result["distill"]["modes"] if "distill" in result else {}
    for mode, m in distill_modes.items():
        if m["epoch_spread"] > NOISY_SPREAD:
            warnings.append(f"(c): the {mode} epochs' times differ by {100 * (m['epoch_spread'] - 1):.0f}%")
    archs = result["precision"]["archs"] if "precision" in result else {}
    for arch, a in archs.items():
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
        f"Data: CIFAR-10-LT (imbalance factor {meta['config']['data']['imbalance_factor']:g}) from `{meta['data_root']}`, "
        f"{meta['train_images']} training images; overrides of `configs/cifar10-lt.yaml`: {', '.join(f'`{s}`' for s in meta['overrides'])}.",
        "",
    ]


def render_cache_speed(ab: dict) -> list[str]:
    if "precision" in ab["setup"]:
        text = cache_speed.report(ab)
    else:  # saved before cache_speed recorded its precision, which its report states
        text = "(not rendered: this result of cache_speed has no `precision`; its numbers are in speed.json)"
    return ["## (a), (b): benchmarks.cache_speed", "", "```text", text, "```", ""]


def render(result: dict) -> str:
    """The report of a result; parts missing from it (a result saved before they existed) are left out."""
    lines = [*header(result["meta"]), *goals_table(result), ""]
    warnings = noisy(result)
    if warnings:
        spread = f"{100 * (NOISY_SPREAD - 1):.0f}%"
        lines += [f"WARNING: repeats disagree by more than {spread}: {'; '.join(warnings)}.", ""]
    for part, section in SECTIONS:
        if part in result:
            lines += section(result[part])
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


# The report's sections after the goals table, in order, and the part of the result each shows.
SECTIONS = [
    ("cache_speed", render_cache_speed),
    ("distill", render_distill),
    ("experts", render_experts),
    ("decoding", render_decoding),
    ("precision", render_precision),
    ("loader", render_loader),
    ("default_run", render_default_run),
]
