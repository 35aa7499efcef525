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

Layout of a cache directory ``D``::

    D/manifest.json                 the only entry point for readers
    D/<data_dir>/<part>-NNNNN.parquet   shards of <= shard_rows rows, sorted by sample_id

``write_cache`` never touches the files the current manifest points to: it
writes a new, uniquely named data directory, then replaces ``manifest.json``
atomically, then deletes the data directories no manifest references. A
reader therefore sees either the old complete cache or the new complete one.
One writer at a time per directory is assumed (the pipeline's cache stage).

Framework-free on purpose (numpy + pyarrow + json): no Ray, no torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lfme import storage

FORMAT = "lfme-teacher-cache/1"
MANIFEST_NAME = "manifest.json"
SCHEMA_METADATA_KEY = b"lfme"
DATA_DIR_PREFIX = "data-"
COLUMNS = ("sample_id", "label", "subset", "logits", "confidence")
_PART_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class CacheMismatchError(ValueError):
    """The cache on disk was built from other experts or data than the caller expects."""


class CacheDamagedError(ValueError):
    """A shard on disk is not the one the manifest recorded (truncated, overwritten, unreadable)."""


def arrow_schema(num_classes: int) -> pa.Schema:
    """The documented Arrow schema of a part's table (without the `lfme` metadata)."""
    return pa.schema(
        [
            pa.field("sample_id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("subset", pa.int32(), nullable=False),
            pa.field("logits", pa.list_(pa.float16(), int(num_classes)), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
        ]
    )


# --------------------------------------------------------------------------- rows


@dataclass(eq=False)
class TeacherRows:
    """The teacher signal of one part, column-wise; row k describes sample_ids[k]."""

    sample_ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int64 (n,)
    subsets: np.ndarray  # int32 (n,)
    logits: np.ndarray  # float16 (n, C), global class order
    confidence: np.ndarray  # float32 (n,)
    # (the sample_ids array it was computed for, argsort or None when already sorted)
    _index: tuple | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return int(np.shape(self.sample_ids)[0])

    @property
    def num_classes(self) -> int:
        return int(np.shape(self.logits)[1])

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


def _validate_part(part: str, rows: TeacherRows, owner: np.ndarray) -> TeacherRows:
    """Check shapes, dtypes and values of one part; return it cast and sorted by sample_id."""
    if not isinstance(part, str) or not _PART_NAME.match(part):
        raise ValueError(f"part name {part!r} must match {_PART_NAME.pattern} (it names the shard files)")
    num_classes = owner.size
    ids = _as_int_column(rows.sample_ids, part, "sample_ids", None, np.int64)
    n = ids.shape[0]
    labels = _as_int_column(rows.labels, part, "labels", n, np.int64)
    subsets = _as_int_column(rows.subsets, part, "subsets", n, np.int32)

    logits = np.asarray(rows.logits)
    if logits.ndim != 2 or logits.shape != (n, num_classes):
        raise ValueError(
            f"part {part!r}: field 'logits' must have shape ({n}, {num_classes}), got {logits.shape}"
        )
    if not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(f"part {part!r}: field 'logits' must be floating point, got dtype {logits.dtype}")
    logits = logits.astype(np.float16, copy=False)
    if n and not np.isfinite(logits).all():
        bad = np.argwhere(~np.isfinite(logits))[0]
        raise ValueError(
            f"part {part!r}: field 'logits' is not finite in float16 at row {int(bad[0])} column {int(bad[1])} "
            f"(|x| > 65504 overflows float16)"
        )

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
    identity = n == 0 or np.array_equal(order, np.arange(n))
    if identity:
        return TeacherRows(ids, labels, subsets, logits, conf)
    return TeacherRows(ids, labels[order], subsets[order], logits[order], conf[order])


def _to_table(rows: TeacherRows, schema: pa.Schema) -> pa.Table:
    n, c = rows.logits.shape
    flat = pa.array(np.ascontiguousarray(rows.logits).reshape(-1), type=pa.float16())
    logits = pa.FixedSizeListArray.from_arrays(flat, c)
    return pa.Table.from_arrays(
        [
            pa.array(rows.sample_ids, type=pa.int64()),
            pa.array(rows.labels, type=pa.int64()),
            pa.array(rows.subsets, type=pa.int32()),
            logits,
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
    """Write a complete teacher cache to `directory` and return its manifest.

    `subsets`: the experts' subsets in order (Subset objects, {"name", "classes"}
    dicts or (name, classes) pairs); they must partition 0..C-1 and row k's
    `subsets[k]` must be the index of the subset holding `labels[k]`.
    `experts`: name -> {"sha256": ...} (or name -> sha256 string).
    Rows are sorted by sample_id; duplicate ids are rejected. The previous
    cache in `directory` stays readable until the new manifest replaces it.
    """
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
    if int(shard_rows) < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    shard_rows = int(shard_rows)
    if not parts:
        raise ValueError("parts is empty: nothing to cache")

    subset_list = _normalise_subsets(subsets)
    expert_map = _normalise_experts(experts)
    # C is fixed by the subsets (they partition 0..C-1); every part's logits must be C wide.
    num_classes = sum(len(s["classes"]) for s in subset_list)
    owner = _validate_subsets(subset_list, num_classes)
    clean = {part: _validate_part(part, rows, owner) for part, rows in parts.items()}

    directory = str(directory)
    safe_fp = re.sub(r"[^A-Za-z0-9_.-]", "_", fingerprint[:12])
    data_dir_name = f"{DATA_DIR_PREFIX}{safe_fp}-{uuid.uuid4().hex[:8]}"
    data_dir = storage.join(directory, data_dir_name)

    schema = arrow_schema(num_classes).with_metadata(
        {SCHEMA_METADATA_KEY: json.dumps({"format": FORMAT, "num_classes": num_classes, "fingerprint": fingerprint})}
    )
    manifest_parts = {}
    try:
        for part, rows in clean.items():
            n = len(rows)
            shards, counts, sizes, digests = [], [], [], []
            # An empty part still gets one (empty) shard, so its schema is on disk.
            for k, start in enumerate(range(0, max(n, 1), shard_rows)):
                stop = min(start + shard_rows, n)
                piece = TeacherRows(
                    rows.sample_ids[start:stop],
                    rows.labels[start:stop],
                    rows.subsets[start:stop],
                    rows.logits[start:stop],
                    rows.confidence[start:stop],
                )
                name = f"{part}-{k:05d}.parquet"
                size, digest = _write_shard(_to_table(piece, schema), storage.join(data_dir, name))
                shards.append(name)
                counts.append(stop - start)
                sizes.append(size)
                digests.append(digest)
            manifest_parts[part] = {
                "rows": n,
                "shards": shards,
                "shard_rows": counts,
                "shard_bytes": sizes,
                "shard_sha256": digests,
            }
        storage.sync_directory(data_dir)
        manifest = {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "num_classes": num_classes,
            "subsets": subset_list,
            "experts": expert_map,
            "data_dir": data_dir_name,
            "parts": manifest_parts,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "extra": dict(extra or {}),
        }
        _write_manifest(directory, manifest)
    except BaseException:
        # The old manifest (if any) was not touched: drop only our half-written data.
        storage.remove(data_dir)
        raise
    _remove_unreferenced(directory, keep=data_dir_name)
    return manifest


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


def _read_part(directory: str, manifest: dict, part: str) -> TeacherRows:
    parts = manifest["parts"]
    if part not in parts:
        raise KeyError(f"teacher cache at {directory} has no part {part!r} (it has {sorted(parts)})")
    entry = parts[part]
    num_classes = int(manifest["num_classes"])
    expected_schema = arrow_schema(num_classes)
    data_dir = storage.join(directory, manifest["data_dir"])
    counts = entry.get("shard_rows")
    digests = entry.get("shard_sha256")  # absent in caches written before checksums were recorded
    tables = []
    for k, name in enumerate(entry["shards"]):
        path = storage.join(data_dir, name)
        data = storage.read_bytes(path)
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
        want = [(f.name, f.type) for f in expected_schema]
        if got != want:
            raise ValueError(f"shard {path} has columns {got}, expected {want}")
        meta = json.loads((table.schema.metadata or {}).get(SCHEMA_METADATA_KEY, b"{}"))
        if meta.get("fingerprint") != manifest["fingerprint"]:
            raise ValueError(
                f"shard {path} was written for fingerprint {meta.get('fingerprint')!r}, "
                f"the manifest says {manifest['fingerprint']!r}"
            )
        if counts is not None and table.num_rows != counts[k]:
            raise ValueError(f"shard {path} has {table.num_rows} rows, the manifest says {counts[k]}")
        tables.append(table)
    table = pa.concat_tables(tables) if tables else expected_schema.empty_table()
    if table.num_rows != entry["rows"]:
        last = storage.join(data_dir, entry["shards"][-1]) if entry["shards"] else data_dir
        raise ValueError(
            f"part {part!r} has {table.num_rows} rows in its shards, the manifest says {entry['rows']} "
            f"(last shard {last})"
        )

    # float16 decode: measured on 100k x 1000 logits, the Parquet decode itself
    # dominates (~1 s); turning the column into numpy costs ~0.05 s with
    # combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape, vs
    # ~0.07 s filling a preallocated array chunk by chunk, ~0.07 s concatenating
    # per-chunk arrays and ~1.5 s via pandas + np.stack. We use the fastest.
    col = table.column("logits").combine_chunks()
    if col.null_count:
        raise ValueError(f"part {part!r} of the teacher cache at {directory} has null logits rows")
    logits = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_classes)
    rows = TeacherRows(
        sample_ids=table.column("sample_id").to_numpy().astype(np.int64, copy=False),
        labels=table.column("label").to_numpy().astype(np.int64, copy=False),
        subsets=table.column("subset").to_numpy().astype(np.int32, copy=False),
        logits=logits,
        confidence=table.column("confidence").to_numpy().astype(np.float32, copy=False),
    )
    ids = rows.sample_ids
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
        raise ValueError(f"part {part!r} of the teacher cache at {directory} is not sorted by unique sample_id")
    return rows


def read_cache(directory, part: str, *, expected_fingerprint: str | None = None, expected_experts=None) -> TeacherRows:
    """Read one part of the cache through its manifest.

    Raises CacheMismatchError when `expected_fingerprint` or `expected_experts`
    (name -> sha256) disagree with the manifest, KeyError for an unknown part,
    ValueError when the shards disagree with the manifest.
    """
    directory = str(directory)
    manifest = read_manifest(directory)
    for attempt in range(3):
        _check_expected(directory, manifest, expected_fingerprint, expected_experts)
        try:
            return _read_part(directory, manifest, part)
        except FileNotFoundError:
            # A concurrent write_cache may have replaced the manifest and removed
            # the data dir we were reading; retry with the new manifest if so.
            newer = read_manifest(directory)
            if attempt == 2 or newer["data_dir"] == manifest["data_dir"]:
                raise
            manifest = newer
    raise AssertionError("unreachable")
