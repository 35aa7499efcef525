"""The files a data config reads, and a signature of them that tells when the data changed.

The split stage's fingerprint covers the data *settings*; a data set changed
on disk under the same settings (images added to a class folder, a list file
edited) would otherwise be served from the old split, with every later stage
"up to date". So the split records the signature of its inputs
(`split/inputs.json`), and before skipping it the runner (and `lfme verify`)
compares the signature of the files as they are now: a difference reruns the
split and everything after it, with one line saying what changed.

What is signed, per source:
- list, annotation and Parquet files (`oltr` lists, `inat` JSON, `parquet`
  shards and classes file, the CIFAR batches): their content (SHA-256);
- image files (`imagefolder` trees, the images an `oltr` list or `inat` JSON
  names): their size and modification time, not their bytes (reading every
  image at each `lfme run` would cost as much as the split). A copy that
  does not keep modification times (`cp` without `-p`, `rsync` without `-t`)
  therefore counts as a change.
- `digits` (bundled with scikit-learn) and `synthetic` (generated from its
  settings, which the fingerprint holds) read no files.

Images are signed by folder: one entry per directory holding them (a class
folder of an ImageFolder tree), with its file count, total bytes and a digest
of (name, size, mtime) of each file; a content-signed file is an entry of its
own. Changes are described entry by entry (`describe_changes`). The cost at
iNaturalist 2018 size is measured by `python -m benchmarks.signature`
(docs/RESULTS.md).

No torch here: `lfme verify` reads it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from collections.abc import Iterable

from lfme import storage
from lfme.choices import IMAGE_EXTENSIONS
from rundir.sections import DataConfig
from rundir.layout import split_inputs_file

FORMAT = 1
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}  # torchvision's base_folder


def _resolve(root: str | None, path: str) -> str:
    return path if os.path.isabs(path) or root is None else os.path.join(root, path)


def _image_root(cfg: DataConfig) -> str:
    """The root the image paths of `cfg` are relative to, which every source that reads image files requires."""
    if cfg.root is None:
        raise ValueError(f"data.root: required for source '{cfg.source}'")
    return cfg.root


def _key(path: str, root: str | None) -> str:
    """A path as the signature names it: relative to the data root when under it."""
    if root is not None:
        relative = os.path.relpath(path, root)
        if not relative.startswith(".."):
            return relative
    return path


def content_files(cfg: DataConfig) -> list[str]:
    """The list, annotation and Parquet files the source reads (signed by content)."""
    root = cfg.root
    if cfg.source in ("oltr", "inat"):
        return [r for r in (_resolve(root, p) for p in (cfg.train, cfg.val, cfg.test) if p is not None) if r]
    if cfg.source == "parquet":
        files = []
        for pattern in (cfg.train, cfg.val, cfg.test):
            if pattern is not None:
                resolved = str(Path(_resolve(root, pattern)).expanduser())
                files += sorted(glob.glob(resolved)) if any(c in resolved for c in "*?[") else [resolved]
        return files + ([_resolve(root, cfg.classes_file)] if cfg.classes_file else [])
    if cfg.source in CIFAR_FOLDERS:
        folder = Path(root or "data").expanduser() / CIFAR_FOLDERS[cfg.source]
        return sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return []


def image_folders(cfg: DataConfig) -> dict[str, list[str]]:
    """The image files the source reads (signed by size and modification time), by folder relative to the root."""
    folders: dict[str, list[str]] = {}
    if cfg.source == "imagefolder":
        root = _image_root(cfg)
        for part in (cfg.train or "train", cfg.val, cfg.test or "test"):
            if part is not None and os.path.isdir(os.path.join(root, part)):
                for entry in os.scandir(os.path.join(root, part)):
                    if entry.is_dir():  # the class folders, as the source reads them
                        names = [f.name for f in os.scandir(entry.path) if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)]
                        folders[f"{part}/{entry.name}"] = names
        return folders
    readers = {"oltr": _oltr_paths, "inat": _inat_paths}
    for listing in content_files(cfg) if cfg.source in readers else []:
        for path in readers[cfg.source](listing):
            folder, _, name = path.rpartition("/")
            folders.setdefault(folder, []).append(name)
    return folders


def _oltr_paths(path: str) -> Iterable[str]:
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().rsplit(maxsplit=1)
                if len(parts) == 2:
                    yield parts[0]


def _inat_paths(path: str) -> Iterable[str]:
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for image in data.get("images", []) if isinstance(data, dict) else []:
            if isinstance(image, dict) and isinstance(image.get("file_name"), str):
                yield image["file_name"]


def data_signature(cfg: DataConfig) -> dict:
    """{"format", "entries": {name: {"files", "bytes", "digest"}}} of the files `cfg` reads now.

    A file that is missing is an entry with 0 files (the split itself names
    it as an error when it runs).
    """
    entries: dict[str, dict] = {}
    for path in content_files(cfg):
        name = _key(path, cfg.root)
        if os.path.isfile(path):
            entries[name] = {"files": 1, "bytes": os.path.getsize(path), "digest": storage.file_sha256(path)}
        else:
            entries[name] = {"files": 0, "bytes": 0, "digest": ""}
    for folder, names in image_folders(cfg).items():
        base = os.path.join(_image_root(cfg), folder)
        seen, files, size = [], 0, 0
        for name in sorted(names):
            try:
                stat = os.stat(os.path.join(base, name))
            except FileNotFoundError:
                seen.append(f"{name}\tmissing")
                continue
            seen.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
            files, size = files + 1, size + stat.st_size
        entries[f"{folder}/"] = {"files": files, "bytes": size, "digest": hashlib.sha256("\n".join(seen).encode()).hexdigest()}
    return {"format": FORMAT, "entries": dict(sorted(entries.items()))}


def describe_changes(before: dict, now: dict, limit: int = 3) -> list[str]:
    """What differs between two signatures, one phrase per entry (at most `limit`, then how many more)."""
    old, new = before.get("entries", {}), now.get("entries", {})
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or not a["files"]:
            changes.append(f"{name} is new ({b['files']} files)")
        elif b is None or not b["files"]:
            changes.append(f"{name} is gone ({a['files']} files before)")
        elif a["files"] != b["files"]:
            more = b["files"] - a["files"]
            changes.append(f"{name} has {abs(more)} files {'more' if more > 0 else 'fewer'} ({a['files']} -> {b['files']})")
        elif a["files"] == 1 and not name.endswith("/"):
            changes.append(f"{name} has other content")
        else:
            changes.append(f"{name} has files of other sizes or modification times ({a['files']} files)")
    if len(changes) > limit:
        changes = changes[:limit] + [f"and {len(changes) - limit} more"]
    return changes


def changes_since_split(run_dir: str, cfg: DataConfig) -> list[str]:
    """What changed in the data since the split recorded its inputs (nothing for a split that recorded none)."""
    location = split_inputs_file(run_dir)
    if not storage.exists(location):  # a split written before inputs were signed: trusted as it is
        return []
    return describe_changes(storage.read_json(location), data_signature(cfg))
