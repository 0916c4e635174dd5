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
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from davel.batch.records import captured_warnings
from davel.errors import LIBRARY_LOGGERS, one_line


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


def main(conn: Any, task: Any, parent_pid: int | None = None) -> None:
    """The worker's loop (the target of the spawned process)."""
    # SIGINT came blocked from the driver (engines.WatchedRunner._start): ignored first, then
    # unblocked, so a Ctrl-C already pending is dropped rather than delivered
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent_pid)
    _silence_library_loggers()
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
        total = None
        if want_total:
            try:
                total = task.total_steps(item)
            except Exception:  # noqa: BLE001 - a bar without a total is fine
                total = None
        conn.send(("start", total))
        record = task.process(item, on_progress=lambda n=1: conn.send(("progress", n)))
        conn.send(("record", record))
