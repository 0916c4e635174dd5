"""The child side of the one-machine engine: a process that runs a task one input at a time.

The driver (:mod:`davel.batch.runner`) starts it with the ``spawn`` method and
talks to it over a pipe. Messages from the worker: ``("ready", warnings)``
once the task's models are loaded, ``("fatal", reason)`` if they cannot be,
then per input ``("start", total_steps)``, ``("progress", n)`` for each step
and ``("record", Record)``. The driver sends ``(Item, want_total)`` or None
(stop).

The worker dies with the driver (``PR_SET_PDEATHSIG``, Linux) so a killed
driver leaves no orphan, and ignores SIGINT: on Ctrl-C the driver decides what
to stop and kills the worker itself.

Test hook: ``DAVEL_WORKER_HOOK="KIND:NAME[,KIND:NAME...]"``, read only here,
makes the worker misbehave on the input whose file name or stem is NAME, so the
tests can check the driver without real broken decoders or full disks:

* ``stall``: block forever before the work (a decoder that stops answering);
* ``stall-write``: block forever inside the first output write, after its
  temporary file exists;
* ``crash``: the worker kills itself with SIGKILL (an OOM kill, a segfault);
* ``enospc`` / ``erofs`` / ``eacces``: writing the outputs fails with that
  error (a full disk, a read-only mount, a folder root may write but the
  filesystem refuses).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from davel.batch.records import captured_warnings
from davel.errors import LIBRARY_LOGGERS, one_line

HOOK_ENV = "DAVEL_WORKER_HOOK"


def _die_with_parent(parent_pid: int | None) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the pipe's EOF still ends the loop
            pass
    if parent_pid is not None and os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)


def _silence_library_loggers() -> None:
    # warnings travel in the records and the driver prints them (once, in order)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def parse_hooks(text: str | None) -> dict[str, str]:
    """``"stall:a.mp4,crash:b"`` -> ``{"a.mp4": "stall", "b": "crash"}``."""
    hooks: dict[str, str] = {}
    for part in (text or "").split(","):
        kind, sep, name = part.strip().partition(":")
        if sep and name:
            hooks[name] = kind
    return hooks


@contextmanager
def _fail_writes(code: int, match: str) -> Iterator[None]:
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and match in os.fspath(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    os.open = refusing_open
    try:
        yield
    finally:
        os.open = real_open


@contextmanager
def _fail_fsync(block: bool) -> Iterator[None]:
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if block:
            threading.Event().wait()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = failing_fsync
    try:
        yield
    finally:
        os.fsync = real_fsync


@contextmanager
def _hooked(kind: str | None, out_dir: str | None) -> Iterator[None]:
    if kind == "stall":
        threading.Event().wait()
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind in ("enospc", "stall-write"):
        with _fail_fsync(kind == "stall-write"):
            yield
        return
    if kind in ("erofs", "eacces"):
        code = errno.EROFS if kind == "erofs" else errno.EACCES
        with _fail_writes(code, out_dir or os.sep):
            yield
        return
    yield


def main(conn: Any, task: Any, parent_pid: int | None = None) -> None:
    """The worker's loop (the target of the spawned process)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _silence_library_loggers()
    hooks = parse_hooks(os.environ.get(HOOK_ENV))
    try:
        with captured_warnings() as warned:
            task.prepare()
    except Exception as exc:  # noqa: BLE001 - told to the driver, which stops the batch
        conn.send(("fatal", one_line(exc)))
        return
    conn.send(("ready", list(warned)))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        item, want_total = message
        kind = hooks.get(Path(item.path).name) or hooks.get(item.stem)
        with _hooked(kind, getattr(task, "out_dir", None)):
            total = None
            if want_total:
                try:
                    total = task.total_steps(item)
                except Exception:  # noqa: BLE001 - a bar without a total is fine
                    total = None
            conn.send(("start", total))
            record = task.process(item, on_progress=lambda n=1: conn.send(("progress", n)))
        conn.send(("record", record))
