"""The goals table's last column: one line per figure, from the measured numbers."""

from __future__ import annotations

import os

from benchmarks.speed.processes import other_cpu


def limit_a(ab: dict) -> str:
    cached, live = (ab["training"]["modes"][m]["ms_per_step"] for m in ("cached", "live"))
    data, teacher, student = cached["data"], live["teacher"], cached["student"]
    top = next((p["top"] for p in ab.get("profiles", []) if p["mode"] == "cached"), [])
    top_ops = ", ".join(f"{op['op']} {100 * op['share']:.0f}%" for op in top[:3])
    return (
        f"arithmetic: cached/live <= 1 + teacher / (data + student) = {1 + teacher / (data + student):.2f}x here. "
        f"The three experts' forwards ({teacher:.0f} ms/step, {ab['setup']['precision']}) cost {teacher / student:.2f}x "
        f"the student's forward, backward and update ({student:.0f} ms); a backward costs about two forwards, so "
        f"experts of the student's size make that about 1, and loading ({data:.0f} ms: collation and the batch "
        f"transform, in the training process) only adds to the denominator. A cached step's top ops, the batch "
        f"transform's among them: {top_ops or 'no profile'}"
    )


def limit_b(ab: dict) -> str:
    train_rate = ab["training"]["modes"]["cached"]["images_per_s"]
    slowest = min(ab["cache"], key=lambda row: row["read_rows_per_s"])
    images = ab["setup"]["train_images"]
    return (
        f"Parquet's decoding of the float16 logits: the read rate falls with C "
        f"(C={slowest['num_classes']}: {slowest['read_rows_per_s']:,.0f} rows/s). A worker reads the cache once, before "
        f"training: {images} rows take {images / slowest['read_rows_per_s']:.2f} s at that rate, an epoch of "
        f"training {images / train_rate:.0f} s"
    )


def cores(run: dict) -> float:
    """Cores the processes that do not train used while a run's epochs ran."""
    return run["other_cpu_s_during_epochs"] / sum(run["epoch_s"])


def limit_c(c: dict) -> str:
    ray_run = next(run for run in c["runs"] if run["mode"] == "ray")
    plain_run = next(run for run in c["runs"] if run["mode"] == "plain")
    same = "identical" if c["same_results"] else f"differ by up to {c['max_result_difference']:.3g}"
    size = c["checkpoint_bytes"]
    megabytes = f"{size / 1e6:.1f} MB" if size else "size unknown"
    return (
        f"the same loop does the same work (results {same}). Per epoch Ray adds a report that copies the checkpoint "
        f"({megabytes}) to storage, and its processes' CPU: {cores(ray_run):.2f} cores while the epochs ran "
        f"(plain: {cores(plain_run):.2f}), taken from the {c['threads']} threads the worker runs on "
        f"{os.cpu_count()} cores. Start-up, {c['modes']['ray']['startup_s']:.0f} s against "
        f"{c['modes']['plain']['startup_s']:.0f} s: a fit runs Ray Train's controller, worker and helper actors "
        f"({ray_run['processes_started']} processes started, the others from Ray's idle pool), which import Ray and "
        f"torch: {other_cpu(ray_run):.0f} CPU-s besides the worker's training"
    )


def limit_d(d: dict) -> str:
    sequential = d["runs"]["sequential"]
    order = sorted(sequential["finished_s"], key=sequential["finished_s"].get)
    ends = [sequential["finished_s"][name] for name in order]
    each = [b - a for a, b in zip([0.0] + ends[:-1], ends)]
    trained = [sequential["epochs_s"][name] for name in order]
    return (
        f"Ray has {d['cluster_cpus']:.0f} CPUs and each expert reserves {d['cpus_per_expert']:g}: at most "
        f"{d['at_once']} of the {d['experts']} experts train at once, the rest wait for a slot; with "
        f"{d['threads_per_expert']} thread(s) each, at most {d['at_once'] * d['threads_per_expert']} of the "
        f"{os.cpu_count()} cores compute. One after another the experts took {', '.join(f'{s:.0f}' for s in each)} s, "
        f"of which their epochs {', '.join(f'{s:.0f}' for s in trained)} s: the rest is each task's set-up on a Ray "
        f"worker (data, model; torch's import on a fresh worker), which concurrency overlaps, though on the same cores"
    )


def limit_e(e: dict, c: dict, meta: dict) -> str:
    saved = e["every_epoch_s"] - e["once_s"]
    decoded_in_c = meta["config"]["data"]["decode_once"]
    return (
        f"decoded once, an epoch of the loader is its augmentation (padded crop, flip) and tensor conversion: "
        f"{e['once_s']:.1f} s against {e['every_epoch_s']:.1f} s with PNG decoding, for {e['images']} images. The one-off "
        f"decode ({e['decode_s']:.1f} s) is repaid after {e['decode_s'] / saved:.1f} epoch(s) and saves {saved:.1f} s of every "
        f"later one; a student epoch in (c) took {c['modes']['plain']['epoch_s']:.1f} s "
        f"(images decoded {'once' if decoded_in_c else 'every epoch'} there)"
        if saved > 0
        else f"decoding once saved nothing here ({e['once_s']:.2f} s vs {e['every_epoch_s']:.2f} s per epoch)"
    )


def limit_f(f: dict, g: dict) -> str:
    loading = g["ms_per_batch"]["batched"]

    def step(arch: str) -> str:
        fp32, bf16 = (f["archs"][arch]["modes"][p]["ms_per_step"] for p in ("fp32", "bf16"))
        return f"{arch} {fp32:.0f} -> {bf16:.0f} ms ({(fp32 - loading) / (bf16 - loading):.2f}x without the loader)"

    fell_back = [arch for arch, a in f["archs"].items() if a["modes"]["bf16"]["ran_in"] != ["bf16"]]
    return (
        f"bf16 speeds up the convolutions and matrix products, not the rest of a step: the loader ({loading:.0f} ms "
        f"per step in both, from (g)), the fp32 loss and optimiser step, each epoch's validation and checkpoint. "
        f"Per step: {', '.join(step(arch) for arch in f['archs'])}"
        + (f". bf16 FELL BACK to fp32 for {', '.join(fell_back)} (no native bf16 on this CPU)" if fell_back else "")
    )


def limit_g(g: dict) -> str:
    per_image = {kind: 1000 * ms / g["batch_size"] for kind, ms in g["ms_per_batch"].items()}
    steps = "; ".join(
        f"{arch} {precision} {share['compute_ms']:.0f} ms ({100 * share['batched']:.1f}%, PIL {100 * share['pil']:.0f}%)"
        for arch, by_precision in g["shares"].items()
        for precision, share in by_precision.items()
    )
    return (
        f"batched: {per_image['batched']:.0f} us per image (the padded crop and flip as one gather of uint8 pixels, "
        f"then the float conversion and normalisation, on {g['threads']} thread(s)) against {per_image['pil']:.0f} us in "
        f"PIL's per-image transforms, {g['speedup']:.1f}x. A share is of a step: the faster the compute, the larger "
        f"the same loader's share. Compute per step, and the loader's share, by student: {steps}"
    )


def breakdown(tree: dict) -> str:
    """A tree's median stage seconds and the rest of its wall time."""
    outside = tree["wall_s"] - sum(tree["stages_s"].values())
    stages = ", ".join(f"{stage} {s:.0f}" for stage, s in tree["stages_s"].items())
    return f"{stages} s, and {outside:.0f} s outside the stages"


def limit_h(h: dict) -> str:
    trees = h["trees"]
    after = trees["after"]["stages_s"]
    line = f"after: {breakdown(trees['after'])}; the longest stage is {max(after, key=after.get)}"
    if "before" in trees:
        before = trees["before"]["stages_s"]
        saved = max((stage for stage in after if stage in before), key=lambda stage: before[stage] - after[stage])
        line += f". Before: {breakdown(trees['before'])}; the most saved in {saved} ({before[saved]:.0f} -> {after[saved]:.0f} s)"
    return line + ". Outside the stages: the interpreter and imports, Ray's start and stop"


def limits(result: dict) -> dict[str, str]:
    """One line per figure: what bounds it, from the measured numbers."""
    ab, c = result["cache_speed"], result["distill"]
    f, g = result["precision"], result["loader"]
    return {
        "a": limit_a(ab),
        "b": limit_b(ab),
        "c": limit_c(c),
        "d": limit_d(result["experts"]),
        "e": limit_e(result["decoding"], c, result["meta"]),
        "f": limit_f(f, g),
        "g": limit_g(g),
        "h": limit_h(result["default_run"]),
    }
