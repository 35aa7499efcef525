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

import errno
import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO
from collections.abc import Iterator

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


def local_path(location: Location) -> str | None:
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
    """The whole file. An object replaced while it was being read (s3fs: FileExpired, EBUSY) is read again."""
    for attempt in range(3):
        try:
            with open_input(location) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as err:
            if attempt == 2 or err.errno != errno.EBUSY:
                raise
    raise AssertionError("unreachable")


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def read_json(location: Location) -> Any:
    return json.loads(read_text(location))


def load_torch(location: Location) -> Any:
    """A torch checkpoint (ours, written by `save_torch_atomic`: trusted, so full unpickling)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(location)), map_location="cpu", weights_only=False)


def file_sha256(location: Location, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (local or URL), read in chunks."""
    h = hashlib.sha256()
    with open_input(location) as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def list_files(location: Location) -> dict[str, int]:
    """Every file under a directory (prefix), as "/"-joined relative name -> size in bytes; {} when there is none."""
    fs, root = split_location(location)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    root = str(root).rstrip("/")
    return {posixpath.relpath(str(path), root): int(info["size"]) for path, info in sorted(found.items())}


# ---------------------------------------------------------------------- writing


@contextmanager
def atomic_file(location: Location) -> Iterator[IO[bytes]]:
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


# ------------------------------------------------------------------ node-local
# For copies a node keeps for itself (`lfme.teacher_cache.map_cache`): plain
# local paths, never a run directory's location.


@contextmanager
def local_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the local file `path` (created if absent) for the block; waits for other holders."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextmanager
def atomic_local_directory(path: Path) -> Iterator[Path]:
    """A staging folder the block fills; it becomes `path` only if the block succeeds (one rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        os.replace(staging, path)
        sync_directory(str(path.parent))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


# ------------------------------------------------------------ conditional writes
#
# What one-driver-per-run (pipeline.lease) stands on. Guaranteed atomic:
# - local: `create_exclusive` links a complete temporary file into place
#   (os.link fails if the name exists); `replace_if_version` compares and
#   replaces under an flock on a sibling lock file: atomic between processes
#   of one machine (not across machines sharing a network filesystem);
# - S3: a PUT with If-None-Match: * / If-Match: <ETag>, which S3 evaluates
#   atomically (moto too);
# - other fsspec backends (GCS, ...): the check and the write are two calls,
#   so two writers racing within one round trip can both pass.


def version(location: Location) -> str | None:
    """A token that changes whenever the file is rewritten (S3: its ETag); None when there is no file."""
    fs, path = split_location(location)
    local = local_path(location)
    if local is not None:
        try:
            st = os.stat(local)
        except FileNotFoundError:
            return None
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
    try:
        info = fs.info(path, refresh=True) if _is_s3(fs) else fs.info(path)
    except FileNotFoundError:
        return None
    return str(info.get("ETag") or info.get("generation") or info.get("mtime") or info.get("size"))


def create_exclusive(location: Location, data: bytes) -> bool:
    """Write `data` to `location` if nothing is there (True); leave what is there alone (False).

    Read the new file's `version` after: nothing replaces a file between its
    creation and that read unless another writer breaks the protocol.
    """
    local = local_path(location)
    if local is not None:
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, target)  # a reader sees the whole file or none
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
    fs, path = split_location(location)
    if _is_s3(fs):
        try:
            with fs.open(path, "xb") as f:  # If-None-Match: *
                f.write(data)
            return True
        except FileExistsError:
            return False
    if fs.exists(path):
        return False
    write_bytes_atomic(location, data)
    return True


def replace_if_version(location: Location, data: bytes, expected: str) -> str | None:
    """Replace the file with `data` if it is still at `expected` (from `version`).

    Returns the new file's version, or None (nothing written) when the file
    changed since `expected` or is gone.
    """
    local = local_path(location)
    if local is not None:
        import fcntl

        lock = Path(local).with_name(f".{Path(local).name}.lock")
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if version(location) != expected:
                    return None
                write_bytes_atomic(location, data)
                return version(location)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    fs, path = split_location(location)
    if _is_s3(fs):
        bucket, key, _ = fs.split_path(path)
        try:
            response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=expected)
        except OSError:  # 412 Precondition Failed, or 404: not ours any more
            return None
        fs.invalidate_cache(path)
        return str(response["ETag"])
    if version(location) != expected:
        return None
    write_bytes_atomic(location, data)
    return version(location)


def _is_s3(fs) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def copy_tree(source: Location, target: Location) -> list[str]:
    """Copy every file under `source` to the same relative place under `target`; returns the relative names.

    Works between any two storages (a local run into a bucket, or back): each
    file is written with `write_bytes_atomic`, so a reader of `target` never
    sees a half-written file. Whole files pass through memory, one at a time.
    """
    fs, root = split_location(source)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{source}: no such directory")
    names = []
    for path in sorted(fs.find(root)):
        relative = posixpath.relpath(str(path), str(root).rstrip("/"))
        with fs.open(path, "rb") as f:
            write_bytes_atomic(join(target, *relative.split("/")), f.read())
        names.append(relative)
    return names


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
