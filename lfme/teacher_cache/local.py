"""The node-local, memory-mapped copy of a teacher cache part that every reader on a node shares."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from lfme import storage
from lfme.teacher_cache.schema import DATA_DIR_PREFIX, TeacherRows
from lfme.teacher_cache.manifest import read_manifest
from lfme.teacher_cache.read import _check_rows, _fixed_size_numpy, _part_entry, _read_shard, _rows_from, _small_columns, _wide_columns, _with_current_manifest


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
        except Exception:  # unreadable or unreachable now: keep its copy
            pass


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
    # Numbers only: nothing to pickle. Named, allow_pickle is no column's name either (the type checker asks).
    np.savez(target / LOCAL_COLUMNS, allow_pickle=False, **{name: np.concatenate([c[name] for c in columns]) for name in columns[0]})
