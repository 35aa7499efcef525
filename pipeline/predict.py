"""`lfme predict RUN_DIR INPUT...`: the run's student over new images; each image's top-k classes.

INPUT, any mix of:
- image files (the extensions ImageFolder reads);
- folders, read recursively. A folder whose subfolders are named after the
  student's classes (an ImageFolder tree, like the one it trained on) labels
  each image by its subfolder;
- Parquet files in the Hugging Face image layout (`image.bytes`, and `label`
  where present), as `data.source: parquet` reads them;
- list files (`.txt`, `relative/path label` per line, as `data.source: oltr`
  reads them), paths relative to `--root` (default: the list's folder);
- iNaturalist JSON annotation files (`.json`, as `data.source: inat` reads
  them), paths relative to `--root` (default: the file's folder), each image
  labelled by its category's name where the student has that class.

Each image gets the run's evaluation transform (`pipeline.student`). One row
per image: the input (path, or Parquet file and row), its label where known,
and the k most probable classes with their names and probabilities. Where
labels are known, top-1 and the Many/Medium/Few accuracy are computed exactly
as the evaluate stage computes them (`lfme.evaluation.accuracy_report` with the
run's training counts and shot thresholds), so the run's own test set gives
the numbers of `evaluate/report.json`. An image that cannot be read or decoded
is named on its own line and skipped, and counted at the end.

In this process by default; with `--ray`, in Ray tasks of `--chunk` images on
the run's cluster (`ray.address` of the run's config, or `RAY_ADDRESS`), the
way the cache stage runs its inference: the tasks load the student from the
run directory, a GPU where `evaluate.resources` asks for one, and the driver
holds only the output rows (accuracy needs one integer per labelled image).
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lfme import storage
from lfme.choices import IMAGE_EXTENSIONS
from lfme.data import ImageList
from lfme.data.sources import BytesStore, CorruptImageError, FileStore, read_inat_file, read_oltr_list
from lfme.engine import format_eta
from lfme.evaluation import prediction_report
from lfme.subsets import Subset
from pipeline.student import TrainedStudent, load_student
from rundir.layout import SPLIT_JSON

UNKNOWN = -1  # the label of an image whose class is not given


@dataclass
class Source:
    """One INPUT: its images (labels UNKNOWN where not given) and the name of each in the output."""

    images: ImageList
    names: list[str]


def collect(inputs: list[str], class_names: list[str], mode: str, root: str | None = None) -> list[Source]:
    """The images each INPUT names (module docstring), decoded to PIL `mode`; FileNotFoundError for an input that is not there."""
    sources = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            sources.append(_folder(path, class_names, mode))
        elif not path.is_file():
            raise FileNotFoundError(f"{given}: no such file or folder")
        elif path.suffix.lower() == ".parquet":
            sources.append(_parquet(path, mode))
        elif path.suffix.lower() == ".txt":
            sources.append(_image_list(path, Path(root) if root else path.parent, mode))
        elif path.suffix.lower() == ".json":
            sources.append(_inat(path, Path(root) if root else path.parent, class_names, mode))
        elif path.name.lower().endswith(IMAGE_EXTENSIONS):
            sources.append(_files([str(path)], [UNKNOWN], mode))
        else:
            raise ValueError(f"{given}: not an image, a folder, a Parquet file, a .txt list or an iNaturalist .json")
    return sources


def _files(paths: list[str], labels: list[int], mode: str) -> Source:
    images = ImageList(np.arange(len(paths), dtype=np.int64), np.asarray(labels, dtype=np.int64), FileStore("", paths), mode)
    return Source(images, paths)


def _folder(folder: Path, class_names: list[str], mode: str) -> Source:
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    subfolders = {p.relative_to(folder).parts[0] for p in map(Path, paths) if len(p.relative_to(folder).parts) > 1}
    labelled = bool(paths) and subfolders <= set(class_names) and all(len(Path(p).relative_to(folder).parts) == 2 for p in paths)
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[Path(p).relative_to(folder).parts[0]] if labelled else UNKNOWN for p in paths]
    return _files(paths, labels, mode)


def _parquet(path: Path, mode: str) -> Source:
    table = pq.read_table(path)
    if "image" not in table.column_names:
        raise ValueError(f"{path}: no 'image' column (expected the Hugging Face image layout: image.bytes)")
    image = table.column("image").combine_chunks()
    blobs = image.flatten()[image.type.get_field_index("bytes")] if pa.types.is_struct(image.type) else image
    labels = table.column("label").to_numpy().astype(np.int64) if "label" in table.column_names else np.full(len(table), UNKNOWN)
    rows = np.arange(len(table), dtype=np.int64)
    store = BytesStore(blobs, [str(path)], np.zeros(len(table), dtype=np.int32), rows)
    return Source(ImageList(rows, labels, store, mode), [f"{path} row {r}" for r in rows])


def _inat(path: Path, root: Path, class_names: list[str], mode: str) -> Source:
    file_names, categories = read_inat_file(path)
    index = {name: i for i, name in enumerate(class_names)}
    return _files([str(root / f) for f in file_names], [index.get(c, UNKNOWN) for c in categories], mode)


def _image_list(path: Path, root: Path, mode: str) -> Source:
    relative, labels, _ = read_oltr_list(path)
    return _files([str(root / p) for p in relative], list(labels), mode)


@dataclass
class Predictions:
    rows: list[dict]  # one per image read: input, label, class_i, name_i, prob_i for i = 1..k
    predicted: np.ndarray  # int64: the argmax class of each image with a known label, for the accuracy
    labels: np.ndarray  # int64: those labels
    skipped: list[str]  # one message per image that could not be read

    @staticmethod
    def concat(parts: list[Predictions]) -> Predictions:
        return Predictions(
            [row for p in parts for row in p.rows],
            np.concatenate([p.predicted for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64),
            [message for p in parts for message in p.skipped],
        )


def predict(student: TrainedStudent, sources: list[Source], top_k: int = 5, batch_size: int = 256) -> Predictions:
    """The student's top-k over every image of `sources`, in this process (images that cannot be read are skipped and named)."""
    k = min(top_k, len(student.class_names))
    parts: list[Predictions] = []
    skipped: list[str] = []
    for batch in _batches(student, sources, batch_size, skipped):
        names, images, batch_labels = zip(*batch)
        probs = torch.softmax(student.logits(torch.stack(images)).cpu(), dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        rows = []
        for name, label, p, i in zip(names, batch_labels, top_p.tolist(), top_i.tolist()):
            row = {"input": name, "label": None if label == UNKNOWN else int(label)}
            for rank, (class_id, prob) in enumerate(zip(i, p), start=1):
                row.update({f"class_{rank}": class_id, f"name_{rank}": student.class_names[class_id], f"prob_{rank}": prob})
            rows.append(row)
        labels = np.asarray(batch_labels, dtype=np.int64)
        known = labels != UNKNOWN
        parts.append(Predictions(rows, top_i[:, 0].numpy().astype(np.int64)[known], labels[known], []))
    return Predictions.concat(parts + [Predictions([], np.zeros(0, np.int64), np.zeros(0, np.int64), skipped)])


def chunks(sources: list[Source], size: int) -> Iterator[Source]:
    """The images of `sources` in pieces of at most `size` (each a Source of its own, cheap to send to a task)."""
    for source in sources:
        for start in range(0, len(source.images), size):
            stop = min(start + size, len(source.images))
            yield Source(source.images.subset(np.arange(start, stop)), source.names[start:stop])


def predict_on_ray(
    run_dir: str, sources: list[Source], resources, top_k: int, batch_size: int, chunk: int, log: Callable[[str], None]
) -> Predictions:
    """`predict` in Ray tasks of `chunk` images each, as many at once as the cluster runs (`resources` per task).

    Each task loads the student from the run directory (GPU where Ray gave it
    one) and returns its rows and predictions; the driver holds no image and
    no logits, only the output rows. A progress line with the rate and ETA
    after each chunk, at most every 10 s.
    """
    import ray

    from stages import tasks

    task = ray.remote(_predict_chunk).options(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)
    per_task = resources.gpus_per_worker or resources.cpus_per_worker
    capacity = ray.cluster_resources().get("GPU" if resources.gpus_per_worker else "CPU", 1)
    slots = max(1, int(capacity // per_task))
    total = sum(len(s.images) for s in sources)
    todo = enumerate(chunks(sources, chunk))
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}  # task -> (its chunk's index, images)
    parts: dict[int, Predictions] = {}
    done = 0
    start, said = time.monotonic(), 0.0
    with tasks.cancelled_on_interrupt(pending):
        while True:
            while len(pending) < slots and (item := next(todo, None)) is not None:
                index, piece = item
                pending[task.remote(run_dir, piece, top_k, batch_size, resources.cpus_per_worker)] = (index, len(piece.images))
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, size = pending.pop(ref)
            parts[index] = ray.get(ref)
            done += size
            elapsed = time.monotonic() - start
            if elapsed - said >= 10 or done == total:
                said = elapsed
                rate = done / max(elapsed, 1e-9)
                log(f"predict: {done:,} of {total:,} images, {rate:.0f}/s, ETA {format_eta((total - done) / max(rate, 1e-9))}")
    return Predictions.concat([parts[index] for index in sorted(parts)])  # the inputs' order


def _predict_chunk(run_dir: str, piece: Source, top_k: int, batch_size: int, cpus: float) -> Predictions:
    from stages import tasks

    torch.set_num_threads(max(1, int(cpus)))
    return predict(load_student(run_dir, tasks.task_device()), [piece], top_k, batch_size)


def _batches(student: TrainedStudent, sources: list[Source], batch_size: int, skipped: list[str]) -> Iterator[list]:
    batch = []
    for source in sources:
        for i in range(len(source.images)):
            try:
                image = source.images.load(i)
            except (CorruptImageError, OSError) as err:
                skipped.append(f"skipped {source.images.where(i)}: {err}" if isinstance(err, OSError) else f"skipped: {err}")
                continue
            batch.append((source.names[i], student.preprocess(image), int(source.images.labels[i])))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def accuracy(student: TrainedStudent, predictions: Predictions) -> dict | None:
    """The evaluate stage's accuracy report over the images with a known label (None if there are none)."""
    if not len(predictions.labels):
        return None
    meta = storage.read_json(storage.join(student.run_dir, "split", SPLIT_JSON))
    subsets = [Subset.from_record(s) for s in meta["subsets"]]
    thresholds = tuple(student.run_config().evaluate.shot_thresholds)
    counts = np.asarray(meta["class_counts"])
    return prediction_report(predictions.predicted, predictions.labels, len(student.class_names), counts, subsets, thresholds)


def write_rows(rows: list[dict], location: str) -> None:
    """The rows as CSV or Parquet, by the file's extension, written atomically (local path or URL)."""
    suffix = os.path.splitext(location)[1].lower()
    if suffix == ".parquet":
        with storage.atomic_file(location) as f:
            pq.write_table(pa.Table.from_pylist(rows), f)
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["input"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        storage.write_text_atomic(location, buffer.getvalue())
    else:
        raise ValueError(f"--out {location}: write .csv or .parquet")
