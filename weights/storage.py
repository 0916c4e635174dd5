"""Outputs at an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///abs/path``,
``memory://...``): the object-storage counterpart of :mod:`weights.atomic`.

A plain path never comes here (callers test :func:`is_url` first), and fsspec is
imported only for a URL. Each file is written as one object: an object store's
PUT is atomic (a reader sees the whole object or none), so no temporary name is
needed; on a local filesystem (``file://``) the file goes through
:func:`weights.atomic.atomic_write` (temporary name, fsync, rename) as a plain
path does. Errors are one line (:class:`~weights.errors.OutputError`), naming
the package to install when fsspec, or the filesystem's own (s3fs, gcsfs), is
missing.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any, BinaryIO

from weights.atomic import atomic_write
from weights.errors import OutputError

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# object stores: a "folder" is only a prefix of names, nothing to create (makedirs on
# a bucket path would try to create the bucket)
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "b2"})


def is_url(target: object) -> bool:
    """``target`` is a ``scheme://...`` string (an fsspec URL), not a plain path."""
    return isinstance(target, str) and _URL.match(target) is not None


def join(url: str, name: str) -> str:
    """``url/name`` (one slash between)."""
    return f"{url.rstrip('/')}/{name}"


def _first_line(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    if isinstance(exc, OSError) and strerror:
        return strerror
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else "") or type(exc).__name__


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path on it; OutputError (one line) for an
    unknown protocol, or one whose package is missing (fsspec names it)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise OutputError(f"{url}: writing to a URL needs fsspec: pip install fsspec") from exc
    protocol = url.split("://", 1)[0]
    try:
        return url_to_fs(url)
    except ImportError as exc:  # fsspec's own words name the package: "Install s3fs to access S3"
        raise OutputError(f"{url}: {_first_line(exc)} (pip install it to write to {protocol}:// URLs)") from exc
    except ValueError as exc:
        if "protocol" in str(exc).lower():
            raise OutputError(f"{url}: unknown protocol {protocol!r} (fsspec does not know it)") from exc
        raise OutputError(f"{url}: not a usable URL: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - a filesystem that cannot start (hdfs without Java...)
        raise OutputError(f"{url}: cannot open the {protocol}:// filesystem: {_first_line(exc)}") from exc


def _protocols(fs: Any) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


def is_local(fs: Any) -> bool:
    """``fs`` is this machine's filesystem (``file://``): files can be renamed into place."""
    return bool(_protocols(fs) & {"file", "local"})


def write(url: str, writer: Callable[[BinaryIO], object]) -> None:
    """Write the object ``url`` through ``writer(file)``, all of it or nothing: one object
    (an atomic PUT), or on a local filesystem a temporary file renamed into place."""
    fs, path = filesystem(url)
    if is_local(fs):
        atomic_write(path, writer)
        return
    with fs.open(path, "wb") as f:
        writer(f)


def write_bytes(url: str, data: bytes) -> None:
    write(url, lambda f: f.write(data))


def read_bytes(url: str) -> bytes:
    """The object's bytes (OSError, e.g. FileNotFoundError, when it cannot be read)."""
    fs, path = filesystem(url)
    return fs.cat_file(path)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.isfile(path)


def remove(url: str) -> None:
    """Delete the object ``url``; nothing when it is not there."""
    fs, path = filesystem(url)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def names(url: str) -> set[str]:
    """The names of the objects directly under the prefix ``url``: one listing call (empty
    when the prefix holds nothing yet)."""
    fs, path = filesystem(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return set()
    return {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") != "directory"}


def check_writable(url: str) -> str:
    """The prefix ``url`` takes new objects: made where the filesystem has folders, then a
    small probe object written and deleted; else OutputError (one line), before any work."""
    fs, path = filesystem(url)
    try:
        if fs.isfile(path):
            raise OutputError(f"{url}: is a file, not a folder (the outputs go into a folder)")
        if not _protocols(fs) & OBJECT_STORES:
            fs.makedirs(path, exist_ok=True)
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any backend's error: one line
        raise OutputError(f"{url}: cannot create the output folder: {_first_line(exc)}") from exc
    probe = join(path, f".davel-write-check.{secrets.token_hex(4)}")
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:  # noqa: BLE001 - credentials, permissions, a missing bucket: one line
        raise OutputError(f"{url}: cannot write in the output location: {_first_line(exc)}") from exc
    return url
