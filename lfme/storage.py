"""Where files go: local paths or any fsspec URL, written atomically.

A run directory may be a local path, a `file://` URL or an object-store URL
(`s3://bucket/run`, `gs://bucket/run`, anything fsspec reaches). Every file
the project leaves behind (manifest, split, models, cache shards, reports)
goes through this module, so no stage assumes a disk shared between nodes.

Locations are plain strings. `join` builds child locations ("/"-joined for
URLs, `os.path.join` for local paths), so a URL never passes through
`pathlib`, which would fold `s3://` into `s3:/`.

Atomicity, the property every reader relies on (a reader sees the old file or
the new one, never half of one):
- local: the content goes to a temporary file in the target's directory, is
  fsynced, then renamed over the target in one step;
- object stores: the content goes to a local temporary file, then is uploaded
  in one PUT (or one multipart upload): the object becomes visible whole when
  the upload completes, or not at all.

Credentials and endpoints are never configured here: fsspec's backends read
them from the environment (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, or an instance role), so nothing secret
is ever written into a config saved beside the results.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

import fsspec
from fsspec.implementations.local import LocalFileSystem

Location = str | os.PathLike


def is_url(location: Location) -> bool:
    return "://" in str(location)


def split_location(location: Location) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it); fsspec builds and caches the filesystem from the URL's scheme.

    Remote filesystems get no listings cache: Ray workers on other processes
    write into the run directory, and a cached listing would hide their files
    from the driver.
    """
    options = {"use_listings_cache": False} if is_url(location) and not str(location).startswith("file://") else {}
    try:
        return fsspec.core.url_to_fs(str(location), **options)
    except ImportError as err:  # e.g. s3fs or gcsfs not installed
        raise ImportError(f"{location}: no filesystem for this URL ({err})") from None


def local_path(location: Location) -> Optional[str]:
    """The path on this machine's disk for a local path or file:// URL; None for remote storage."""
    fs, path = split_location(location)
    return path if isinstance(fs, LocalFileSystem) else None


def is_local(location: Location) -> bool:
    return local_path(location) is not None


def join(location: Location, *parts: str) -> str:
    location = str(location)
    if is_url(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return os.path.join(location, *parts)


def name(location: Location) -> str:
    """The last component, like `Path.name`."""
    return posixpath.basename(str(location).rstrip("/"))


def absolute(location: Location) -> str:
    """Local paths made absolute (workers may run elsewhere); URLs unchanged but for a trailing slash."""
    location = str(location)
    if is_url(location):
        return location.rstrip("/")
    return str(Path(location).resolve())


# ---------------------------------------------------------------------- reading


def exists(location: Location) -> bool:
    fs, path = split_location(location)
    return fs.exists(path)


def is_file(location: Location) -> bool:
    fs, path = split_location(location)
    return fs.isfile(path)


def list_names(location: Location) -> list[str]:
    """Names of the entries directly inside a directory (prefix); [] when there is none."""
    fs, path = split_location(location)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)


@contextmanager
def open_input(location: Location) -> Iterator[BinaryIO]:
    """A binary file object to read from; FileNotFoundError names the location."""
    fs, path = split_location(location)
    try:
        f = fs.open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{location} not found") from None
    with f:
        yield f


def read_bytes(location: Location) -> bytes:
    with open_input(location) as f:
        return f.read()


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def read_json(location: Location) -> Any:
    return json.loads(read_text(location))


def load_torch(location: Location) -> Any:
    """A torch checkpoint (ours, written by `save_torch_atomic`: trusted, so full unpickling)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(location)), map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------- writing


@contextmanager
def atomic_file(location: Location) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces `location` only if the block succeeds."""
    target = local_path(location)
    if target is not None:
        with _atomic_local_file(Path(target)) as f:
            yield f
        return
    fs, path = split_location(location)
    with tempfile.NamedTemporaryFile(prefix="lfme-upload-", suffix=".tmp") as tmp:
        yield tmp
        tmp.flush()
        fs.put_file(tmp.name, path)


@contextmanager
def _atomic_local_file(path: Path) -> Iterator[BinaryIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(location: Location, data: bytes) -> str:
    with atomic_file(location) as f:
        f.write(data)
    return str(location)


def write_text_atomic(location: Location, text: str) -> str:
    return write_bytes_atomic(location, text.encode("utf-8"))


def write_json_atomic(location: Location, obj: Any) -> str:
    return write_text_atomic(location, json.dumps(obj, indent=2) + "\n")


def save_torch_atomic(location: Location, obj: Any) -> str:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(location, buffer.getvalue())


def sync_directory(location: Location) -> None:
    """Make renames inside a local directory durable; object stores have no directories to sync."""
    path = local_path(location)
    if path is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(location: Location) -> None:
    """Delete a file or a whole directory (prefix); nothing to delete is not an error."""
    path = local_path(location)
    if path is not None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
        return
    fs, path = split_location(location)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------- Ray


def arrow_filesystem(location: Location):
    """(storage_filesystem, storage_path) for Ray Train and Tune's RunConfig.

    Local storage: (None, absolute path), Ray's own default. Anything else:
    the same fsspec filesystem every other file of the run goes through,
    wrapped for pyarrow, so checkpoints reach the same bucket with the same
    credentials and endpoint as the manifest.
    """
    path = local_path(location)
    if path is not None:
        return None, str(Path(path).resolve())
    import pyarrow.fs

    fs, path = split_location(location)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
