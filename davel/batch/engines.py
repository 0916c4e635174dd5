"""The engines a batch runs on, behind one small interface, :class:`Engine`.

An engine is given a task, the inputs left after the driver's checks, and a
``finish`` callback; it calls ``finish(record)`` in the driver's main thread
once per input, in completion order, and lets ``KeyboardInterrupt`` through.
``close`` stops whatever it started (the runner calls it with Ctrl-C held off).
Every engine gets each record from the same :meth:`Task.process`, so outputs,
report lines and exit codes do not depend on the engine.

* :class:`OneProcessEngine` (this module): one input at a time on this machine,
  in a watched worker process (see :mod:`davel.batch.worker`), sharing the work
  with other processes through claim files.
* ``RayEngine`` (:mod:`davel.batch.ray_engine`): a Ray cluster, imported only when
  asked for.

The one-process engine:

* **A run that cannot hang.** The work runs in a child process (``spawn``) fed
  one input at a time. ``timeout`` is a stall timer, reset by every progress
  message (a window of frames, the start of an input): a decoder that stops
  answering (a mount that went away, a pipe that never closes) leaves the timer
  running out, the worker is killed, the input is reported timed out and a fresh
  worker takes the next one. A stream that keeps delivering frames forever is
  progress, not a stall. The models are loaded before the first input and that
  time is not counted. A worker that dies (OOM kill, segfault) gives a failed
  record, ``worker died (signal N, NAME)``, and a fresh worker goes on.
* **Many processes, one folder.** With ``claim_dir``, an input is worked on only
  under its claim (:mod:`davel.batch.claims`), so several processes started on
  the same inputs and folder share the work without talking to each other.
  Inputs another live process holds are come back to once the rest are done:
  when the claim goes, the input is either done (skipped here) or was given up
  (tried here).
* **Crash safety.** Outputs are renamed into place complete (``weights.atomic``);
  after a worker is killed mid-write, or on taking over a dead process's claim,
  that input's temporary files are removed. Ctrl-C kills the worker at once (it
  ignores SIGINT itself), removes its temporary files and releases the claim.

``DAVEL_BATCH_INLINE=1`` runs every input in this process instead (no time
limit, no crash isolation): for tests that patch the library in-process, and
for debugging. Batches of pre-extracted features only run inline too: no
decoder is involved.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from davel.batch import worker as worker_module
from davel.batch.claims import STALE_AFTER, Claim, claim_path, try_claim
from davel.batch.records import FAILED, SKIPPED, TIMED_OUT, Record
from davel.batch.tasks import Item, Task
from davel.errors import BatchError
from weights.atomic import PART_SUFFIX
from weights.storage import is_url

log = logging.getLogger(__name__)

INLINE_ENV = "DAVEL_BATCH_INLINE"
DEFAULT_TIMEOUT = 1800.0
POLL = 0.2  # seconds between looks at the worker's pipe (and at claims held elsewhere)
HEARTBEAT = 10.0  # seconds between claim heartbeats; far below claims.STALE_AFTER
WARMUP_LIMIT = 600.0  # seconds a worker may take to load its models

_TEMP = re.compile(r"\.(.+)\.[0-9a-f]{8}" + re.escape(PART_SUFFIX))

Finish = Callable[[Record], None]


class Engine(abc.ABC):
    """Runs a task over inputs; see the module's docstring for the contract."""

    @abc.abstractmethod
    def run(self, task: Task, items: Sequence[Item], finish: Finish) -> None:
        """Process every input, calling ``finish`` once per input in this thread.
        Raises :class:`BatchError` when the engine itself fails."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every process the engine started (also after Ctrl-C)."""


def sweep_temps(task: Task, item: Item) -> None:
    """Remove the temporary files of ``item``'s outputs (left by a killed writer). Outputs
    at a URL have none (each is one object, put whole): nothing to do for them."""
    names: dict[Path, set[str]] = {}
    for out in task.outputs(item):
        if is_url(out):
            continue
        names.setdefault(out.parent, set()).add(out.name)
    for folder, wanted in names.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            m = _TEMP.fullmatch(entry)
            if m and m.group(1) in wanted:
                try:
                    (folder / entry).unlink()
                except OSError:
                    pass


def progress_bar(total: int | None, desc: str, quiet: bool, unit: str = "win"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """A Ctrl-C during the block takes effect at its end, as the handler of the moment says:
    for steps a KeyboardInterrupt must not cut in two (a claim taken but not yet guarded by
    its ``finally``, a process started but not yet known to ``multiprocessing``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *args: hits.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)
        if hits and callable(previous):
            previous(*hits[0])


def log_warnings(messages: Iterable[str]) -> None:
    for message in messages:
        log.warning("%s", message)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


class InlineRunner:
    """Inputs run in this process (tests, debugging, features-only batches)."""

    def __init__(self, task: Task, quiet: bool):
        self.task, self.quiet = task, quiet

    def process(self, item: Item, claim: Claim | None) -> Record:
        stop = threading.Event()
        beat = None
        if claim is not None:
            def beating() -> None:
                while not stop.wait(HEARTBEAT):
                    claim.heartbeat()

            beat = threading.Thread(target=beating, daemon=True)
            beat.start()
        try:
            with progress_bar(self.task.total_steps(item) if not self.quiet else None, Path(item.path).name,
                              self.quiet) as bar:
                return self.task.process(item, on_progress=lambda n=1: bar.update(n))
        except KeyboardInterrupt:
            sweep_temps(self.task, item)
            raise
        finally:
            stop.set()
            if beat is not None:
                beat.join()

    def close(self) -> None:
        pass


class _Died(Exception):
    pass


class WatchedRunner:
    """Inputs run in a worker process, restarted after a stall or a death."""

    def __init__(self, task: Task, quiet: bool, timeout: float | None, show_bars: bool | None = None):
        self.task, self.quiet, self.timeout = task, quiet, timeout
        self.show_bars = (not quiet and sys.stderr.isatty()) if show_bars is None else show_bars
        self.proc = None
        self.conn = None

    def _start(self, claim: Claim | None) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_module.main, args=(child, self.task, os.getpid()),
                                name="davel-worker", daemon=True)
        # The child runs Python's start-up, unpickles the task and imports torch before
        # worker.main ignores SIGINT: a Ctrl-C to the process group in those seconds killed
        # it with a traceback on the terminal. It starts with SIGINT blocked (the mask goes
        # through fork and exec) and unblocks it once it ignores it. Here, a Ctrl-C waits
        # until start() returns: cut inside, it left a child multiprocessing did not know.
        # (multiprocessing's resource tracker, started by the first start(), UNblocks SIGINT
        # after starting itself: started first, it leaves our mask alone)
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        with sigint_deferred():
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                self.proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        limit = max(WARMUP_LIMIT, self.timeout or 0.0)
        started = time.monotonic()
        while True:
            if claim is not None:
                claim.heartbeat(HEARTBEAT)
            try:
                ready = self.conn.poll(POLL)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                message = ("died", None)
            if message is None:
                if not self.proc.is_alive():
                    message = ("died", None)
                elif time.monotonic() - started > limit:
                    self.kill()
                    raise BatchError(f"the worker process did not load the models within {limit:g} s")
                else:
                    continue
            kind, payload = message
            if kind == "ready":
                log_warnings(payload)
                return
            self.kill()
            if kind == "fatal":
                raise BatchError(payload)
            raise BatchError(f"the worker process died while loading the models ({self._death()})")

    def _death(self) -> str:
        if self.proc is None:
            return "unknown cause"
        self.proc.join(5)
        code = self.proc.exitcode
        if code is None:
            return "no exit status"
        if code < 0:
            return f"signal {-code}, {_signal_name(-code)}"
        return f"exit status {code}"

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def process(self, item: Item, claim: Claim | None) -> Record:
        start = time.monotonic()
        bar = None
        try:
            if self.proc is None:
                self._start(claim)
            self.conn.send((item, self.show_bars))
            last = time.monotonic()
            while True:
                if claim is not None:
                    claim.heartbeat(HEARTBEAT)
                wait = POLL if self.timeout is None else max(0.0, min(POLL, last + self.timeout - time.monotonic()))
                if self.conn.poll(wait):
                    kind, payload = self.conn.recv()
                    last = time.monotonic()
                    if kind == "start":
                        bar = progress_bar(payload, Path(item.path).name, self.quiet or not self.show_bars)
                    elif kind == "progress" and bar is not None:
                        bar.update(payload)
                    elif kind == "record":
                        log_warnings(payload.warnings)
                        return payload
                elif not self.proc.is_alive():
                    raise _Died
                elif self.timeout is not None and time.monotonic() - last >= self.timeout:
                    self.kill()
                    sweep_temps(self.task, item)
                    return Record(item.path, TIMED_OUT, seconds=time.monotonic() - start,
                                  reason=f"{item.path}: timed out: no progress for {self.timeout:g} s "
                                         f"(a stalled decoder, pipe or mount? see --timeout)")
        except (_Died, EOFError, OSError):
            why = self._death()
            self.kill()
            sweep_temps(self.task, item)
            return Record(item.path, FAILED, seconds=time.monotonic() - start,
                          reason=f"{item.path}: worker died ({why})")
        except BaseException:  # Ctrl-C, or anything else: the worker must not outlive this
            self.kill()
            sweep_temps(self.task, item)
            raise
        finally:
            if bar is not None:
                bar.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
        self.kill()


class OneProcessEngine(Engine):
    """Inputs one at a time on this machine (see the module's docstring)."""

    def __init__(self, *, claim_dir: Path | None, timeout: float | None, quiet: bool,
                 inline: bool | None = None, stale_after: float = STALE_AFTER):
        self.claim_dir, self.timeout, self.quiet = claim_dir, timeout, quiet
        self.inline, self.stale_after = inline, stale_after
        self.runner: InlineRunner | WatchedRunner | None = None

    def run(self, task: Task, items: Sequence[Item], finish: Finish) -> None:
        inline = self.inline
        if inline is None:
            inline = bool(os.environ.get(INLINE_ENV)) or all(item.kind == "features" for item in items)
        self.runner = InlineRunner(task, self.quiet) if inline else WatchedRunner(task, self.quiet, self.timeout)
        pending = list(items)
        while pending:
            held = []
            for item in pending:
                record = self._one(task, item)
                if record is None:
                    held.append(item)
                else:
                    finish(record)
            if len(held) == len(pending):  # all with live owners elsewhere: wait for them
                time.sleep(POLL)
            pending = held

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def _one(self, task: Task, item: Item) -> Record | None:
        """The record of one input, or None when another live process holds its claim."""
        if self.claim_dir is None:
            return self.runner.process(item, None)
        if is_done(task, item) and not claim_path(self.claim_dir, item.stem).exists():
            return Record(item.path, SKIPPED)
        claim = None
        try:
            # a claim taken is released, even when a Ctrl-C lands just as it is taken
            # (a claim file left behind makes the next run sweep and take it over)
            with sigint_deferred():
                try:
                    claim = try_claim(self.claim_dir, item.stem, self.stale_after)
                except OSError as exc:
                    return Record(item.path, FAILED, reason=f"{claim_path(self.claim_dir, item.stem)}: cannot "
                                                            f"claim {item.path}: {exc.strerror or exc}")
            if claim is None:
                return None
            if claim.previous is not None:  # its owner died, perhaps mid-write
                sweep_temps(task, item)
            if is_done(task, item):
                return Record(item.path, SKIPPED)
            return self.runner.process(item, claim)
        finally:
            if claim is not None:
                with sigint_deferred():
                    claim.release()


def is_done(task: Task, item: Item) -> bool:
    """``task.is_done``, an unreadable output counting as not done (it is redone)."""
    try:
        return task.is_done(item)
    except Exception:  # noqa: BLE001 - an unreadable output is redone
        return False
