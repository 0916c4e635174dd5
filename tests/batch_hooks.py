"""Misbehaving inputs for the batch tests, without real broken decoders or full disks.

:class:`HookedTask` wraps the real task: an input named in the hooks has its
``process`` run under its hook, in the worker process (the wrapper is pickled to
the spawned worker like the task it wraps, and this module is imported there from
``tests/``, which ``hooked_davel.py`` puts on ``sys.path``). A hook spec is
``"KIND:NAME[,KIND:NAME...]"``, NAME an input's file name or stem:

* ``stall``: block forever before the work (a decoder that stops answering);
* ``stall-write``: block forever inside the first output write, after its
  temporary file exists;
* ``crash``: the worker kills itself with SIGKILL (an OOM kill, a segfault);
* ``where``: append ``{"stem", "CUDA_VISIBLE_DEVICES", "raylet"}`` (the pid of the Ray
  node's raylet above this process, if any) as a JSON line to ``$DAVEL_TEST_WHERE``
  after the work (the Ray tests' placement checks);
* ``enospc`` / ``erofs`` / ``eacces``: writing the outputs fails with that
  error (a full disk, a read-only mount, a folder root may write but the
  filesystem refuses).
"""
from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
def hooked(kind: str | None, out_dir: str | None) -> Iterator[None]:
    """Run the block as the hook ``kind`` says (None: as it is)."""
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


class HookedTask:
    """``task`` with the hooked inputs misbehaving in ``process``; everything else is the
    task's own (checks, outputs, claims and sweeping in the driver stay real)."""

    def __init__(self, task: Any, hooks: dict[str, str]) -> None:
        self.task = task
        self.hooks = hooks

    def __getattr__(self, name: str) -> Any:
        # called only for what the wrapper lacks; pickle probes dunders on an instance
        # whose __dict__ is still empty, so those (and a missing task) are plain misses
        task = self.__dict__.get("task")
        if task is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(task, name)

    def process(self, item: Any, *args: Any, **kwargs: Any) -> Any:
        kind = self.hooks.get(Path(item.path).name) or self.hooks.get(item.stem) or self.hooks.get("*")
        with hooked(kind, getattr(self.task, "out_dir", None)):
            record = self.task.process(item, *args, **kwargs)
        if kind == "where":
            note_where(item.stem)
        return record


def _raylet_above(pid: int) -> int | None:
    """The pid of the nearest ``raylet`` ancestor of ``pid`` (None outside Ray)."""
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if stat[stat.index("(") + 1:stat.rindex(")")] == "raylet":
            return pid
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return None


def note_where(stem: str) -> None:
    import json

    line = {"stem": stem, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "raylet": _raylet_above(os.getpid())}
    with open(os.environ["DAVEL_TEST_WHERE"], "a") as f:
        f.write(json.dumps(line) + "\n")


def install(spec: str) -> None:
    """Every batch this process runs gets its task wrapped in a :class:`HookedTask`."""
    from davel.batch import runner

    hooks = parse_hooks(spec)
    real_run_batch = runner.run_batch

    def run_batch(task: Any, items: list, **kwargs: Any) -> Any:
        return real_run_batch(HookedTask(task, hooks), items, **kwargs)

    # the commands import run_batch from the module when they run, so they get this one
    runner.run_batch = run_batch
