"""Writing files so that a reader never sees half of one, and a crash loses nothing written.

``atomic_write`` writes to a temporary file in the destination's folder,
flushes it to disk, renames it over the destination and flushes the folder, so
after a power cut the path holds either the old file or the complete new one.
The temporary file is created with mode 0o666 and the process's umask applies,
as for any file the user's tools create (``tempfile.mkstemp`` would give 0600).

``file_lock`` serialises read-modify-write updates of a shared file between
processes (e.g. several ``davel weights download`` at once).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

PART_SUFFIX = ".part"


def temp_path_for(path: Path) -> Path:
    """A fresh hidden name beside ``path``, ending in ``.part`` (left-overs are easy to spot)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``writer(file)``: all of it or nothing, durable once this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def umask_mode() -> int:
    """The mode a new file gets under the process's umask (0o666 & ~umask)."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished file that another library wrote (e.g. a download) into place:
    umask mode, flushed to disk, renamed, folder flushed."""
    tmp, path = Path(tmp), Path(path)
    os.chmod(tmp, umask_mode())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf8")))


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``<path>.lock`` for the block."""
    lock_path = Path(f"{os.fspath(path)}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path, timeout=timeout):
        yield
