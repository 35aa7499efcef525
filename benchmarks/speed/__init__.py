"""The pipeline's speed figures, measured side by side in one run, each against its goal.

    python -m benchmarks.speed [--quick] [--out DIR] [--skip-before]      # from the repository root

(a) Student throughput with teacher logits from the cache versus three live
    teachers (goal: >= 2x), and (b) the cache itself: bytes per sample, write
    and read rows/s, read rate over the training rate (goal: >> 1). Both are
    benchmarks.cache_speed (its docstring defines every number), run here
    on the data below, with a torch.profiler summary of cached and live steps,
    in bf16 (`--precision bf16`: the precision the presets run in), student
    and live teachers alike, with batched augmentation.
(c) The distill stage under Ray Train versus plain PyTorch (goal: at most 5%
    more time per epoch; start-up reported separately). The same function,
    `stages.distill.distill_loop` (the distill stage's worker loop), on the
    same run directory, config and seed, through `stages.workers.fit`:
      ray:   one Ray Train worker, an actor holding the stage's CPUs, exactly
             as `lfme run` runs the stage with `distill.resources.num_workers: 1`;
      plain: Ray Train's local mode (`num_workers=0`): the loop runs in this
             process, no actors, no checkpoint upload; the `ray.train` calls
             it makes are in-process stand-ins.
    Per-epoch times are the `seconds` of each epoch in the two histories (from
    one checkpoint to the next, so every epoch after the first includes one
    checkpoint). The first epoch is shown apart (it warms up and holds no
    checkpoint); overhead = median later epoch under Ray / plain - 1.
    Start-up = the fit's wall time minus its epochs (Ray Train's start and
    stop, the loop's set-up, the last checkpoint). The histories' losses and
    validation accuracies are compared too: identical means the two runs did
    the same work. `--rounds` alternates the order (plain, ray, ray, plain, ...)
    so that load that drifts hits both alike. CPU seconds of every process of
    this run (the driver, Ray's daemons and actors) are sampled during each
    fit: what Ray's own processes take from the training.
(d) The experts stage with its L experts launched concurrently
    (`experts.max_concurrent: L`) versus one after another (1): the stage run
    twice, on fresh run directories seeded with the same split
    (`pipeline.reuse.reuse_stages`), all else the same. Ray's CPUs (`ray.cluster_resources()`) over each expert's CPUs bound
    how many really train at once.
(e) Image decoding: one epoch of the distill stage's training loader alone
    (no model), with the images decoded every epoch versus decoded once when
    the loader is made (`data.decode_once`); the one-off decode reported apart.
(f) Precision: a student epoch in fp32 versus bf16 (`precision`), for
    ResNet-8 and ResNet-32 (goal: bf16 >= 2x faster for each). The distill
    loop in local mode, as (c)'s plain runs (`fit_student`), on the base run
    directory and its cache (built in the base config's precision, fp32; the
    cache's fingerprint holds `precision`, so every run checks the cache
    against the base config's fingerprint), with the batched loader in this
    process (`data.decode_once`, `data.loader_workers: 0`, which (g) times
    alone). Per arch, `--rounds` pairs of runs, the order of fp32 and
    bf16 alternating from pair to pair. An epoch's seconds are its history's
    (training, validation, the previous checkpoint; the first epoch apart,
    as in (c)); the speed-up is the median later fp32 epoch over the median
    later bf16 epoch. img/s = training images per epoch (the sampler's
    length) / that median; ms per step = that median / batches per epoch.
    Each run's last validation accuracy shows that bf16 still trains.
(g) Loader share: ms per batch of the student's training loader alone, at
    its batch size and sampler, in this process at its threads (no model,
    images decoded beforehand, not timed): PIL transforms on decoded images
    (`ImageDataset` + `build_transform`, what decode_once did before) versus
    the batched path (`make_loader` with decode_once: uint8 pixels collated,
    `BatchTransform` on the whole batch). max(3, --rounds) rounds in
    alternating order, medians. The share of a student step is
    loader / (loader + compute), with compute = (f)'s ms per step less the
    batched loader's ms (which (f)'s epochs ran); compute thus holds the
    epoch's validation and checkpoint too, spread over its steps. Goal:
    batched <= 10% of a bf16 ResNet-8 step (the issue's baseline, 72 ms of
    331 ms, was 22%); the fp32 step and ResNet-32 are shown too.
(h) The default `lfme run` (ray_config.yaml, digits) from the command line,
    before and after: `python -m pipeline.cli run ray_config.yaml` in a
    subprocess on a fresh run directory, once in this checkout ("after") and
    once in a git worktree of `--before-ref` ("before", default bbc16ad, the
    commit before issue 9's speed work; made under DIR, removed at the end;
    `--skip-before` skips it), each with its tree first on PYTHONPATH (checked:
    `pipeline` imports from the tree) and the environment this command
    started with (not the variables Ray and `stages.workers.fit` set in it
    since). The "before" tree is run the way its own layout needs: its
    `pipeline.cli` from its root, none of this checkout's code. Wall time of the subprocess, each stage's seconds from the run's
    manifest (`duration_s`), test top-1 from evaluate/report.json. Goal:
    after <= 60 s, top-1 as before (94.2%). `--rounds` rounds, order
    alternating.

Data: CIFAR-10-LT (configs/cifar10-lt.yaml, the ImageFolder tree in
../shared/data/cifar10) with the CPU_SCALE overrides of benchmarks.scales (ResNet-8, one
2-thread student worker) and one expert epoch (only the student is timed in
(c)). --quick builds CIFAR-10-LT from the first 500 training images per
class (a symlinked tree in DIR/data; 10x fewer images, the same protocol),
3 student epochs, shorter (a) and (b). split, experts and cache are built
once in DIR/base with the pipeline's own stages and reused when the command
is run again; (c), (d), (f) and (h) always run afresh.

Output: DIR/speed.json (every number) and DIR/speed.md: the goals table, with
each figure's related numbers (speed.json's "limits"), then each part's
details. Progress goes to stderr. --quick takes about 15 minutes on 2 busy
CPU cores, about 4 of them (h)'s two default runs; every figure is only as
steady as the machine: the load average is recorded at the start and the
end, and a WARNING marks figures whose repeats disagree by more than 15%
(max / min), most often because the load on the machine changed during the
run: rerun it when the machine is idle. `render.render` renders a saved
speed.json again, leaving out the parts a result saved before them lacks.

Reading the figures (what the report states only as numbers; measured
discussions: docs/RESULTS.md, "Speed"):
(a) A cached step is data + student, a live one data + teacher + student,
    so cached/live is at most 1 + teacher / (data + student). A backward
    costs about two forwards, so three teachers of the student's size cost
    about one student step: the ratio tends to 2x at best; loading only adds
    to the denominator. The top ops of a cached step show where its time goes
    (the batch transform's among them when loading weighs).
(b) The read rate falls with C: Parquet's decoding of the float16 logits. A
    worker reads the cache once, before training, so what counts is the read
    time of the training rows against an epoch.
(c) Per epoch Ray adds a report that copies the checkpoint to storage, and
    the CPU of its own processes, taken from the cores the worker's threads
    run on. Start-up is apart: a fit runs Ray Train's controller, worker and
    helper actors (some started, the others from Ray's idle pool), which
    import Ray and torch.
(d) At most Ray's CPUs / each expert's reservation train at once, the rest
    wait for a slot. An expert's time beyond its epochs is its task's set-up
    on a Ray worker (data, model; torch's import on a fresh worker), which
    concurrency overlaps, though on the same cores.
(e) Decoded once, an epoch of the loader is its augmentation (padded crop,
    flip) and tensor conversion; decoded every epoch, PNG decoding too.
(f) bf16 speeds up the convolutions and matrix products, not the rest of a
    step: the loader, the fp32 loss and optimiser step, each epoch's
    validation and checkpoint. "Without the loader" takes (g)'s batched ms
    off both steps. bf16 that ran in fp32 (`lfme.precision.resolve`: no
    native bf16 on the hardware) is marked FELL BACK.
(g) Batched: the padded crop and flip as one gather of uint8 pixels, then
    the float conversion and normalisation; PIL: per-image transforms. A
    share is of a step: the faster the compute, the larger the same loader's
    share.
(h) Outside the stages: the interpreter and imports, Ray's start and stop.
"""

import os

# The environment of (h)'s runs: as it was when this command started, before
# importing Ray sets variables in it (the "before" tree must run as it would on
# its own). Captured here, in the package, which Python runs before any of its
# modules (each of which may import Ray).
ENVIRONMENT = dict(os.environ)
