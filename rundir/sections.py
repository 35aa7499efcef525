"""The sections of a run configuration: one dataclass each, with its defaults, its documentation and its `check`.

`rundir.config.Config` holds one of each; `rundir.fields.build` makes them
from YAML. Which fields invalidate which stage (the stage fingerprints) is
decided in `pipeline/graph.py`; resources never do: running the same stage on
more workers is not a different experiment.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from lfme.choices import ARCHITECTURES, KEEPS_DECODED, Family
from lfme.selfpaced import Horizon, Schedule
from rundir.fields import ConfigError, convert, describe, did_you_mean


@dataclass
class RayConfig:
    # None: start a local Ray in this process, or inside a Ray Job (where
    # RAY_ADDRESS is set) join the job's cluster. "auto": join the cluster this
    # machine belongs to. "host:6379": that cluster. "ray://host:10001": Ray Client.
    address: str | None = None
    # Only for the local in-process Ray: CPUs it may use (None = all).
    num_cpus: int | None = None
    # Only for the local in-process Ray: GPUs it declares (None = those Ray
    # detects). A logical count: Ray schedules by it, and a task runs on CUDA
    # only where torch finds a device (stages.tasks.task_device).
    num_gpus: float | None = None
    # A cluster address with a port (or RAY_ADDRESS) is tried for this many
    # seconds before the run stops with one line (ray.init alone waits minutes).
    connect_timeout_s: float = 30.0
    # A stage that asks for more than any node of a cluster has waits this long
    # for the autoscaler to add one, then stops; a local Ray fails at once
    # (pipeline.ray_session).
    resource_wait_s: float = 900.0

    def check(self, path: str) -> None:
        for name in ("connect_timeout_s", "resource_wait_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"{path}.num_cpus: must be >= 1, got {self.num_cpus}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ConfigError(f"{path}.num_gpus: must be >= 0, got {self.num_gpus}")


@dataclass
class Resources:
    """What one Ray Train worker (or inference task) of a stage reserves."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def check(self, path: str) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"{path}.num_workers: must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"{path}.cpus_per_worker: must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"{path}.gpus_per_worker: must be >= 0, got {self.gpus_per_worker}")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass
class SyntheticData:
    """`data.source: synthetic`: a generated long-tailed set (lfme.data.synthetic), for measuring at scale."""

    images: int = 115_846  # training images; the default is ImageNet-LT's size
    classes: int = 1_000
    max_count: int = 1_280  # the head class's size; the tail's is 2
    test_per_class: int = 1
    seed: int = 0

    def validate(self, path: str) -> None:
        """Called by `DataConfig.check` for source 'synthetic' only (not `check`, which loading calls on every
        section): the profile check needs lfme.data, and so torch, which no other config needs to load."""
        if self.classes < 1 or self.test_per_class < 1:
            raise ConfigError(f"{path}.classes and {path}.test_per_class: must be >= 1")
        from lfme.data.sources import check_profile  # torch comes with lfme.data: only a synthetic config pays for it

        try:
            check_profile(self.images, self.classes, self.max_count)
        except ValueError as err:
            raise ConfigError(f"{path}.images: {err}") from None


@dataclass
class DataConfig:
    source: Literal["digits", "imagefolder", "oltr", "parquet", "inat", "cifar10", "cifar100", "synthetic"] = "digits"
    # imagefolder: the tree's root; oltr: the image root the list paths are
    # relative to; parquet: the folder of the files; inat: the folder the JSON
    # files' image file_names are relative to; cifar10/100: torchvision root.
    root: str | None = None
    # imagefolder: subfolder names; oltr: list files; parquet: file names or
    # globs; inat: the JSON annotation files (train2018.json, val2018.json).
    # Relative paths are taken relative to `root`.
    train: str | None = None
    val: str | None = None
    test: str | None = None
    classes_file: str | None = None  # parquet: `label<TAB>wnid<TAB>name`
    download: bool = False  # cifar10/100: let torchvision download (needs network)
    test_per_class: int = 40  # digits: balanced test images per class
    # LDAM-DRW long-tailed construction of a balanced source; None keeps the
    # source as it is (ImageNet-LT, Places-LT are long-tailed already).
    imbalance_factor: float | None = 10.0
    # Balanced validation images per class, taken from the images the LT
    # construction leaves unused (never from the test set). Ignored when the
    # source brings its own validation list.
    val_per_class: int = 10
    lt_seed: int = 0
    transform: Family = "digits"
    image_size: int = 8
    loader_workers: int = 0  # DataLoader worker processes per Ray worker
    # Decode (and for the cifar family resize) a loader's images once and keep
    # the uint8 pixels in memory, instead of decoding them every epoch; memory
    # N x s x s x 3 bytes per worker (CIFAR-10-LT at 32x32: 37 MB). The
    # loaders (training, validation, and the cache's and evaluation's, which
    # then need no torchvision) augment and normalise whole batches on the
    # device (lfme.data.BatchTransform) rather than each image in PIL: the
    # same crop/flip distribution and
    # normalisation from the same seeded RNG, but other draws than the PIL
    # path, so it is in the training stages' fingerprints. digits and cifar
    # families only.
    decode_once: bool = False
    check_images: bool = True  # decode every image in the split stage
    synthetic: SyntheticData = field(default_factory=SyntheticData)  # source 'synthetic' only

    def check(self, path: str) -> None:
        if self.source == "synthetic":
            self.synthetic.validate(f"{path}.synthetic")
        if self.source in ("imagefolder", "oltr", "parquet", "inat") and not self.root:
            raise ConfigError(f"{path}.root: required for source '{self.source}'")
        if self.source == "oltr" and not (self.train and self.test):
            raise ConfigError(f"{path}.train and {path}.test: required list files for source 'oltr'")
        if self.source == "parquet" and not (self.train and self.test):
            raise ConfigError(f"{path}.train and {path}.test: required file names for source 'parquet'")
        if self.source == "inat" and not (self.train and self.test):
            raise ConfigError(f"{path}.train and {path}.test: required JSON annotation files for source 'inat'")
        if self.imbalance_factor is not None and self.imbalance_factor < 1:
            raise ConfigError(f"{path}.imbalance_factor: must be >= 1, got {self.imbalance_factor}")
        for name in ("val_per_class", "loader_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.image_size < 1:
            raise ConfigError(f"{path}.image_size: must be >= 1, got {self.image_size}")
        if self.decode_once and self.transform not in KEEPS_DECODED:
            raise ConfigError(
                f"{path}.decode_once: not for transform '{self.transform}', which crops the full-size image "
                f"at random, so there is no fixed-size image to keep (transforms that allow it: "
                f"{', '.join(KEEPS_DECODED)}); use {path}.loader_workers to decode in parallel instead"
            )


@dataclass
class SplitConfig:
    # thresholds: the paper's L-1 cardinality thresholds; balanced: L groups of
    # adjacent cardinality with the smallest worst within-group ratio.
    method: Literal["thresholds", "balanced"] = "balanced"
    thresholds: list[float] = field(default_factory=lambda: [20.0, 100.0])
    convention: Literal["inclusive", "strict"] = "inclusive"
    num_subsets: int = 3
    names: list[str] | None = None

    def check(self, path: str) -> None:
        if self.method == "thresholds" and not self.thresholds:
            raise ConfigError(f"{path}.thresholds: needs at least one threshold")
        if self.method == "balanced" and self.num_subsets < 1:
            raise ConfigError(f"{path}.num_subsets: must be >= 1, got {self.num_subsets}")


@dataclass
class ModelConfig:
    arch: str = "small_cnn"
    pretrained: str | None = None  # local torchvision state-dict file

    def check(self, path: str) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"{path}.arch: unknown architecture '{self.arch}' (valid: {', '.join(ARCHITECTURES)})")


@dataclass
class TrainingConfig:
    """The optimisation recipe shared by the experts and the student."""

    epochs: int = 10
    batch_size: int = 64  # global: split evenly over the data-parallel workers
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = field(default_factory=list)  # step: epochs where lr *= gamma
    gamma: float = 0.1
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2  # worker-group restarts Ray Train may make from the last checkpoint

    def check(self, path: str) -> None:
        if self.epochs < 1:
            raise ConfigError(f"{path}.epochs: must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size: must be a positive integer, got {self.batch_size}")
        if self.batch_size < self.resources.num_workers:
            raise ConfigError(
                f"{path}.batch_size: {self.batch_size} is smaller than "
                f"{path}.resources.num_workers ({self.resources.num_workers})"
            )
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"{path}.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.lr_schedule == "step" and not self.milestones:
            raise ConfigError(f"{path}.milestones: required when lr_schedule is 'step'")
        if self.max_failures < -1:
            raise ConfigError(f"{path}.max_failures: must be >= -1, got {self.max_failures}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{path}.momentum: must be in [0, 1), got {self.momentum}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"{path}.gamma: must be in (0, 1], got {self.gamma}")


@dataclass
class ExpertsConfig(TrainingConfig):
    max_concurrent: int | None = None  # experts trained at once (None: all)
    # A training budget in SGD steps that small subsets are not starved of: an
    # expert whose `epochs` give fewer steps trains more epochs until it has
    # taken at least this many (lfme.engine.epochs_for_budget; its schedule
    # spans its own epochs). 0: every expert trains `epochs`.
    min_steps: int = 0
    # Where an expert starts: scratch, new weights (the paper); joint, the
    # weights of one model first trained on the whole long-tailed training set
    # with class-balanced sampling (experts/_joint/), its classifier cut to the
    # expert's classes, then fine-tuned on the subset (Hinton et al.'s
    # specialists, 2015; not the paper). Experts trained from scratch on a
    # small subset are behind a student trained on everything (docs/RESULTS.md).
    init: Literal["scratch", "joint"] = "scratch"

    def check(self, path: str) -> None:
        super().check(path)
        if self.min_steps < 0:
            raise ConfigError(f"{path}.min_steps: must be >= 0, got {self.min_steps}")
        if self.resources.num_workers != 1:
            raise ConfigError(
                f"{path}.resources.num_workers: each expert is one worker (one task per subset, all at once), "
                f"got {self.resources.num_workers}; give it more CPUs or a GPU instead"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"{path}.max_concurrent: must be >= 1 or null, got {self.max_concurrent}")


@dataclass
class CacheConfig:
    batch_size: int = 256
    # Rows per Parquet shard, one cache task each; null: as many as make 128 MiB
    # of float16 logits, whatever the label space, and no fewer than 1,024.
    # Either way a part gets at least as many shards as cache tasks run at
    # once, data permitting (stages/cache.py).
    shard_rows: int | None = None
    # The node-local folder where readers keep the memory-mapped copy of the
    # cache (lfme.teacher_cache.map_cache); null: the system's temp folder.
    local_dir: str | None = None
    # Keep each expert's k largest logits and one logit for the rest of its
    # subset (lfme.teacher_cache.TopK documents the exact KD target); null:
    # every logit. For label spaces whose full logits do not fit.
    top_k: int | None = None
    # Augmented views per training image (FKD; lfme.data.views): the experts'
    # signal on `views` views drawn with the training transform's distribution
    # (seeded by `seed`), stored with the views' parameters; each draw of an
    # image replays one of them, so the student trains on exactly the pixels
    # its cached teachers scored. 1: one un-augmented view per image, computed with the
    # test transform. Costs `views` x the logits on disk and `views` + 1
    # expert passes over the training set.
    views: int = 1
    # How the views are shared among the training images (lfme.data.views.
    # allot_views). uniform: `views` each. draws: the same views x N in all,
    # each image's share in proportion to how often the student's sampler
    # (distill.sampling) draws it, at least one: with class sampling a
    # 50-image class's image gets about 100 times the views of a 5,000-image
    # class's, as it is drawn 100 times as often (a cache of K views each
    # overfits the tail: docs/RESULTS.md, issue 20). Costs the same expert
    # passes and logits as uniform, in a row per view (24 bytes more a view).
    # Needs views > 1 (with 1, each image's one view is already its least).
    allot: Literal["uniform", "draws"] = "uniform"
    resources: Resources = field(default_factory=Resources)  # one inference task

    def check(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size: must be >= 1, got {self.batch_size}")
        if self.shard_rows is not None and self.shard_rows < 1:
            raise ConfigError(f"{path}.shard_rows: must be >= 1 or null, got {self.shard_rows}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"{path}.top_k: must be >= 1 or null (every logit), got {self.top_k}")
        if self.views < 1:
            raise ConfigError(f"{path}.views: must be a positive integer, got {self.views}")
        if self.allot == "draws" and self.views < 2:
            raise ConfigError(
                f"{path}.allot: draws shares views x N views among the N training images, at least one each; "
                f"with {path}.views {self.views} every image's one view is already its least: set {path}.views to 2 or more"
            )


@dataclass
class DistillConfig(TrainingConfig):
    sampling: Literal["class", "instance"] = "class"
    samples_per_class: int = 4
    # How class sampling picks each group's class (lfme.sampling): cycle, the
    # official code's (a shuffled list of all classes, each once per C groups,
    # carried from epoch to epoch); iid, independent uniform draws (this
    # code's only way before 2026-12-06).
    class_draw: Literal["cycle", "iid"] = "cycle"
    # dataset: an epoch draws as many samples as the training set holds (the
    # same cost for every sampling, so ablations compare like with like);
    # official: int(N / batch_size) batches, the official code's epoch (its
    # loop stops after int(N / batch) steps; its sampler's nominal
    # max class count x C draws are never reached).
    epoch_length: Literal["dataset", "official"] = "dataset"
    # Which student the stage keeps (and evaluate tests): last, the last
    # epoch's; best, the epoch of the highest validation accuracy, as the
    # official code tests. The history and the stage's result record both.
    keep: Literal["last", "best"] = "last"
    # The student's classification loss (lfme.losses.base_loss_offsets):
    # softmax cross-entropy; logit_adjusted, CE on z + logit_tau log(pi)
    # (Menon et al. ICLR 2021); balanced_softmax, CE on z + log(n_c) (Ren et
    # al. NeurIPS 2020). Both shift the logits inside the CE only: the KD
    # terms and the student's predictions use z. KD on top as kd/spes say.
    base_loss: Literal["softmax", "logit_adjusted", "balanced_softmax"] = "softmax"
    logit_tau: float = 1.0
    kd: bool = True
    # Where the KD targets come from (lfme.teachers). cache: the teacher cache,
    # computed once (the experts on the un-augmented image, or with
    # cache.views > 1 on stored augmented views the student replays). live: the
    # experts run on each augmented training batch, the student's own view, as
    # the official code runs them; for measuring what the cache costs
    # (benchmarks.table3). SpES's Acc_E and SpIS's p_i come from the cache
    # either way (p_i on the un-augmented image, as the official code).
    teachers: Literal["cache", "live"] = "cache"
    temperature: float = 2.0
    t_squared: bool = False
    spes: bool = True
    alpha: float = 0.6
    spis: bool = True
    # SpIS as the paper has it (the defaults) or, switch by switch, as the
    # official code does it (lfme.selfpaced): its initial weights; v_i at 1
    # halfway through the run (horizon: half) and growing on unclipped
    # (spis_clip: false, to 2 - v1); v_i multiplying the student's logits
    # rather than weighting its CE (spis_on: logits).
    spis_init: Literal["paper", "official"] = "paper"
    spis_horizon: Horizon = "full"
    spis_clip: bool = True
    spis_on: Literal["loss", "logits"] = "loss"
    # SpIS schedule of v_i; concave_printed is the paper's printed formula
    # (see lfme.selfpaced.scheduled_instance_weights).
    schedule: Schedule = "linear"

    def check(self, path: str) -> None:
        super().check(path)
        if self.samples_per_class < 1:
            raise ConfigError(f"{path}.samples_per_class: must be >= 1, got {self.samples_per_class}")
        if self.temperature <= 0:
            raise ConfigError(f"{path}.temperature: must be > 0, got {self.temperature}")
        if self.logit_tau < 0:
            raise ConfigError(f"{path}.logit_tau: must be >= 0, got {self.logit_tau}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"{path}.alpha: must be in [0, 1], got {self.alpha}")
        if self.spes and not self.kd:
            raise ConfigError(f"{path}.spes: SpES weighs the KD terms, so it needs {path}.kd: true")
        if self.teachers == "live" and not self.kd:
            raise ConfigError(f"{path}.teachers: live teachers give the KD targets, so it needs {path}.kd: true")


@dataclass
class EvaluateConfig:
    shot_thresholds: list[float] = field(default_factory=lambda: [20.0, 100.0])
    batch_size: int = 256
    resources: Resources = field(default_factory=Resources)  # the one test task (student and experts)

    def check(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size: must be >= 1, got {self.batch_size}")
        if len(self.shot_thresholds) != 2 or self.shot_thresholds[0] >= self.shot_thresholds[1]:
            raise ConfigError(f"{path}.shot_thresholds: need two ascending numbers, got {self.shot_thresholds}")
        if self.resources.num_workers != 1:
            raise ConfigError(
                f"{path}.resources.num_workers: the test set is scored by one task, got {self.resources.num_workers}; "
                f"give it more CPUs or a GPU instead"
            )


SEARCH_SPECS = ("choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class SearchSpec:
    """How Ray Tune draws one swept key: `tune.choice(values)`, or `tune.<form>(low, high)` (randint's high exclusive).

    Parsed from the config's `{form: values}` and checked against the distill
    field it sweeps by `TuneConfig.specs`, the one reader of that format.
    """

    form: str  # one of SEARCH_SPECS
    values: tuple  # choice: the values as written; else (low, high)

    @property
    def largest(self) -> Any:
        """The largest value a draw can take."""
        if self.form == "choice":
            return max(self.values)
        return self.values[1] - 1 if self.form == "randint" else self.values[1]


@dataclass
class TuneConfig:
    """`lfme tune`: a sweep of the distill stage over one run's teacher cache.

    Only `distill.*` fields may be swept: the split, experts and cache must stay
    the ones the cache was built from, so every trial reuses them. This section
    is in no stage fingerprint (`pipeline/graph.py` hashes explicit per-stage
    settings), so editing it never reruns a stage.
    """

    num_samples: int = 4
    # The only per-epoch measure of the student every trial reports; maximised.
    metric: Literal["val_acc"] = "val_acc"
    # dotted distill key -> one spec: {choice: [..]}, {uniform: [lo, hi]},
    # {loguniform: [lo, hi]} or {randint: [lo, hi]} (hi exclusive, as in Ray Tune).
    search_space: dict = field(default_factory=dict)
    # ASHA, on the reported epoch: no trial is stopped before `grace_period`
    # epochs; each rung keeps the best 1/`reduction_factor` of the trials.
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_concurrent_trials: int | None = None  # None: as many as the distill resources fit in the cluster
    seed: int = 0  # of the random search, so a sweep draws the same trials again
    loggers: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    name: str = "sweep"  # results under <run_dir>/tune/<name>/

    def check(self, path: str) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"{path}.num_samples: must be >= 1, got {self.num_samples}")
        if self.grace_period < 1:
            raise ConfigError(f"{path}.grace_period: must be >= 1, got {self.grace_period}")
        if self.reduction_factor <= 1:
            raise ConfigError(f"{path}.reduction_factor: must be > 1, got {self.reduction_factor}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError(f"{path}.max_concurrent_trials: must be >= 1 or null, got {self.max_concurrent_trials}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"{path}.name: must be a plain folder name, got {self.name!r}")
        self.specs(path)

    def specs(self, path: str = "tune") -> dict[str, SearchSpec]:
        """`search_space` parsed: dotted distill key -> its spec; ConfigError naming the first bad one."""
        return {str(key): _search_spec(f"{path}.search_space.{key}", key, spec) for key, spec in self.search_space.items()}


def _search_spec(where: str, key: Any, spec: Any) -> SearchSpec:
    """One swept key: a scalar field of the distill section and a known, well-formed spec."""
    hints = typing.get_type_hints(DistillConfig)
    section, _, name = str(key).partition(".")
    if section != "distill":
        raise ConfigError(f"{where}: only distill.* keys may be swept (the teacher cache must stay the same)")
    if name not in hints:
        raise ConfigError(f"{where}: unknown key '{name}' of distill ({did_you_mean(name, list(hints), 'distill', 'distill')})")
    annotation = hints[name]
    if dataclasses.is_dataclass(annotation) or typing.get_origin(annotation) is list:
        raise ConfigError(f"{where}: distill.{name} is not a single value and cannot be swept")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SEARCH_SPECS:
        raise ConfigError(f"{where}: expected one spec of {', '.join(SEARCH_SPECS)}, e.g. {{choice: [2, 4]}}; got {spec!r}")
    (form, values), = spec.items()
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.{form}: expected a non-empty list, got {describe(values)}")
    if form == "choice":
        for i, value in enumerate(values):
            convert(value, annotation, f"{where}.choice[{i}]")
        return SearchSpec(form, tuple(values))
    if len(values) != 2:
        raise ConfigError(f"{where}.{form}: expected [low, high], got {values!r}")
    if form == "randint":
        if annotation not in (int, float):
            raise ConfigError(f"{where}.randint: distill.{name} is not a number")
        low, high = (convert(v, int, f"{where}.randint[{i}]") for i, v in enumerate(values))
    else:
        if annotation is not float:
            raise ConfigError(f"{where}.{form}: draws real numbers, distill.{name} is not a real number (use choice or randint)")
        low, high = (convert(v, float, f"{where}.{form}[{i}]") for i, v in enumerate(values))
        if form == "loguniform" and low <= 0:
            raise ConfigError(f"{where}.loguniform: low must be > 0, got {low}")
    if low >= high:
        raise ConfigError(f"{where}.{form}: low must be < high, got {values!r}")
    return SearchSpec(form, tuple(values))
