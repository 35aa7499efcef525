"""Reading a part of a teacher cache into memory, every shard checked against its manifest."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lfme import storage
from lfme.teacher_cache.schema import CacheDamagedError, SCHEMA_METADATA_KEY, TeacherRows, TopK
from lfme.teacher_cache.manifest import _check_expected, _owner, _part_allot, _part_schema, _part_views, read_manifest


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
    topk = None
    if manifest.get("top_k") is not None:
        topk = TopK(int(manifest["top_k"]), wide["topk_logits"], wide["topk_classes"], wide["rest_logits"], _owner(manifest))
    return TeacherRows(
        sample_ids=small["sample_ids"],
        labels=small["labels"],
        subsets=small["subsets"],
        logits=None if topk is not None else wide["logits"],
        confidence=small["confidence"],
        topk=topk,
        views=_part_views(manifest, part),
        view_params=wide.get("view_params"),
        allot=_part_allot(manifest, part),
    )


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
    # Allot draws: a sample's views fill several rows, so ids repeat; they still never go down.
    ascending = ids[1:] >= ids[:-1] if rows.allot == "draws" else ids[1:] > ids[:-1]
    if ids.size > 1 and not np.all(ascending):
        raise ValueError(f"part {part!r} of the teacher cache at {directory} is not sorted by {'' if rows.allot == 'draws' else 'unique '}sample_id")
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
