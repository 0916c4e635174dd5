"""Keeping a long extraction's memory at what it holds, not at what it once held.

glibc raises its mmap threshold each time a large block is freed, so later
frame- and tensor-sized buffers come from the heap and, once freed, stay in
the process (a 10-minute video reached many GB). Fixing the threshold at
128 KiB sends such buffers back to the system on free; ``malloc_trim`` after
each video returns what the heap still keeps.

Inside a network's forward pass (``network_pass``) the threshold goes up to
glibc's own ceiling: there every intermediate tensor would otherwise be a
fresh mmap with its pages faulted in again (a 2 s video at the standard
settings on a 2-core CPU: 153 s with the low threshold throughout, 91 s so).
The pass ends with ``malloc_trim``, which hands the pages it freed back, so
the heap does not grow from window to window (without it a 2-minute video
peaked at 2.4x a 10 s one; with it 1.06x).

All of this changes the whole process, so it is opt-in:
``FeatureExtractor(tune_allocator=True)`` (which ``davel extract``,
``davel detect`` and the feature cache ask for) calls
:func:`configure_allocator` on its first video and trims after each; a plain
``FeatureExtractor`` calls nothing here and leaves glibc as it was. Once set,
the thresholds stay for the life of the process. ``DAVEL_MALLOC_TUNING=0``
turns the tuning off even where it is asked for (an escape hatch for the
command line, which has no option for it). Elsewhere (macOS, musl, Windows)
all of this is a no-op.
"""
from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024
NETWORK_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit

_configured: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or os.environ.get("DAVEL_MALLOC_TUNING") == "0":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it; musl's mallopt does nothing useful
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


def configure_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds (once per process); True when they were set."""
    global _configured
    if _configured is None:
        libc = _glibc()
        _configured = bool(libc is not None
                           and libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
                           and libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) == 1)
    return _configured


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (after a video)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def network_pass() -> Iterator[None]:
    """Large intermediates of a forward pass come from the heap (reused within the pass);
    its free pages go back to the system at the end."""
    libc = _glibc() if _configured else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, NETWORK_THRESHOLD_BYTES)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)
        libc.malloc_trim(0)
