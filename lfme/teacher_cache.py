"""The teacher cache: every expert's logits and the confidence p_i, written once.

LFME distils several experts into one student (docs/METHOD.md section 4). The
experts are frozen, so their signal on the un-augmented image never changes:
it is computed once by the cache stage and stored here, and the student's
distillation reads it instead of running the teachers live.

One row per sample, one table per part ("train", "val", ...):

    sample_id   int64
    label       int64
    subset      int32                      index of the subset holding `label`
    logits      fixed_size_list<float16>[C] global class order; expert l fills
                                           the columns of its subset's classes
    confidence  float32                    p_i: softmax prob of y_i from the
                                           expert of y_i's subset

With `cache.top_k = k` (`TopK`: each expert keeps its k largest logits and one
rest logit for the mass of its other classes), `logits` gives way to

    topk_logits   fixed_size_list<float16>[K]  K = sum over experts of min(k, |S_l|),
                                               expert by expert, each its largest first
    topk_classes  fixed_size_list<int32>[K]    the global class of each kept logit
    rest_logits   fixed_size_list<float16>[L]  one per expert (L experts)

and the manifest records `"top_k": k`.

With `cache.views = K > 1` (FKD-style views, `lfme.data.views`) the training
part stores, per sample, the experts' signal on K augmented views of the
image, view by view in one row: `logits` is K x C wide (view 0's C logits,
then view 1's, ...), a top-k cache's three arrays are K times as wide, and

    view_params   fixed_size_list<float32>[K x 9]  each view's crop box, flip and
                                                   colour jitter (`VIEW_FIELDS`)

is added; `confidence` stays one p_i per sample, from the un-augmented view.
The manifest's part entry records `"views": K`. The validation part keeps
one un-augmented row per sample.

Layout of a cache directory ``D``::

    D/manifest.json                 the only entry point for readers
    D/<data_dir>/<part>-NNNNN.parquet   shards of <= shard_rows rows, sorted by sample_id

A write never touches the files the current manifest points to: shards go
into a new, uniquely named data directory (``new_data_dir``; ``write_shard``
from any process, so the cache stage writes them where the logits are
computed), then ``commit_cache`` checks the writers' records of them (each
part's shard indices complete, sample ids increasing across shards) and
replaces ``manifest.json`` atomically, then deletes the data directories no
manifest references. A reader therefore sees either the old complete cache or
the new complete one; a write that fails after its manifest is in place
keeps its data (``discard_data_dir``).
One writer at a time per directory is assumed (the pipeline's cache stage).

Two readers: ``read_cache`` loads a part into the caller's memory;
``map_cache`` copies it once per node into uncompressed ``.npy`` files that
every reader on the node memory-maps, so N workers hold the logits once.

Framework-free on purpose (numpy + pyarrow + json): no Ray, no torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lfme import storage

FORMAT = "lfme-teacher-cache/1"
MANIFEST_NAME = "manifest.json"
SCHEMA_METADATA_KEY = b"lfme"
DATA_DIR_PREFIX = "data-"
_PART_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class CacheMismatchError(ValueError):
    """The cache on disk was built from other experts or data than the caller expects."""


class CacheDamagedError(ValueError):
    """A shard on disk is not the one the manifest recorded (truncated, overwritten, unreadable)."""


VIEW_WIDTH = 9  # numbers per stored view (lfme.data.views.VIEW_FIELDS)


def arrow_schema(num_classes: int, top_k: tuple[int, int] | None = None, views: int = 1) -> pa.Schema:
    """The documented Arrow schema of a part's table (without the `lfme` metadata).

    `top_k`: (K, L) for a top-k cache (`TopK`): K kept logits and their
    classes, and one rest logit per subset, instead of the C logits.
    `views`: signal columns `views` times as wide, and the views' parameters.
    """
    if top_k is None:
        signal = [pa.field("logits", pa.list_(pa.float16(), int(num_classes) * views), nullable=False)]
    else:
        width, num_subsets = top_k
        signal = [
            pa.field("topk_logits", pa.list_(pa.float16(), int(width) * views), nullable=False),
            pa.field("topk_classes", pa.list_(pa.int32(), int(width) * views), nullable=False),
            pa.field("rest_logits", pa.list_(pa.float16(), int(num_subsets) * views), nullable=False),
        ]
    if views > 1:
        signal.append(pa.field("view_params", pa.list_(pa.float32(), VIEW_WIDTH * views), nullable=False))
    return pa.schema(
        [
            pa.field("sample_id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("subset", pa.int32(), nullable=False),
            *signal,
            pa.field("confidence", pa.float32(), nullable=False),
        ]
    )


def top_k_shape(top_k: int, subsets: list[dict]) -> tuple[int, int]:
    """(K, L) of a top-k cache: sum_l min(k, |S_l|) kept logits, L subsets."""
    return sum(min(int(top_k), len(s["classes"])) for s in subsets), len(subsets)


# --------------------------------------------------------------------------- rows


@dataclass(eq=False)
class TopK:
    """The teacher signal of a top-k cache (`cache.top_k`): per expert, its k largest logits and one for the rest.

    Expert l's logits over its subset S_l are rebuilt (`dense`) as: each kept
    class gets its own logit; every other class of S_l gets

        m_l = log( sum_{j in S_l, not kept} exp(z_j) / (|S_l| - k) ),

    the log of the dropped classes' mean exp(logit). The softmax over S_l at
    temperature 1 is then exact on the kept classes and spreads the rest of
    the mass evenly over the dropped ones; at temperature T the KD target is
    the softmax of the rebuilt logits / T (the dropped classes flattened to
    one value). The argmax within S_l, hence Acc_E, is unchanged: m_l is at
    most the largest dropped logit. A subset of at most k classes keeps all.
    """

    k: int
    values: np.ndarray  # float16 (n, K): the kept logits, subset by subset, largest first
    classes: np.ndarray  # int32 (n, K): their global class indices
    rest: np.ndarray  # float16 (n, L): m_l per subset (0 where S_l keeps every class)
    owner: np.ndarray  # int64 (C,): the subset of each class

    def take(self, index) -> TopK:
        return TopK(self.k, self.values[index], self.classes[index], self.rest[index], self.owner)

    @staticmethod
    def concat(pieces: list[TopK]) -> TopK:
        first = pieces[0]
        return TopK(
            first.k, *(np.concatenate([getattr(p, f) for p in pieces]) for f in ("values", "classes", "rest")), first.owner
        )

    def dense(self, positions) -> np.ndarray:
        """(len(positions), C) float32 logits rebuilt in global class order."""
        rest = np.asarray(self.rest[positions], dtype=np.float32)
        out = rest[:, self.owner]
        np.put_along_axis(out, np.asarray(self.classes[positions], dtype=np.int64), np.asarray(self.values[positions], dtype=np.float32), axis=1)
        return out


@dataclass(eq=False)
class TeacherRows:
    """The teacher signal of one part, column-wise; row k describes sample_ids[k].

    A full cache has `logits`; a top-k cache has `topk` instead (and `logits`
    None). `dense` gives either as float32 logits in global class order.
    With `views` > 1 each row holds the signal of that many augmented views,
    view by view (`logits` (n, views x C)), and `view_params` (n, views x 9)
    their parameters; `dense` then takes the view of each row.
    """

    sample_ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int64 (n,)
    subsets: np.ndarray  # int32 (n,)
    logits: np.ndarray | None  # float16 (n, C), global class order
    confidence: np.ndarray  # float32 (n,)
    topk: TopK | None = None
    views: int = 1
    view_params: np.ndarray | None = None  # float32 (n, views x VIEW_WIDTH) when views > 1
    # (the sample_ids array it was computed for, argsort or None when already sorted)
    _index: tuple | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return int(np.shape(self.sample_ids)[0])

    @property
    def num_classes(self) -> int:
        return int(self.topk.owner.size if self.topk is not None else np.shape(self.logits)[1] // self.views)

    def dense(self, positions, views=None) -> np.ndarray:
        """The rows at `positions` as (len(positions), C) float32 logits; `views`: each row's view (views cache only)."""
        if self.views == 1:
            signal = self.topk if self.topk is not None else self.logits
            return signal.dense(positions) if self.topk is not None else np.asarray(signal[positions], dtype=np.float32)
        if views is None:
            raise ValueError(f"these rows hold {self.views} views per sample: name the view of each row")
        positions, views = np.asarray(positions), np.asarray(views)

        def pick(array: np.ndarray) -> np.ndarray:  # (n, V x w) -> the w columns of each row's view
            return array.reshape(array.shape[0], self.views, -1)[positions, views]

        if self.topk is not None:
            t = self.topk
            return TopK(t.k, pick(t.values), pick(t.classes), pick(t.rest), t.owner).dense(np.arange(positions.size))
        return np.asarray(pick(self.logits), dtype=np.float32)

    def take(self, index) -> TeacherRows:
        """The rows at `index` (a slice gives views, an index array copies)."""
        return TeacherRows(
            self.sample_ids[index],
            self.labels[index],
            self.subsets[index],
            None if self.logits is None else self.logits[index],
            self.confidence[index],
            None if self.topk is None else self.topk.take(index),
            self.views,
            None if self.view_params is None else self.view_params[index],
        )

    def slice(self, start: int, stop: int) -> TeacherRows:
        """Rows start..stop-1 (views, no copy)."""
        return self.take(slice(start, stop))

    @staticmethod
    def concat(pieces: list[TeacherRows]) -> TeacherRows:
        """The pieces (at least one) one after another."""
        cat = {f: np.concatenate([getattr(p, f) for p in pieces]) for f in ("sample_ids", "labels", "subsets", "confidence")}
        first = pieces[0]
        if first.view_params is not None:
            cat.update(views=first.views, view_params=np.concatenate([p.view_params for p in pieces]))
        if first.topk is not None:
            return TeacherRows(logits=None, topk=TopK.concat([p.topk for p in pieces]), **cat)
        return TeacherRows(logits=np.concatenate([p.logits for p in pieces]), **cat)

    def rows_for(self, sample_ids) -> np.ndarray:
        """Row positions (int64) of `sample_ids`, in the order given.

        Vectorised binary search on the sorted ids (rows read from a cache are
        sorted by sample_id; unsorted rows are searched through an argsort
        computed once). Raises KeyError naming the first id not present.
        """
        ids = np.asarray(self.sample_ids)
        query = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if self._index is None or self._index[0] is not self.sample_ids:
            is_sorted = ids.size < 2 or bool(np.all(ids[1:] > ids[:-1]))
            self._index = (self.sample_ids, None if is_sorted else np.argsort(ids, kind="stable"))
        sorter = self._index[1]
        if ids.size == 0:
            if query.size:
                raise KeyError(f"sample_id {int(query[0])} is not in the teacher cache (it holds no rows)")
            return np.empty(0, dtype=np.int64)
        pos = np.searchsorted(ids, query, sorter=sorter)
        pos = np.minimum(pos, ids.size - 1)
        if sorter is not None:
            pos = sorter[pos]
        hit = ids[pos] == query
        if not hit.all():
            missing = int(query[np.argmin(hit)])
            raise KeyError(f"sample_id {missing} is not in the teacher cache ({ids.size} rows)")
        return pos.astype(np.int64, copy=False)


# ------------------------------------------------------------------------ helpers


def _normalise_subsets(subsets) -> list[dict]:
    """Accept lfme.subsets.Subset objects, {"name", "classes"} dicts or (name, classes) pairs."""
    out = []
    for s in subsets:
        if isinstance(s, dict):
            name, classes = s["name"], s["classes"]
        elif hasattr(s, "name") and hasattr(s, "classes"):
            name, classes = s.name, s.classes
        else:
            name, classes = s
        out.append({"name": str(name), "classes": sorted(int(c) for c in classes)})
    return out


def _normalise_experts(experts) -> dict[str, dict]:
    """name -> {"sha256": hex, ...}; a bare string value is taken as the sha256."""
    out = {}
    for name, info in dict(experts).items():
        if isinstance(info, str):
            info = {"sha256": info}
        else:
            info = dict(info)
        if not isinstance(info.get("sha256"), str):
            raise ValueError(f"expert {name!r} has no sha256 string: {info!r}")
        out[str(name)] = info
    return out


def _validate_subsets(subsets: list[dict], num_classes: int) -> np.ndarray:
    """Subsets must partition 0..C-1; returns class -> subset index."""
    if not subsets or num_classes < 1:
        raise ValueError("subsets is empty: the cache needs the experts' subsets of classes")
    owner = np.full(num_classes, -1, dtype=np.int64)
    for i, s in enumerate(subsets):
        for c in s["classes"]:
            if not 0 <= c < num_classes:
                raise ValueError(f"subset {s['name']!r} lists class {c}, outside 0..{num_classes - 1}")
            if owner[c] >= 0:
                raise ValueError(f"class {c} is in subsets {subsets[owner[c]]['name']!r} and {s['name']!r}")
            owner[c] = i
    if (owner < 0).any():
        raise ValueError(
            f"class {int(np.argmin(owner))} is in no subset: the subsets must cover all {num_classes} classes"
        )
    return owner


def _as_int_column(values, part: str, name: str, n: int | None, dtype) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"part {part!r}: field {name!r} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"part {part!r}: field {name!r} has {arr.shape[0]} rows, sample_ids has {n}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"part {part!r}: field {name!r} must be integer, got dtype {arr.dtype}")
    out = arr.astype(dtype)
    if arr.size and not np.array_equal(out, arr):
        raise ValueError(f"part {part!r}: field {name!r} does not fit {np.dtype(dtype)}")
    return out


def _validate_logits(part: str, values, shape: tuple[int, int], name: str) -> np.ndarray:
    """Logit-like values of a part: the shape given, floating point, finite in float16; returned as float16."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape != shape:
        raise ValueError(f"part {part!r}: field {name!r} must have shape {shape}, got {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"part {part!r}: field {name!r} must be floating point, got dtype {values.dtype}")
    values = values.astype(np.float16, copy=False)
    if values.size and not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(
            f"part {part!r}: field {name!r} is not finite in float16 at row {int(bad[0])} column {int(bad[1])} "
            f"(|x| > 65504 overflows float16)"
        )
    return values


def _validate_topk(part: str, topk: TopK, n: int, owner: np.ndarray) -> TopK:
    """A top-k signal of n rows: its widths those of its k and the subsets, each kept class in its subset's columns."""
    if not np.array_equal(np.asarray(topk.owner), owner):
        raise ValueError(f"part {part!r}: the top-k signal was computed for other subsets")
    sizes = np.bincount(owner, minlength=int(owner.max()) + 1)
    kept = np.minimum(int(topk.k), sizes)
    width = int(kept.sum())
    values = _validate_logits(part, topk.values, (n, width), "topk_logits")
    rest = _validate_logits(part, topk.rest, (n, len(sizes)), "rest_logits")
    classes = np.asarray(topk.classes)
    if classes.shape != (n, width) or (classes.size and not np.issubdtype(classes.dtype, np.integer)):
        raise ValueError(f"part {part!r}: field 'topk_classes' must be integer of shape {(n, width)}, got {classes.dtype} {classes.shape}")
    if n:
        column_subset = np.repeat(np.arange(len(sizes)), kept)
        if classes.min() < 0 or classes.max() >= owner.size or (owner[classes] != column_subset).any():
            raise ValueError(f"part {part!r}: field 'topk_classes' holds a class outside its column's subset")
    return TopK(int(topk.k), values, classes.astype(np.int32), rest, owner)


def _validate_part(part: str, rows: TeacherRows, owner: np.ndarray) -> TeacherRows:
    """Check shapes, dtypes and values of one part; return it cast and sorted by sample_id."""
    if not isinstance(part, str) or not _PART_NAME.match(part):
        raise ValueError(f"part name {part!r} must match {_PART_NAME.pattern} (it names the shard files)")
    num_classes = owner.size
    ids = _as_int_column(rows.sample_ids, part, "sample_ids", None, np.int64)
    n = ids.shape[0]
    labels = _as_int_column(rows.labels, part, "labels", n, np.int64)
    subsets = _as_int_column(rows.subsets, part, "subsets", n, np.int32)

    views = int(rows.views)
    if views < 1:
        raise ValueError(f"part {part!r}: views must be >= 1, got {views}")
    if rows.topk is not None:
        # Each view's signal is checked as a row of its own.
        t = rows.topk
        arrays = [np.asarray(a) for a in (t.values, t.classes, t.rest)]
        if any(a.ndim != 2 or a.shape[1] % views for a in arrays):
            raise ValueError(f"part {part!r}: the top-k arrays must be 2-D with {views} views per row")
        per_view = TopK(t.k, *(a.reshape(n * views, a.shape[1] // views) for a in arrays), t.owner)
        checked = _validate_topk(part, per_view, n * views, owner)
        logits = None
        topk = TopK(checked.k, *(a.reshape(n, a.shape[1] * views) for a in (checked.values, checked.classes, checked.rest)), owner)
    else:
        logits, topk = _validate_logits(part, rows.logits, (n, views * num_classes), "logits"), None
    view_params = None
    if views > 1:
        view_params = np.asarray(rows.view_params if rows.view_params is not None else np.zeros((n, 0)), dtype=np.float32)
        if view_params.shape != (n, views * VIEW_WIDTH) or not np.isfinite(view_params).all():
            raise ValueError(f"part {part!r}: field 'view_params' must be finite of shape {(n, views * VIEW_WIDTH)}, got {view_params.shape}")

    conf = np.asarray(rows.confidence)
    if conf.ndim != 1 or conf.shape[0] != n:
        raise ValueError(f"part {part!r}: field 'confidence' must have shape ({n},), got {conf.shape}")
    if conf.size and not np.issubdtype(conf.dtype, np.floating):
        raise ValueError(f"part {part!r}: field 'confidence' must be floating point, got dtype {conf.dtype}")
    conf = conf.astype(np.float32, copy=False)
    if n and not ((conf >= 0) & (conf <= 1)).all():
        k = int(np.argmin((conf >= 0) & (conf <= 1)))
        raise ValueError(f"part {part!r}: field 'confidence' must lie in [0, 1], row {k} has {conf[k]!r}")

    if n:
        if labels.min() < 0 or labels.max() >= num_classes:
            k = int(np.argmax((labels < 0) | (labels >= num_classes)))
            raise ValueError(f"part {part!r}: field 'labels' row {k} is {labels[k]}, outside 0..{num_classes - 1}")
        wrong = owner[labels] != subsets
        if wrong.any():
            k = int(np.argmax(wrong))
            raise ValueError(
                f"part {part!r}: field 'subsets' row {k} is {subsets[k]} but label {labels[k]} "
                f"belongs to subset {int(owner[labels[k]])}"
            )

    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if n > 1:
        dup = ids[1:] == ids[:-1]
        if dup.any():
            raise ValueError(f"part {part!r}: duplicate sample_id {int(ids[1:][np.argmax(dup)])}")
    clean = TeacherRows(ids, labels, subsets, logits, conf, topk, views, view_params)
    identity = n == 0 or np.array_equal(order, np.arange(n))
    if identity:
        return clean
    clean = clean.take(order)
    clean.sample_ids = ids
    return clean


def _fixed_size_list(values: np.ndarray, arrow_type) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=arrow_type)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _to_table(rows: TeacherRows, schema: pa.Schema) -> pa.Table:
    if rows.topk is None:
        signal = [_fixed_size_list(rows.logits, pa.float16())]
    else:
        t = rows.topk
        signal = [_fixed_size_list(t.values, pa.float16()), _fixed_size_list(t.classes, pa.int32()), _fixed_size_list(t.rest, pa.float16())]
    if rows.views > 1:
        signal.append(_fixed_size_list(rows.view_params, pa.float32()))
    return pa.Table.from_arrays(
        [
            pa.array(rows.sample_ids, type=pa.int64()),
            pa.array(rows.labels, type=pa.int64()),
            pa.array(rows.subsets, type=pa.int32()),
            *signal,
            pa.array(rows.confidence, type=pa.float32()),
        ],
        schema=schema,
    )


def _write_shard(table: pa.Table, location: str) -> tuple[int, str]:
    """Write one shard; returns its size in bytes and SHA-256, which the manifest records.

    A shard (at most `shard_rows` rows) is built in memory, hashed, then written
    atomically.
    """
    buffer = io.BytesIO()
    # No dictionary for logits/confidence: float16 has only 65536 values, so
    # Parquet's dictionary encoding "succeeds" on logits and makes decoding
    # ~4x slower (measured: 100k x 1000 logits read in ~4.2 s with it,
    # ~1.0 s without). Random-ish float16 does not compress, hence none.
    pq.write_table(
        table,
        buffer,
        compression="none",
        use_dictionary=["label", "subset"],
        write_statistics=["sample_id", "label", "subset"],
    )
    data = buffer.getvalue()
    storage.write_bytes_atomic(location, data)
    return len(data), hashlib.sha256(data).hexdigest()


def _write_manifest(directory: str, manifest: dict) -> None:
    storage.write_json_atomic(storage.join(directory, MANIFEST_NAME), manifest)
    storage.sync_directory(directory)


def _remove_unreferenced(directory: str, keep: str) -> list[str]:
    """Delete data dirs (data-*) and stale temp manifests other than `keep`; returns what was removed."""
    removed = []
    for entry in storage.list_names(directory):
        stale_data = entry.startswith(DATA_DIR_PREFIX)
        stale_manifest = entry.startswith(f".{MANIFEST_NAME}.") and entry.endswith(".tmp")
        if entry != keep and (stale_data or stale_manifest):
            storage.remove(storage.join(directory, entry))
            removed.append(entry)
    return removed


# -------------------------------------------------------------------------- write
#
# A cache is written in three steps, so that shards can be written where the
# logits are computed (the cache stage's tasks) and no process ever holds more
# than a shard: `new_data_dir` names a fresh data directory, `write_shard`
# writes one shard into it (anywhere, any process), `commit_cache` checks the
# shards' records and replaces the manifest. `write_cache` is the three for rows at hand.


def _shard_schema(num_classes: int, fingerprint: str, top_k: tuple[int, int] | None = None, views: int = 1) -> pa.Schema:
    return arrow_schema(num_classes, top_k, views).with_metadata(
        {SCHEMA_METADATA_KEY: json.dumps({"format": FORMAT, "num_classes": num_classes, "fingerprint": fingerprint})}
    )


def _check_fingerprint(fingerprint) -> None:
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")


def new_data_dir(fingerprint: str) -> str:
    """A data directory name no other write uses (`data-<fingerprint>-<random>`)."""
    _check_fingerprint(fingerprint)
    safe_fp = re.sub(r"[^A-Za-z0-9_.-]", "_", fingerprint[:12])
    return f"{DATA_DIR_PREFIX}{safe_fp}-{uuid.uuid4().hex[:8]}"


def write_shard(directory, data_dir: str, part: str, index: int, rows: TeacherRows, *, fingerprint: str, subsets) -> dict:
    """Write shard `index` of `part` into `directory/data_dir`; returns what `commit_cache` needs about it.

    The rows are validated against the subsets (see `write_cache`) and sorted
    by sample_id. Shards of a part must cover increasing, disjoint ranges of
    sample ids in index order; `commit_cache` checks that.
    """
    _check_fingerprint(fingerprint)
    subset_list = _normalise_subsets(subsets)
    num_classes = sum(len(s["classes"]) for s in subset_list)
    clean = _validate_part(part, rows, _validate_subsets(subset_list, num_classes))
    name = f"{part}-{int(index):05d}.parquet"
    top_k = None if clean.topk is None else clean.topk.k
    shape = None if top_k is None else top_k_shape(top_k, subset_list)
    schema = _shard_schema(num_classes, fingerprint, shape, clean.views)
    size, digest = _write_shard(_to_table(clean, schema), storage.join(directory, data_dir, name))
    ids = clean.sample_ids
    return {
        "part": part,
        "top_k": top_k,
        "views": clean.views,
        "index": int(index),
        "name": name,
        "rows": len(clean),
        "bytes": size,
        "sha256": digest,
        "first_id": int(ids[0]) if len(ids) else None,
        "last_id": int(ids[-1]) if len(ids) else None,
    }


def commit_cache(directory, data_dir: str, shards: list[dict], *, fingerprint: str, subsets, experts: dict, extra: dict | None = None) -> dict:
    """Make the shards written into `directory/data_dir` the cache: write the manifest, drop older data.

    `shards`: `write_shard`'s results, in any order. Each part's indices must
    run 0..k-1 and its shards' sample ids must increase from shard to shard
    (so the part is sorted by unique sample_id as a whole).
    """
    _check_fingerprint(fingerprint)
    if not shards:
        raise ValueError("no shards: nothing to cache")
    subset_list = _normalise_subsets(subsets)
    expert_map = _normalise_experts(experts)
    num_classes = sum(len(s["classes"]) for s in subset_list)
    _validate_subsets(subset_list, num_classes)
    top_k = {s.get("top_k") for s in shards}
    if len(top_k) > 1:
        raise ValueError(f"the shards mix top_k values {sorted(top_k, key=str)}: one cache has one")
    top_k = top_k.pop()
    manifest_parts = {}
    for part in sorted({s["part"] for s in shards}):
        ordered = sorted((s for s in shards if s["part"] == part), key=lambda s: s["index"])
        if [s["index"] for s in ordered] != list(range(len(ordered))):
            raise ValueError(f"part {part!r}: shard indices {[s['index'] for s in ordered]} are not 0..{len(ordered) - 1}")
        views = {s.get("views", 1) for s in ordered}
        if len(views) > 1:
            raise ValueError(f"part {part!r}: the shards mix views {sorted(views)}: one part has one")
        last = None
        for s in ordered:
            if s["first_id"] is None:
                continue
            if last is not None and s["first_id"] <= last:
                raise ValueError(
                    f"part {part!r}: shard {s['name']} starts at sample_id {s['first_id']}, not after {last}, "
                    "the last id of the shard before it"
                )
            last = s["last_id"]
        manifest_parts[part] = {
            "rows": sum(s["rows"] for s in ordered),
            "shards": [s["name"] for s in ordered],
            "shard_rows": [s["rows"] for s in ordered],
            "shard_bytes": [s["bytes"] for s in ordered],
            "shard_sha256": [s["sha256"] for s in ordered],
            **({"views": views.pop()} if views != {1} else {}),
        }
    directory = str(directory)
    storage.sync_directory(storage.join(directory, data_dir))
    manifest = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "num_classes": num_classes,
        "subsets": subset_list,
        "experts": expert_map,
        "data_dir": data_dir,
        "parts": manifest_parts,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    if top_k is not None:
        manifest["top_k"] = top_k
    _write_manifest(directory, manifest)
    _remove_unreferenced(directory, keep=data_dir)
    return manifest


def discard_data_dir(directory, data_dir: str) -> None:
    """Remove the data directory of a failed write, unless the manifest already points to it.

    A write can fail after its manifest replaced the old one (Ctrl-C or an
    error while `commit_cache` removes the old data): the new cache is then
    the current one and complete, and removing its data would leave a
    manifest without shards. Called while an error is on its way up, it never
    raises one of its own: a folder it cannot check or remove stays, and the
    next commit removes it with the other unreferenced data.
    """
    try:
        try:
            committed = read_manifest(directory).get("data_dir") == data_dir
        except (FileNotFoundError, ValueError):  # no cache yet, or not one of ours: not committed
            committed = False
        if not committed:
            storage.remove(storage.join(directory, data_dir))
    except Exception:  # noqa: BLE001 - e.g. storage unreachable now; see above
        pass


def write_cache(
    directory,
    parts: dict[str, TeacherRows],
    *,
    fingerprint: str,
    subsets,
    experts: dict,
    shard_rows: int = 100_000,
    extra: dict | None = None,
) -> dict:
    """Write a complete teacher cache from rows in memory to `directory` and return its manifest.

    `subsets`: the experts' subsets in order (Subset objects, {"name", "classes"}
    dicts or (name, classes) pairs); they must partition 0..C-1 and row k's
    `subsets[k]` must be the index of the subset holding `labels[k]`.
    `experts`: name -> {"sha256": ...} (or name -> sha256 string).
    Rows are sorted by sample_id; duplicate ids are rejected. The previous
    cache in `directory` stays readable until the new manifest replaces it.
    """
    _check_fingerprint(fingerprint)
    if int(shard_rows) < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    shard_rows = int(shard_rows)
    if not parts:
        raise ValueError("parts is empty: nothing to cache")
    subset_list = _normalise_subsets(subsets)
    _normalise_experts(experts)
    # C is fixed by the subsets (they partition 0..C-1); every part's logits must be C wide.
    owner = _validate_subsets(subset_list, sum(len(s["classes"]) for s in subset_list))
    # Validated and sorted whole before anything is written, so a bad part fails fast.
    clean = {part: _validate_part(part, rows, owner) for part, rows in parts.items()}

    directory = str(directory)
    data_dir = new_data_dir(fingerprint)
    try:
        written = []
        for part, rows in clean.items():
            # An empty part still gets one (empty) shard, so its schema is on disk.
            for k, start in enumerate(range(0, max(len(rows), 1), shard_rows)):
                written.append(write_shard(directory, data_dir, part, k, rows.slice(start, start + shard_rows), fingerprint=fingerprint, subsets=subset_list))
        return commit_cache(directory, data_dir, written, fingerprint=fingerprint, subsets=subset_list, experts=experts, extra=extra)
    except BaseException:
        # The old manifest (if any) was not touched: drop only our half-written data.
        discard_data_dir(directory, data_dir)
        raise


# --------------------------------------------------------------------------- read


def read_manifest(directory) -> dict:
    """Parse `directory/manifest.json`; FileNotFoundError when absent, ValueError when not this format."""
    path = storage.join(directory, MANIFEST_NAME)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no teacher cache manifest at {path}: run the cache stage first to build the teacher cache"
        ) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"teacher cache manifest {path} is not valid JSON: {e}") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"teacher cache manifest {path} has unknown format {fmt!r}, expected {FORMAT!r}")
    return manifest


def _check_expected(directory, manifest: dict, expected_fingerprint, expected_experts) -> None:
    hint = "rerun the cache stage"
    if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
        raise CacheMismatchError(
            f"teacher cache at {directory} has fingerprint {manifest['fingerprint']!r} but "
            f"{expected_fingerprint!r} was expected: the cache was built from other experts/data; {hint}"
        )
    if expected_experts is not None:
        want = {k: v["sha256"] for k, v in _normalise_experts(expected_experts).items()}
        have = {k: v.get("sha256") for k, v in manifest.get("experts", {}).items()}
        for name in list(want) + [k for k in have if k not in want]:
            if want.get(name) != have.get(name):
                raise CacheMismatchError(
                    f"teacher cache at {directory} was built from other experts: expert {name!r} has sha256 "
                    f"{have.get(name)!r} in the cache but {want.get(name)!r} was expected; {hint}"
                )


def verify_cache(directory, *, expected_fingerprint: str | None = None, expected_experts=None) -> dict:
    """The manifest, after checking it was built from the expected experts (CacheMismatchError if not).

    Cheap (reads only the manifest): run it before starting work that reads the cache.
    """
    manifest = read_manifest(directory)
    _check_expected(directory, manifest, expected_fingerprint, expected_experts)
    return manifest


def _part_entry(directory: str, manifest: dict, part: str) -> dict:
    parts = manifest["parts"]
    if part not in parts:
        raise KeyError(f"teacher cache at {directory} has no part {part!r} (it has {sorted(parts)})")
    return parts[part]


def _read_shard(directory: str, manifest: dict, part: str, k: int) -> pa.Table:
    """Shard k of `part`, checked against the manifest (bytes, SHA-256, schema, fingerprint, rows)."""
    entry = manifest["parts"][part]
    path = storage.join(directory, manifest["data_dir"], entry["shards"][k])
    data = storage.read_bytes(path)
    digests = entry.get("shard_sha256")  # absent in caches written before checksums were recorded
    if digests is not None and hashlib.sha256(data).hexdigest() != digests[k]:
        raise CacheDamagedError(
            f"teacher cache shard {path} is damaged: {len(data)} bytes whose SHA-256 is not the one its manifest "
            f"recorded ({entry['shard_bytes'][k]} bytes); rerun the cache stage (lfme run rebuilds it)"
        )
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise CacheDamagedError(f"teacher cache shard {path} is unreadable ({err}); rerun the cache stage") from None
    got = [(f.name, f.type) for f in table.schema]
    want = [(f.name, f.type) for f in _part_schema(manifest, part)]
    if got != want:
        raise ValueError(f"shard {path} has columns {got}, expected {want}")
    meta = json.loads((table.schema.metadata or {}).get(SCHEMA_METADATA_KEY, b"{}"))
    if meta.get("fingerprint") != manifest["fingerprint"]:
        raise ValueError(
            f"shard {path} was written for fingerprint {meta.get('fingerprint')!r}, "
            f"the manifest says {manifest['fingerprint']!r}"
        )
    counts = entry.get("shard_rows")
    if counts is not None and table.num_rows != counts[k]:
        raise ValueError(f"shard {path} has {table.num_rows} rows, the manifest says {counts[k]}")
    if any(table.column(name).null_count for name in table.column_names):
        raise ValueError(f"shard {path} has null rows")
    return table


def _part_schema(manifest: dict, part: str) -> pa.Schema:
    top_k = manifest.get("top_k")
    shape = None if top_k is None else top_k_shape(top_k, manifest["subsets"])
    return arrow_schema(int(manifest["num_classes"]), shape, _part_views(manifest, part))


def _part_views(manifest: dict, part: str) -> int:
    return int(manifest["parts"].get(part, {}).get("views", 1))


def _owner(manifest: dict) -> np.ndarray:
    owner = np.empty(int(manifest["num_classes"]), dtype=np.int64)
    for l, s in enumerate(manifest["subsets"]):
        owner[s["classes"]] = l
    return owner


def _fixed_size_numpy(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size-list column (the logits) as an (n, width) array.

    float16 decode: measured on 100k x 1000 logits, the Parquet decode itself
    dominates (~1 s); turning the column into numpy costs ~0.05 s with
    combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape, vs
    ~0.07 s filling a preallocated array chunk by chunk, ~0.07 s concatenating
    per-chunk arrays and ~1.5 s via pandas + np.stack. We use the fastest.
    """
    col = table.column(name).combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)


def _rows_from(manifest: dict, part: str, wide: dict[str, np.ndarray], small: dict[str, np.ndarray]) -> TeacherRows:
    """A part's rows from its array columns (`_wide_columns`' names) and the small ones: full logits or top-k, as the manifest says."""
    views = {"views": _part_views(manifest, part), "view_params": wide.get("view_params")}
    if manifest.get("top_k") is not None:
        topk = TopK(int(manifest["top_k"]), wide["topk_logits"], wide["topk_classes"], wide["rest_logits"], _owner(manifest))
        return TeacherRows(logits=None, topk=topk, **small, **views)
    return TeacherRows(logits=wide["logits"], **small, **views)


def _small_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """Every column but the logits, as numpy, in TeacherRows' field names and dtypes."""
    return {
        "sample_ids": table.column("sample_id").to_numpy().astype(np.int64, copy=False),
        "labels": table.column("label").to_numpy().astype(np.int64, copy=False),
        "subsets": table.column("subset").to_numpy().astype(np.int32, copy=False),
        "confidence": table.column("confidence").to_numpy().astype(np.float32, copy=False),
    }


def _check_rows(directory: str, part: str, entry: dict, rows: TeacherRows) -> TeacherRows:
    if len(rows) != entry["rows"]:
        raise ValueError(f"part {part!r} of the teacher cache at {directory} has {len(rows)} rows in its shards, the manifest says {entry['rows']}")
    ids = rows.sample_ids
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        raise ValueError(f"part {part!r} of the teacher cache at {directory} is not sorted by unique sample_id")
    return rows


def _read_part(directory: str, manifest: dict, part: str) -> TeacherRows:
    entry = _part_entry(directory, manifest, part)
    tables = [_read_shard(directory, manifest, part, k) for k in range(len(entry["shards"]))]
    table = pa.concat_tables(tables) if tables else _part_schema(manifest, part).empty_table()
    wide = {name: _fixed_size_numpy(table, name) for name in _wide_columns(manifest, part)}
    return _check_rows(directory, part, entry, _rows_from(manifest, part, wide, _small_columns(table)))


def _with_current_manifest(directory: str, expected_fingerprint, expected_experts, read):
    """`read(manifest)` after checking the manifest, retried when a concurrent write replaced it mid-read."""
    manifest = read_manifest(directory)
    for attempt in range(3):
        _check_expected(directory, manifest, expected_fingerprint, expected_experts)
        try:
            return read(manifest)
        except FileNotFoundError:
            # A concurrent write_cache may have replaced the manifest and removed
            # the data dir we were reading; retry with the new manifest if so.
            newer = read_manifest(directory)
            if attempt == 2 or newer["data_dir"] == manifest["data_dir"]:
                raise
            manifest = newer
    raise AssertionError("unreachable")


def read_cache(directory, part: str, *, expected_fingerprint: str | None = None, expected_experts=None) -> TeacherRows:
    """Read one part of the cache through its manifest, into this process's memory.

    Raises CacheMismatchError when `expected_fingerprint` or `expected_experts`
    (name -> sha256) disagree with the manifest, KeyError for an unknown part,
    CacheDamagedError for a shard that is not the one written, ValueError when
    the shards disagree with the manifest otherwise.
    """
    directory = str(directory)
    return _with_current_manifest(directory, expected_fingerprint, expected_experts, lambda m: _read_part(directory, m, part))


# ------------------------------------------------------------ node-local, mapped

LOCAL_COLUMNS = "columns.npz"


def default_local_dir() -> str:
    """Where `map_cache` keeps node-local copies unless told otherwise: the system's temp folder."""
    return str(Path(tempfile.gettempdir()) / "lfme-teacher-cache")


def map_cache(
    directory, part: str, *, local_dir: str | None = None, expected_fingerprint: str | None = None, expected_experts=None
) -> TeacherRows:
    """Read one part as `read_cache` does, through a memory-mapped copy on this node.

    The first reader on a node copies the part's shards, checked as
    `read_cache` checks them and one at a time, into
    `local_dir/<cache id>/<data_dir>/<part>/`: each array column (the
    logits, or a top-k cache's three arrays) as one uncompressed `.npy` file,
    the small columns in `columns.npz`. Every reader on the node then maps
    those files, so the logits are in memory once per node however
    many workers or trials read them (the page cache is shared by every
    mapping, and a process's proportional set size counts a shared page once
    in all), and only the pages of the rows a worker touches are read.
    The copy is named by the manifest's data directory, which every write of
    the cache renews, so a rebuilt cache is never served from an old copy.
    Making a copy also removes what no reader can want any more: older copies
    of the same cache, and the copies of caches whose folder is gone (a run
    directory deleted). A process still mapping a removed copy keeps its
    pages until it exits.

    Returns rows whose array columns (`logits`, or the top-k arrays) are
    read-only `np.memmap`s.
    """
    directory = str(directory)
    local_root = Path(local_dir or default_local_dir()) / hashlib.sha256(storage.absolute(directory).encode()).hexdigest()[:16]
    return _with_current_manifest(
        directory, expected_fingerprint, expected_experts, lambda m: _map_part(directory, m, part, local_root)
    )


LOCAL_SOURCE = "source.txt"  # in a cache's node-local folder: the cache folder it copies


def _remove_stale_copies(directory: str, local_root: Path, data_dir: str) -> None:
    """Delete the other copies under `local_root` (older data dirs) and the node-local folders of caches that are gone.

    The other copies go only while `data_dir` is still the cache's current
    one: a reader that copied a version just replaced must not remove the
    copy of the newer one that other readers are mapping.
    """
    if read_manifest(directory)["data_dir"] == data_dir:
        for name in storage.list_names(str(local_root)):
            if name.startswith(DATA_DIR_PREFIX) and name != data_dir:
                storage.remove(str(local_root / name))
    for other in storage.list_names(str(local_root.parent)):
        source = str(local_root.parent / other / LOCAL_SOURCE)
        if other == local_root.name or not storage.is_file(source):
            continue
        try:
            read_manifest(storage.read_text(source))
        except FileNotFoundError:  # only a cache that is certainly gone; an unreachable one may come back
            storage.remove(str(local_root.parent / other))
        except Exception:  # noqa: BLE001 - unreadable or unreachable now: keep its copy
            pass


def signal_bytes_per_row(manifest: dict, part: str = "train") -> int:
    """Bytes of teacher signal per row of `part`, uncompressed: the C float16 logits, or a top-k cache's three arrays, per view, and the views' parameters."""
    return sum(width * np.dtype(dtype).itemsize for width, dtype in _wide_columns(manifest, part).values())


def _wide_columns(manifest: dict, part: str) -> dict[str, tuple[int, type]]:
    """The per-row array columns of `part`'s schema: name -> (width, numpy dtype)."""
    return {
        f.name: (f.type.list_size, f.type.value_type.to_pandas_dtype())
        for f in _part_schema(manifest, part)
        if pa.types.is_fixed_size_list(f.type)
    }


def _map_part(directory: str, manifest: dict, part: str, local_root: Path) -> TeacherRows:
    entry = _part_entry(directory, manifest, part)
    copy = local_root / manifest["data_dir"] / part
    if not copy.exists():
        # One lock per cache (never removed while in use): the copies of its versions and parts are made one at a time.
        with storage.local_lock(local_root / ".lock"):
            if not copy.exists():
                storage.write_text_atomic(str(local_root / LOCAL_SOURCE), storage.absolute(directory))
                with storage.atomic_local_directory(copy) as staging:
                    _copy_part(directory, manifest, part, staging)
                _remove_stale_copies(directory, local_root, manifest["data_dir"])
    with np.load(copy / LOCAL_COLUMNS) as columns:
        small = {name: columns[name] for name in columns.files}
    wide = {
        name: np.load(copy / f"{name}.npy", mmap_mode="r") if entry["rows"] else np.zeros((0, width), dtype)
        for name, (width, dtype) in _wide_columns(manifest, part).items()
    }
    return _check_rows(directory, part, entry, _rows_from(manifest, part, wide, small))


def _copy_part(directory: str, manifest: dict, part: str, target: Path) -> None:
    """The part's shards into `target`: one uncompressed .npy per array column, and the small columns; a shard at a time."""
    entry = manifest["parts"][part]
    rows = int(entry["rows"])
    wide = {
        name: np.lib.format.open_memmap(target / f"{name}.npy", mode="w+", dtype=dtype, shape=(rows, width))
        for name, (width, dtype) in _wide_columns(manifest, part).items()
    } if rows else {}
    columns, at = [], 0
    for k in range(len(entry["shards"])):
        table = _read_shard(directory, manifest, part, k)
        if table.num_rows:
            if at + table.num_rows > rows:
                raise ValueError(f"part {part!r} of the teacher cache at {directory} has more rows in its shards than the manifest's {rows}")
            for name, array in wide.items():
                array[at : at + table.num_rows] = _fixed_size_numpy(table, name)
        columns.append(_small_columns(table))
        at += table.num_rows
    for array in wide.values():
        array.flush()
    wide.clear()
    np.savez(target / LOCAL_COLUMNS, **{name: np.concatenate([c[name] for c in columns]) for name in columns[0]})
