"""Writing a teacher cache: rows validated, shards written where they are computed, the manifest committed."""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import uuid
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lfme import storage
from lfme.subsets import Subset
from lfme.teacher_cache.schema import ALLOTS, _normalise_experts, subset_records, _PART_NAME, _validate_subsets, arrow_schema, DATA_DIR_PREFIX, FORMAT, MANIFEST_NAME, SCHEMA_METADATA_KEY, TeacherRows, top_k_shape, TopK, VIEW_WIDTH
from lfme.teacher_cache.manifest import _write_manifest, read_manifest


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


def _validate_signal(part: str, rows: TeacherRows, n: int, owner: np.ndarray):
    """The teacher signal of n rows checked and cast: (logits or None, top-k or None, view parameters or None)."""
    num_classes = owner.size
    views = int(rows.views)
    if views < 1:
        raise ValueError(f"part {part!r}: views must be >= 1, got {views}")
    if rows.topk is not None:
        # Each view's signal is checked as a row of its own.
        t = rows.topk.map_arrays(np.asarray)
        if any(a.ndim != 2 or a.shape[1] % views for a in (t.values, t.classes, t.rest)):
            raise ValueError(f"part {part!r}: the top-k arrays must be 2-D with {views} views per row")
        per_view = t.map_arrays(lambda a: a.reshape(n * views, a.shape[1] // views))
        checked = _validate_topk(part, per_view, n * views, owner)
        logits = None
        topk = checked.map_arrays(lambda a: a.reshape(n, a.shape[1] * views))
    else:
        logits, topk = _validate_logits(part, rows.logits, (n, views * num_classes), "logits"), None
    view_params = None
    if rows.augmented:
        view_params = np.asarray(rows.view_params if rows.view_params is not None else np.zeros((n, 0)), dtype=np.float32)
        if view_params.shape != (n, views * VIEW_WIDTH) or not np.isfinite(view_params).all():
            raise ValueError(f"part {part!r}: field 'view_params' must be finite of shape {(n, views * VIEW_WIDTH)}, got {view_params.shape}")
    return logits, topk, view_params


def _validate_part(part: str, rows: TeacherRows, owner: np.ndarray) -> TeacherRows:
    """Check shapes, dtypes and values of one part; return it cast and sorted by sample_id."""
    if not isinstance(part, str) or not _PART_NAME.match(part):
        raise ValueError(f"part name {part!r} must match {_PART_NAME.pattern} (it names the shard files)")
    num_classes = owner.size
    ids = _as_int_column(rows.sample_ids, part, "sample_ids", None, np.int64)
    n = ids.shape[0]
    labels = _as_int_column(rows.labels, part, "labels", n, np.int64)
    subsets = _as_int_column(rows.subsets, part, "subsets", n, np.int32)

    if rows.allot not in ALLOTS:
        raise ValueError(f"part {part!r}: allot must be one of {ALLOTS}, got {rows.allot!r}")
    logits, topk, view_params = _validate_signal(part, rows, n, owner)
    views = int(rows.views)

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

    # Stable: the rows of one sample (allot draws) keep their order, the order of its views.
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if n > 1 and rows.allot == "uniform":
        dup = ids[1:] == ids[:-1]
        if dup.any():
            raise ValueError(f"part {part!r}: duplicate sample_id {int(ids[1:][np.argmax(dup)])}")
    clean = TeacherRows(ids, labels, subsets, logits, conf, topk, views, view_params, rows.allot)
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
        signal = [_fixed_size_list(rows.stored_logits(), pa.float16())]
    else:
        t = rows.topk
        signal = [_fixed_size_list(t.values, pa.float16()), _fixed_size_list(t.classes, pa.int32()), _fixed_size_list(t.rest, pa.float16())]
    if rows.augmented:
        assert rows.view_params is not None, "_validate_part gives rows of augmented views their view_params"
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


def _shard_schema(num_classes: int, fingerprint: str, top_k: tuple[int, int] | None = None, views: int = 1, allot: str = "uniform") -> pa.Schema:
    return arrow_schema(num_classes, top_k, views, allot).with_metadata(
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


def write_shard(directory, data_dir: str, part: str, index: int, rows: TeacherRows, *, fingerprint: str, subsets: Sequence[Subset]) -> dict:
    """Write shard `index` of `part` into `directory/data_dir`; returns what `commit_cache` needs about it.

    The rows are validated against the subsets (see `write_cache`) and sorted
    by sample_id. Shards of a part must cover increasing, disjoint ranges of
    sample ids in index order, except that with allot draws a sample's rows
    may continue into the next shard; `commit_cache` checks that.
    """
    _check_fingerprint(fingerprint)
    subset_list = subset_records(subsets)
    num_classes = sum(len(s["classes"]) for s in subset_list)
    clean = _validate_part(part, rows, _validate_subsets(subset_list, num_classes))
    name = f"{part}-{int(index):05d}.parquet"
    top_k = None if clean.topk is None else clean.topk.k
    shape = None if top_k is None else top_k_shape(top_k, subset_list)
    schema = _shard_schema(num_classes, fingerprint, shape, clean.views, clean.allot)
    size, digest = _write_shard(_to_table(clean, schema), storage.join(directory, data_dir, name))
    ids = clean.sample_ids
    return {
        "part": part,
        "top_k": top_k,
        "views": clean.views,
        "allot": clean.allot,
        "index": int(index),
        "name": name,
        "rows": len(clean),
        "bytes": size,
        "sha256": digest,
        "first_id": int(ids[0]) if len(ids) else None,
        "last_id": int(ids[-1]) if len(ids) else None,
    }


def _part_record(part: str, ordered: list[dict]) -> dict:
    """A part's manifest entry from its shards' records in index order, after checking they make one part."""
    if [s["index"] for s in ordered] != list(range(len(ordered))):
        raise ValueError(f"part {part!r}: shard indices {[s['index'] for s in ordered]} are not 0..{len(ordered) - 1}")
    views = {s.get("views", 1) for s in ordered}
    allots = {s.get("allot", "uniform") for s in ordered}
    if len(views) > 1 or len(allots) > 1:
        raise ValueError(f"part {part!r}: the shards mix views {sorted(views)} or allot {sorted(allots)}: one part has one")
    allot = allots.pop()
    last = None
    for s in ordered:
        if s["first_id"] is None:
            continue
        # With allot draws a sample's views may run on into the next shard: its first id may repeat the last.
        if last is not None and (s["first_id"] < last if allot == "draws" else s["first_id"] <= last):
            raise ValueError(
                f"part {part!r}: shard {s['name']} starts at sample_id {s['first_id']}, not after {last}, "
                "the last id of the shard before it"
            )
        last = s["last_id"]
    return {
        "rows": sum(s["rows"] for s in ordered),
        "shards": [s["name"] for s in ordered],
        "shard_rows": [s["rows"] for s in ordered],
        "shard_bytes": [s["bytes"] for s in ordered],
        "shard_sha256": [s["sha256"] for s in ordered],
        **({"views": views.pop()} if views != {1} else {}),
        **({"allot": allot} if allot != "uniform" else {}),
    }


def commit_cache(directory, data_dir: str, shards: list[dict], *, fingerprint: str, subsets: Sequence[Subset], experts: dict, extra: dict | None = None) -> dict:
    """Make the shards written into `directory/data_dir` the cache: write the manifest, drop older data.

    `shards`: `write_shard`'s results, in any order. Each part's indices must
    run 0..k-1 and its shards' sample ids must increase from shard to shard
    (so the part is sorted by unique sample_id as a whole).
    """
    _check_fingerprint(fingerprint)
    if not shards:
        raise ValueError("no shards: nothing to cache")
    subset_list = subset_records(subsets)
    expert_map = _normalise_experts(experts)
    num_classes = sum(len(s["classes"]) for s in subset_list)
    _validate_subsets(subset_list, num_classes)
    top_ks = {s.get("top_k") for s in shards}
    if len(top_ks) > 1:
        raise ValueError(f"the shards mix top_k values {sorted(top_ks, key=str)}: one cache has one")
    top_k = top_ks.pop()
    manifest_parts = {}
    for part in sorted({s["part"] for s in shards}):
        manifest_parts[part] = _part_record(part, sorted((s for s in shards if s["part"] == part), key=lambda s: s["index"]))
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
    except Exception:  # e.g. storage unreachable now; see above
        pass


def write_cache(
    directory,
    parts: dict[str, TeacherRows],
    *,
    fingerprint: str,
    subsets: Sequence[Subset],
    experts: dict,
    shard_rows: int = 100_000,
    extra: dict | None = None,
) -> dict:
    """Write a complete teacher cache from rows in memory to `directory` and return its manifest.

    `subsets`: the experts' subsets in order; they must partition 0..C-1 and row k's
    `subsets[k]` must be the index of the subset holding `labels[k]`.
    `experts`: name -> {"sha256": ...} (or name -> sha256 string).
    Rows are sorted by sample_id; duplicate ids are rejected, except in rows of
    allot draws, where a sample's views fill several rows (kept in their
    order, and free to straddle two shards). The previous
    cache in `directory` stays readable until the new manifest replaces it.
    """
    _check_fingerprint(fingerprint)
    if int(shard_rows) < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    shard_rows = int(shard_rows)
    if not parts:
        raise ValueError("parts is empty: nothing to cache")
    subset_list = subset_records(subsets)
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
                written.append(write_shard(directory, data_dir, part, k, rows.slice(start, start + shard_rows), fingerprint=fingerprint, subsets=subsets))
        return commit_cache(directory, data_dir, written, fingerprint=fingerprint, subsets=subsets, experts=experts, extra=extra)
    except BaseException:
        # The old manifest (if any) was not touched: drop only our half-written data.
        discard_data_dir(directory, data_dir)
        raise
