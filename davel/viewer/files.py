"""Output files: checked before any work, written atomically, readable like any new file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from davel.viewer.errors import OutputError, reason


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


def _new_file_mode() -> int:
    # The temp file is created 0600; a figure or page is meant to be shared, so it
    # gets the mode open() would give (0666 less the umask), set before the rename.
    try:  # Linux says it without touching it; os.umask() would set it, briefly, process-wide
        status = Path("/proc/self/status").read_text()
        mask = int(next(l.split()[1] for l in status.splitlines() if l.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> Path:
    """``writer(f)`` into a temp file beside ``path``, then rename it over ``path``.

    On any failure ``path`` is left as it was and the temp file is removed; an
    OSError becomes an :class:`OutputError` with a one-line message.
    """
    from weights.store import atomic_write

    p = Path(path)
    mode = _new_file_mode()

    def write(f: BinaryIO) -> None:
        writer(f)
        f.flush()
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), mode)

    try:
        atomic_write(p, write)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {reason(exc)}") from None
    return p
