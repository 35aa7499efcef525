"""The goals table's last column (speed.json's "limits"): per figure, the measured numbers it is made of or bounded by.

Only numbers and neutral labels, each computed from the result: why the
numbers come out as they do is the package docstring's "Reading the figures"
(and docs/RESULTS.md), not the report's. A part missing from the result
(one saved before that part existed) has no line.
"""

from __future__ import annotations

from benchmarks.speed.settings import TRAINING_PROCESSES


def other_cpu(run: dict) -> float:
    """CPU seconds of the processes that do not train in a run (Ray's own, when it runs)."""
    return sum(s for name, s in run["cpu_s"].items() if name not in TRAINING_PROCESSES)


def limit_a(result: dict) -> str:
    ab = result["cache_speed"]
    cached, live = (ab["training"]["modes"][m]["ms_per_step"] for m in ("cached", "live"))
    data, teacher, student = cached["data"], live["teacher"], cached["student"]
    precision = ab["setup"].get("precision")
    top = next((p["top"] for p in ab.get("profiles", []) if p["mode"] == "cached"), [])
    top_ops = ", ".join(f"{op['op']} {100 * op['share']:.0f}%" for op in top[:3])
    return (
        f"1 + teacher / (data + student) = {1 + teacher / (data + student):.2f}x; per step: {ab['setup']['teachers']} "
        f"teachers' forwards {teacher:.0f} ms{f' ({precision})' if precision else ''}, the student's forward, backward "
        f"and update {student:.0f} ms, data {data:.0f} ms; teacher / student {teacher / student:.2f}x; "
        f"a cached step's top ops: {top_ops or 'no profile'}"
    )


def limit_b(result: dict) -> str:
    ab = result["cache_speed"]
    train_rate = ab["training"]["modes"]["cached"]["images_per_s"]
    slowest = min(ab["cache"], key=lambda row: row["read_rows_per_s"])
    images = ab["setup"]["train_images"]
    return (
        f"slowest read: C={slowest['num_classes']}, {slowest['read_rows_per_s']:,.0f} rows/s; {images} rows at that "
        f"rate: {images / slowest['read_rows_per_s']:.2f} s; an epoch at the cached training rate: {images / train_rate:.0f} s"
    )


def cores(run: dict) -> float:
    """Cores the processes that do not train used while a run's epochs ran."""
    return run["other_cpu_s_during_epochs"] / sum(run["epoch_s"])


def limit_c(result: dict) -> str:
    c = result["distill"]
    ray_run = next(run for run in c["runs"] if run["mode"] == "ray")
    plain_run = next(run for run in c["runs"] if run["mode"] == "plain")
    same = "identical" if c["same_results"] else f"differ by up to {c['max_result_difference']:.3g}"
    size = c["checkpoint_bytes"]
    megabytes = f"{size / 1e6:.1f} MB" if size else "size unknown"
    return (
        f"results {same}; checkpoint {megabytes}; CPU of the processes that do not train, while the epochs ran: "
        f"ray {cores(ray_run):.2f} cores, plain {cores(plain_run):.2f}; the worker's threads: {c['threads']}, on "
        f"{result['meta']['cpus']} cores; start-up: ray {c['modes']['ray']['startup_s']:.0f} s, plain "
        f"{c['modes']['plain']['startup_s']:.0f} s; processes started by a ray fit: {ray_run['processes_started']}, "
        f"their CPU besides the worker's training: {other_cpu(ray_run):.0f} CPU-s"
    )


def limit_d(result: dict) -> str:
    d = result["experts"]
    sequential = d["runs"]["sequential"]
    order = sorted(sequential["finished_s"], key=sequential["finished_s"].get)
    ends = [sequential["finished_s"][name] for name in order]
    each = [b - a for a, b in zip([0.0] + ends[:-1], ends)]
    trained = [sequential["epochs_s"][name] for name in order]
    return (
        f"Ray's CPUs {d['cluster_cpus']:.0f}, {d['cpus_per_expert']:g} reserved per expert: at most {d['at_once']} "
        f"of the {d['experts']} experts at once; {d['threads_per_expert']} thread(s) each: at most "
        f"{d['at_once'] * d['threads_per_expert']} of the {result['meta']['cpus']} cores; one after another, each "
        f"expert took {', '.join(f'{s:.0f}' for s in each)} s, its epochs {', '.join(f'{s:.0f}' for s in trained)} s"
    )


def limit_e(result: dict) -> str:
    e = result["decoding"]
    saved = e["every_epoch_s"] - e["once_s"]
    if saved <= 0:
        return f"decoding once saved nothing here ({e['once_s']:.2f} s vs {e['every_epoch_s']:.2f} s per epoch)"
    line = (
        f"a loader epoch of {e['images']} images: {e['once_s']:.1f} s decoded once, {e['every_epoch_s']:.1f} s decoded "
        f"every epoch; the one-off decode: {e['decode_s']:.1f} s, repaid after {e['decode_s'] / saved:.1f} epoch(s), "
        f"then {saved:.1f} s saved per epoch"
    )
    if "distill" in result:
        decoded_in_c = "once" if result["meta"]["config"]["data"]["decode_once"] else "every epoch"
        line += f"; a student epoch in (c): {result['distill']['modes']['plain']['epoch_s']:.1f} s (images decoded {decoded_in_c})"
    return line


def limit_f(result: dict) -> str:
    f, g = result["precision"], result.get("loader")
    loading = g["ms_per_batch"]["batched"] if g else None

    def step(arch: str) -> str:
        fp32, bf16 = (f["archs"][arch]["modes"][p]["ms_per_step"] for p in ("fp32", "bf16"))
        without = f" ({(fp32 - loading) / (bf16 - loading):.2f}x without the loader)" if loading is not None else ""
        return f"{arch} {fp32:.0f} -> {bf16:.0f} ms{without}"

    fell_back = [arch for arch, a in f["archs"].items() if a["modes"]["bf16"]["ran_in"] != ["bf16"]]
    return (
        (f"the loader: {loading:.0f} ms per step (from (g)); " if loading is not None else "")
        + f"per step, fp32 -> bf16: {', '.join(step(arch) for arch in f['archs'])}"
        + (f"; bf16 FELL BACK to fp32 for {', '.join(fell_back)}" if fell_back else "")
    )


def limit_g(result: dict) -> str:
    g = result["loader"]
    per_image = {kind: 1000 * ms / g["batch_size"] for kind, ms in g["ms_per_batch"].items()}
    steps = "; ".join(
        f"{arch} {precision} {share['compute_ms']:.0f} ms ({100 * share['batched']:.1f}%, PIL {100 * share['pil']:.0f}%)"
        for arch, by_precision in g.get("shares", {}).items()
        for precision, share in by_precision.items()
    )
    return (
        f"per image: batched {per_image['batched']:.0f} us, PIL {per_image['pil']:.0f} us ({g['speedup']:.1f}x), on "
        f"{g['threads']} thread(s); compute per step, and the loader's share (batched, PIL), by student: {steps or 'none'}"
    )


def breakdown(tree: dict) -> str:
    """A tree's median stage seconds and the rest of its wall time."""
    outside = tree["wall_s"] - sum(tree["stages_s"].values())
    stages = ", ".join(f"{stage} {s:.0f}" for stage, s in tree["stages_s"].items())
    return f"{stages} s, and {outside:.0f} s outside the stages"


def limit_h(result: dict) -> str:
    trees = result["default_run"]["trees"]
    after = trees["after"]["stages_s"]
    line = f"after: {breakdown(trees['after'])}; the longest stage is {max(after, key=after.get)}"
    if "before" in trees:
        before = trees["before"]["stages_s"]
        saved = max((stage for stage in after if stage in before), key=lambda stage: before[stage] - after[stage])
        line += f". Before: {breakdown(trees['before'])}; the most saved in {saved} ({before[saved]:.0f} -> {after[saved]:.0f} s)"
    return line


# Each figure's line, and the part of the result it needs.
LINES = {
    "a": ("cache_speed", limit_a),
    "b": ("cache_speed", limit_b),
    "c": ("distill", limit_c),
    "d": ("experts", limit_d),
    "e": ("decoding", limit_e),
    "f": ("precision", limit_f),
    "g": ("loader", limit_g),
    "h": ("default_run", limit_h),
}


def limits(result: dict) -> dict[str, str]:
    """One line per figure of the result, from its measured numbers."""
    return {figure: line(result) for figure, (part, line) in LINES.items() if part in result}
