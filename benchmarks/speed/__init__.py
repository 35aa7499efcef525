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
a line on what limits each figure, then each part's details. Progress goes
to stderr. --quick takes about 15 minutes on 2 busy CPU cores, about 4 of them
(h)'s two default runs; every figure is
only as steady as the machine: the load average is recorded at the start and
the end, and a WARNING marks figures whose repeats disagree.
"""

import os

# The environment of (h)'s runs: as it was when this command started, before
# importing Ray sets variables in it (the "before" tree must run as it would on
# its own). Captured here, in the package, which Python runs before any of its
# modules (each of which may import Ray).
ENVIRONMENT = dict(os.environ)
