"""Keeping a long extraction's memory at what it holds, not at what it once held.

glibc raises its mmap threshold each time a large block is freed, so later
frame- and tensor-sized buffers come from the heap and, once freed, stay in
the process (a 10-minute video reached many GB). Fixing the threshold at
128 KiB sends such buffers back to the system on free; ``malloc_trim`` after
each video returns what the heap still keeps. Elsewhere (macOS, musl,
Windows) both calls are no-ops. ``DAVEL_MALLOC_TUNING=0`` leaves glibc as is.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024

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
