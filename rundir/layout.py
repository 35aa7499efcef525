"""Every artifact of a run directory: where it lives, and how it is read and written.

A run directory (a local path or an object-storage URL, `lfme.storage`)::

    config.yaml  manifest.json           the resolved config; what each stage did (pipeline.manifest)
    lease.json                           the driver holding the run, while one does (pipeline.lease)
    logs/lfme-<command>-<time>-<pid>.log each command's log: tracebacks, Ray's own output (pipeline.cli)
    <stage>/settings.json                the config fields that define the stage's result
    split/split.json                     class names and counts, the subsets, Table 1's metrics
    split/samples.parquet                sample_id, label, part (train | val) of every chosen image
    split/inputs.json                    the signature of the data files the split read (rundir.inputs)
    experts/<subset>/model.pt            the expert's best weights (arch, subset, classes, model)
    experts/<subset>/result.json         its validation accuracy and history; marks it trained
    experts/<subset>/checkpoint.pt       its per-epoch training state, while it trains
    experts/_joint/                      the joint model the experts start from (experts.init: joint)
    cache/                               the teacher cache (lfme.teacher_cache documents it)
    distill/student.pt, history.json     the student (arch, num_classes, class_names, model); per-epoch log
    distill/checkpoint.pt                a one-worker student's per-epoch training state (kept: a rerun resumes at its end)
    evaluate/report.{json,md}, *.png     the test report (lfme.report)
    tensorboard/<stage>/<name>/          per-epoch scalars of each expert and of the student (lfme.scalars)
    ray/<stage>-<name>-<fingerprint>/    Ray Train's checkpoints of a student of several workers
    tune/<sweep>/                        a sweep (pipeline.tune)

The stages find each other's outputs here and only here: the experts stage
writes what the cache stage reads by these functions, never by importing the
experts stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lfme import storage
from lfme.subsets import Subset
from rundir.sections import DataConfig

if TYPE_CHECKING:
    import torch

    from lfme.data import ImageList

# torch (with torchvision, seconds to import, tens under load) and pyarrow are
# imported only by the functions that build a model, read images or read and
# write Parquet: the runner's skip and verify checks, `lfme status` (whose
# Ctrl-C once hung inside pyarrow's import under load), `lfme verify` and a
# refused second driver read this module's paths and need none of them.

SPLIT_JSON = "split.json"
SPLIT_INPUTS = "inputs.json"
SAMPLES_PARQUET = "samples.parquet"
EXPERT_MODEL = "model.pt"
EXPERT_RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"  # a training task's epoch checkpoint (stages.tasks.FileCheckpoints)
STATE_FILE = "state.pt"  # the training state in a checkpoint folder of Ray Train (stages.workers) or Tune (pipeline.tune)
STUDENT = "student.pt"
HISTORY = "history.json"


CONFIG_YAML = "config.yaml"
STAGE_SETTINGS = "settings.json"
MANIFEST_FILE = "manifest.json"
LEASE_FILE = "lease.json"
LOGS_DIR = "logs"


def run_config_file(run_dir: str) -> str:
    """The resolved config of the run's last `lfme run` (absolute paths)."""
    return storage.join(run_dir, CONFIG_YAML)


def manifest_file(run_dir: str) -> str:
    """What each stage did: the pipeline's memory between commands (pipeline.manifest)."""
    return storage.join(run_dir, MANIFEST_FILE)


def lease_file(run_dir: str) -> str:
    """The driver holding the run, while one does (pipeline.lease)."""
    return storage.join(run_dir, LEASE_FILE)


def logs_dir(run_dir: str) -> str:
    """One log file per `lfme run` or `lfme tune` (pipeline.console)."""
    return storage.join(run_dir, LOGS_DIR)


def stage_settings_file(run_dir: str, stage: str) -> str:
    """The config fields that define `stage`'s result (pipeline.graph.stage_settings), as the stage last ran."""
    return storage.join(run_dir, stage, STAGE_SETTINGS)


def stage_dir(run_dir: str, stage: str) -> str:
    return storage.join(run_dir, stage)


# --------------------------------------------------------------------------- split


@dataclass
class SplitInfo:
    """What the split stage decided, read from its outputs alone: classes, counts, subsets, chosen ids and labels.

    The one source of these for every later stage: the driver learns the
    subsets, the class counts and each part's sample ids here without
    opening the data source (an ImageFolder scan, iNaturalist's 437,513-entry
    JSON), and `load_split` checks the source against it.
    """

    class_names: list[str]
    class_counts: np.ndarray  # training images per class
    subsets: list[Subset]
    sample_ids: dict[str, np.ndarray]  # "train" | "val" -> the chosen sample ids, in split order
    labels: dict[str, np.ndarray]  # "train" | "val" -> their labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class SplitData(SplitInfo):
    """`SplitInfo` with its images: the long-tailed training set, the validation and test sets."""

    train: ImageList
    val: ImageList
    test: ImageList
    channels: int


def save_split(run_dir: str, train: ImageList, val: ImageList, meta: dict[str, Any]) -> None:
    """The split stage's outputs: which images were chosen (by sample id), and `meta` (split.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "sample_id": np.concatenate([train.sample_ids, val.sample_ids]).astype(np.int64),
            "label": np.concatenate([train.labels, val.labels]).astype(np.int64),
            "part": ["train"] * len(train) + ["val"] * len(val),
        }
    )
    with storage.atomic_file(storage.join(run_dir, "split", SAMPLES_PARQUET)) as f:
        pq.write_table(table, f)
    storage.write_json_atomic(storage.join(run_dir, "split", SPLIT_JSON), meta)


def split_inputs_file(run_dir: str) -> str:
    return storage.join(run_dir, "split", SPLIT_INPUTS)


def _select(pool: ImageList, sample_ids: np.ndarray, labels: np.ndarray, what: str) -> ImageList:
    order = np.argsort(pool.sample_ids, kind="stable")
    sorted_ids = pool.sample_ids[order]
    pos = np.searchsorted(sorted_ids, sample_ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    missing = sample_ids[sorted_ids[pos] != sample_ids] if len(sorted_ids) else sample_ids
    if len(missing):
        raise ValueError(
            f"split/{SAMPLES_PARQUET} names {what} sample {int(missing[0])} that the data source no longer has: "
            "the data changed since the split stage; rerun it"
        )
    chosen = pool.subset(order[pos])
    relabelled = np.flatnonzero(chosen.labels != labels)
    if len(relabelled):
        i = int(relabelled[0])
        raise ValueError(
            f"split/{SAMPLES_PARQUET} has {what} sample {int(sample_ids[i])} with label {int(labels[i])}, the data "
            f"source now {int(chosen.labels[i])}: the data changed since the split stage; rerun it"
        )
    return chosen


def read_split(run_dir: str) -> SplitInfo:
    """The split stage's decisions from `split/split.json` and `split/samples.parquet` (no data source opened)."""
    meta_path, samples_path = (storage.join(run_dir, "split", name) for name in (SPLIT_JSON, SAMPLES_PARQUET))
    for path in (meta_path, samples_path):
        if not storage.exists(path):
            raise FileNotFoundError(f"{path} is missing: run the split stage first (lfme run --stage split)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = storage.read_json(meta_path)
    samples = pq.read_table(pa.BufferReader(storage.read_bytes(samples_path))).to_pydict()
    ids = np.asarray(samples["sample_id"], dtype=np.int64)
    labels = np.asarray(samples["label"], dtype=np.int64)
    parts = np.asarray(samples["part"])
    return SplitInfo(
        class_names=meta["class_names"],
        class_counts=np.asarray(meta["class_counts"], dtype=np.int64),
        subsets=[Subset.from_record(s) for s in meta["subsets"]],
        sample_ids={part: ids[parts == part] for part in ("train", "val")},
        labels={part: labels[parts == part] for part in ("train", "val")},
    )


def load_split(run_dir: str, cfg: DataConfig) -> SplitData:
    """The split stage's sets: `read_split`, with each chosen image found in the data source.

    Every worker that reads images (and only those) rebuilds the same lists
    this way, so all of them agree on what "the training set" is without
    shipping images around. A chosen image the source no longer has, or has
    under another label, stops it: the data changed since the split.
    """
    from rundir.data import load_source

    info = read_split(run_dir)
    source = load_source(cfg)
    # Validation images come from the source's own list when it has one, else
    # from the training images the long-tailed construction left unused.
    val_pool = source.train if source.val is None else source.val
    return SplitData(
        **vars(info),
        train=_select(source.train, info.sample_ids["train"], info.labels["train"], "training"),
        val=_select(val_pool, info.sample_ids["val"], info.labels["val"], "validation"),
        test=source.test,
        channels=source.channels,
    )


# ------------------------------------------------------------------------- experts


def expert_dir(run_dir: str, name: str) -> str:
    return storage.join(run_dir, "experts", name)


def expert_checkpoint(run_dir: str, name: str) -> str:
    return storage.join(expert_dir(run_dir, name), CHECKPOINT)


def expert_result(run_dir: str, name: str, fingerprint: str) -> dict[str, Any] | None:
    """The result of an expert trained with these settings (`fingerprint`) whose weights are intact, else None.

    Intact: `model.pt` has the SHA-256 its result recorded. A missing or
    damaged weights file thus makes just that expert train again.
    """
    path = storage.join(expert_dir(run_dir, name), EXPERT_RESULT)
    if not storage.exists(path):
        return None
    result = storage.read_json(path)
    if result.get("fingerprint") != fingerprint:
        return None
    model = storage.join(expert_dir(run_dir, name), EXPERT_MODEL)
    if not storage.exists(model):
        return None
    recorded = result.get("model_sha256")  # absent in results written before it was recorded: trusted as they are
    if recorded is not None and storage.file_sha256(model) != recorded:
        return None
    return result


def save_expert(run_dir: str, subset: Subset, arch: str, model_state: dict, result: dict[str, Any]) -> dict[str, Any]:
    """The expert's weights, then its result with their SHA-256 (the result marks it trained); returns the result.

    Its per-epoch checkpoint is then of no further use and is removed.
    """
    out = expert_dir(run_dir, subset.name)
    model = storage.join(out, EXPERT_MODEL)
    storage.save_torch_atomic(model, {"arch": arch, "subset": subset.name, "classes": list(subset.classes), "model": model_state})
    result = {**result, "model_sha256": storage.file_sha256(model)}
    storage.write_json_atomic(storage.join(out, EXPERT_RESULT), result)
    storage.remove(expert_checkpoint(run_dir, subset.name))
    return result


def load_expert(run_dir: str, subset: Subset, channels: int, device: torch.device) -> torch.nn.Module:
    """The trained expert of `subset`, in eval mode on `device`."""
    from lfme.models import build_model

    saved = storage.load_torch(storage.join(expert_dir(run_dir, subset.name), EXPERT_MODEL))
    model = build_model(saved["arch"], len(subset.classes), in_channels=channels)
    model.load_state_dict(saved["model"])
    return model.to(device).eval()


def expert_hashes(run_dir: str, subsets: list[Subset]) -> dict[str, str]:
    """SHA-256 of each expert's weights file: what the teacher cache is fingerprinted by."""
    hashes = {}
    for s in subsets:
        path = storage.join(expert_dir(run_dir, s.name), EXPERT_MODEL)
        if not storage.exists(path):
            raise FileNotFoundError(f"{path} is missing: run the experts stage first (lfme run --stage experts)")
        hashes[s.name] = storage.file_sha256(path)
    return hashes


# --------------------------------------------------------------------------- cache


def cache_dir(run_dir: str) -> str:
    return storage.join(run_dir, "cache")


def verified_cache(run_dir: str, cache_fingerprint: str, subsets: list[Subset]) -> dict[str, Any]:
    """What a reader of the cache checks it against: the cache stage's fingerprint and the experts' hashes.

    Checked here once (raises `CacheMismatchError` naming the expert when the
    cache on disk was not built from the experts on disk), and passed on to
    the student's workers, which check again as they read.
    """
    from lfme.teacher_cache import verify_cache

    experts = expert_hashes(run_dir, subsets)
    verify_cache(cache_dir(run_dir), expected_fingerprint=cache_fingerprint, expected_experts=experts)
    return {"expected_fingerprint": cache_fingerprint, "expected_experts": experts}


# ------------------------------------------------------------------------- student


def student_file(run_dir: str) -> str:
    return storage.join(run_dir, "distill", STUDENT)


def history_file(run_dir: str) -> str:
    return storage.join(run_dir, "distill", HISTORY)


def student_checkpoint(run_dir: str) -> str:
    """A one-worker student's epoch checkpoint (`stages.distill.student_task`); Ray Train's are under `ray/`."""
    return storage.join(run_dir, "distill", CHECKPOINT)


def save_student(location: str, arch: str, split: SplitInfo, model_state: dict) -> None:
    """A student checkpoint (`distill/student.pt`, or a sweep's best trial: the same format)."""
    storage.save_torch_atomic(
        location, {"arch": arch, "num_classes": split.num_classes, "class_names": split.class_names, "model": model_state}
    )


def load_student(location: str, channels: int, device: torch.device) -> torch.nn.Module:
    from lfme.models import build_model

    saved = storage.load_torch(location)
    model = build_model(saved["arch"], saved["num_classes"], in_channels=channels)
    model.load_state_dict(saved["model"])
    return model.to(device).eval()


# ---------------------------------------------------------------- reports, Ray, sweeps


def report_dir(run_dir: str) -> str:
    return storage.join(run_dir, "evaluate")


def tensorboard_dir(run_dir: str, stage: str, name: str) -> str:
    """Where a training loop's per-epoch scalars go (lfme.scalars): `tensorboard --logdir RUN_DIR` shows them."""
    return storage.join(run_dir, "tensorboard", stage, name)


def ray_storage(run_dir: str) -> str:
    """Ray Train's storage: checkpoints live inside the run directory, wherever that is."""
    return storage.join(run_dir, "ray")


def sweep_dir(run_dir: str, name: str) -> str:
    return storage.join(run_dir, "tune", name)
