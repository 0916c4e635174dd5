"""The one-machine engine: :func:`run_batch` runs a task over many inputs, one at a time,
in a worker process it watches.

* **A run that cannot hang.** The work runs in a child process (``spawn``; see
  :mod:`davel.batch.worker`) fed one input at a time. ``timeout`` is a stall
  timer, reset by every progress message (a window of frames, the start of
  an input): a decoder that stops answering (a mount that went away, a pipe
  that never closes) leaves the timer running out, the worker is killed, the
  input is reported timed out and a fresh worker takes the next one. A
  stream that keeps delivering frames forever is progress, not a stall. The
  models are loaded before the first input and that time is not counted. A
  worker that dies (OOM kill, segfault) gives a failed record,
  ``worker died (signal N, NAME)``, and a fresh worker goes on.
* **Many processes, one folder.** With ``claim_dir``, an input is worked on
  only under its claim (:mod:`davel.batch.claims`), so several processes
  started on the same inputs and folder share the work without talking to
  each other. Inputs another live process holds are come back to once the
  rest are done: when the claim goes, the input is either done (skipped here)
  or was given up (tried here).
* **Crash safety.** Outputs are renamed into place complete (``weights.atomic``);
  after a worker is killed mid-write, or on taking over a dead process's
  claim, that input's temporary files are removed. Ctrl-C kills the worker at
  once (it ignores SIGINT itself), removes its temporary files, releases the
  claim and returns the summary with ``interrupted=True``.

``DAVEL_BATCH_INLINE=1`` runs every input in this process instead (no time
limit, no crash isolation): for tests that patch the library in-process, and
for debugging. Batches of pre-extracted features only run inline too: no
decoder is involved and the detector the driver loaded for its checks is used.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from davel.batch import worker as worker_module
from davel.batch.claims import STALE_AFTER, Claim, claim_path, try_claim
from davel.batch.records import FAILED, SKIPPED, TIMED_OUT, Record, ReportFile, Summary
from davel.batch.tasks import Item, Task, check_features, check_video
from davel.errors import DavelError, OutputError, one_line
from weights.atomic import PART_SUFFIX, temp_path_for

log = logging.getLogger(__name__)

INLINE_ENV = "DAVEL_BATCH_INLINE"
DEFAULT_TIMEOUT = 1800.0
POLL = 0.2  # seconds between looks at the worker's pipe (and at claims held elsewhere)
HEARTBEAT = 10.0  # seconds between claim heartbeats; far below claims.STALE_AFTER
WARMUP_LIMIT = 600.0  # seconds a worker may take to load its models

_TEMP = re.compile(r"\.(.+)\.[0-9a-f]{8}" + re.escape(PART_SUFFIX))


class BatchError(DavelError):
    """The engine itself cannot go on (its worker cannot load the models)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) -> ``(K, N)``."""
    k, sep, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not sep or nn < 1 or not 1 <= kk <= nn:
        raise ValueError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. 2/4)")
    return kk, nn


def in_shard(item: Item, shard: tuple[int, int] | None) -> bool:
    """Shards split by a hash of the output stem, so the split does not depend on the
    order (or the rest) of each machine's input list."""
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(item.stem.encode("utf8")) % n == k - 1


def check_input(item: Item) -> None:
    """The cheap checks, before any model is loaded (no torch import)."""
    if item.kind == "video":
        check_video(item.path)
        return
    check_features(item.path)


def precheck(items: Iterable[Item], check: Callable[[Item], None] = check_input) -> tuple[list[Item], list[Record]]:
    """Split ``items`` into those that pass ``check`` and failed records for the others."""
    good: list[Item] = []
    failed: list[Record] = []
    for item in items:
        try:
            check(item)
        except DavelError as exc:
            failed.append(Record(item.path, FAILED, reason=one_line(exc)))
        else:
            good.append(item)
    return good, failed


def check_output_dir(path: str | os.PathLike) -> Path:
    """The output folder exists (made if needed) and takes new files; else OutputError,
    before any work (it would fail every input the same way)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder (the outputs go into a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder: {exc.strerror or exc}") from exc
    probe = temp_path_for(folder / ".davel-write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write in the output folder: {exc.strerror or exc}") from exc
    return folder


def write_report(records: list[Record], report: str | os.PathLike | None) -> Summary:
    """A batch that ends before any work (every input failed its check)."""
    with ReportFile(report) as out:
        for record in records:
            out.write(record)
    return Summary(list(records))


def sweep_temps(task: Task, item: Item) -> None:
    """Remove the temporary files of ``item``'s outputs (left by a killed writer)."""
    names: dict[Path, set[str]] = {}
    for out in task.outputs(item):
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


def _bar(total: int | None, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="win", leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def _log_warnings(messages: Iterable[str]) -> None:
    for message in messages:
        log.warning("%s", message)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


class _Inline:
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
            with _bar(self.task.total_steps(item) if not self.quiet else None, Path(item.path).name,
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


class _Watched:
    """Inputs run in a worker process, restarted after a stall or a death."""

    def __init__(self, task: Task, quiet: bool, timeout: float | None):
        self.task, self.quiet, self.timeout = task, quiet, timeout
        self.proc = None
        self.conn = None

    def _start(self, claim: Claim | None) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_module.main, args=(child, self.task, os.getpid()),
                                name="davel-worker", daemon=True)
        self.proc.start()
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
                _log_warnings(payload)
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
        if self.proc is None:
            self._start(claim)
        start = time.monotonic()
        bar = None
        try:
            self.conn.send((item, not self.quiet and sys.stderr.isatty()))
            last = time.monotonic()
            while True:
                if claim is not None:
                    claim.heartbeat(HEARTBEAT)
                wait = POLL if self.timeout is None else max(0.0, min(POLL, last + self.timeout - time.monotonic()))
                if self.conn.poll(wait):
                    kind, payload = self.conn.recv()
                    last = time.monotonic()
                    if kind == "start":
                        bar = _bar(payload, Path(item.path).name, self.quiet)
                    elif kind == "progress" and bar is not None:
                        bar.update(payload)
                    elif kind == "record":
                        _log_warnings(payload.warnings)
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
        except KeyboardInterrupt:
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


def run_batch(task: Task, items: list[Item], *, claim_dir: Path | None, report: Path | None,
              timeout: float | None, quiet: bool, on_record: Callable[[Record], None] | None = None,
              earlier: list[Record] | None = None, stale_after: float = STALE_AFTER) -> Summary:
    """Run ``task`` over ``items`` and return the summary (Ctrl-C included: then
    ``interrupted`` is set; it does not raise).

    ``claim_dir``: share the work with other processes through claims there.
    ``report``: the ``--report`` JSON Lines file. ``timeout``: seconds without
    progress before an input is given up (None: no limit). ``on_record``: called
    here, in completion order, with each finished record. ``earlier``: records
    made before (inputs that failed their checks) for the summary and the report.
    """
    inline = bool(os.environ.get(INLINE_ENV)) or all(item.kind == "features" for item in items)
    engine: Any = _Inline(task, quiet) if inline else _Watched(task, quiet, timeout)
    summary = Summary(list(earlier or []))
    with ReportFile(report) as out:
        for record in summary.records:
            out.write(record)

        def finish(record: Record) -> None:
            summary.add(record)
            out.write(record)
            if on_record is not None:
                on_record(record)

        try:
            pending = list(items)
            while pending:
                held = []
                for item in pending:
                    record = _one(task, item, engine, claim_dir, stale_after)
                    if record is None:
                        held.append(item)
                    else:
                        finish(record)
                if len(held) == len(pending):  # all with live owners elsewhere: wait for them
                    time.sleep(POLL)
                pending = held
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            with _no_sigint():
                engine.close()
    return summary


def _done(task: Task, item: Item) -> bool:
    try:
        return task.is_done(item)
    except Exception:  # noqa: BLE001 - an unreadable output is redone
        return False


def _one(task: Task, item: Item, engine: Any, claim_dir: Path | None, stale_after: float) -> Record | None:
    """The record of one input, or None when another live process holds its claim."""
    if claim_dir is None:
        return engine.process(item, None)
    if _done(task, item) and not claim_path(claim_dir, item.stem).exists():
        return Record(item.path, SKIPPED)
    try:
        claim = try_claim(claim_dir, item.stem, stale_after)
    except OSError as exc:
        return Record(item.path, FAILED, reason=f"{claim_path(claim_dir, item.stem)}: cannot claim "
                                                f"{item.path}: {exc.strerror or exc}")
    if claim is None:
        return None
    try:
        if claim.previous is not None:  # its owner died, perhaps mid-write
            sweep_temps(task, item)
        if _done(task, item):
            return Record(item.path, SKIPPED)
        return engine.process(item, claim)
    finally:
        claim.release()


class _no_sigint:
    """Hold a second Ctrl-C off while the worker is stopped and the claim released."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc_info: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
