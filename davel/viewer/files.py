"""Output files: checked before any work, written atomically (weights.atomic: the umask's mode)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from davel.errors import OutputError
from weights.atomic import atomic_write


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any rendering, when ``path`` cannot be created."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory (give a file name)")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {p}: folder {parent} is not writable")


def write_atomic(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> Path:
    """``writer(f)`` into a temp file beside ``path``, then rename it over ``path``.

    On any failure ``path`` is left as it was and the temp file is removed; an
    OSError becomes an :class:`OutputError` with a one-line message.
    """
    p = Path(path)
    try:
        atomic_write(p, writer)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return p
