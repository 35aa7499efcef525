"""The teacher cache's manifest: the only entry point of a cache, written last, read first and checked."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from lfme import storage
from lfme.teacher_cache.schema import _normalise_experts, arrow_schema, CacheMismatchError, FORMAT, MANIFEST_NAME, top_k_shape


def _write_manifest(directory: str, manifest: dict) -> None:
    storage.write_json_atomic(storage.join(directory, MANIFEST_NAME), manifest)
    storage.sync_directory(directory)


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


def _part_schema(manifest: dict, part: str) -> pa.Schema:
    top_k = manifest.get("top_k")
    shape = None if top_k is None else top_k_shape(top_k, manifest["subsets"])
    return arrow_schema(int(manifest["num_classes"]), shape, _part_views(manifest, part), _part_allot(manifest, part))


def _part_views(manifest: dict, part: str) -> int:
    return int(manifest["parts"].get(part, {}).get("views", 1))


def _part_allot(manifest: dict, part: str) -> str:
    return str(manifest["parts"].get(part, {}).get("allot", "uniform"))


def _owner(manifest: dict) -> np.ndarray:
    owner = np.empty(int(manifest["num_classes"]), dtype=np.int64)
    for l, s in enumerate(manifest["subsets"]):
        owner[s["classes"]] = l
    return owner
