"""Driving a batch: :func:`drive` is the sequence ``davel extract`` and ``davel detect``
share (shard, cheap checks, the task, the engine, the summary); :func:`run_batch`
runs a task on an engine and keeps the summary and the ``--report`` file.

Ctrl-C returns the summary with ``interrupted=True`` (it does not raise), after
the engine has stopped everything it started (wherever in the batch it lands).
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from davel.batch.engines import DEFAULT_TIMEOUT, BatchError, Engine, OneProcessEngine
from davel.batch.inputs import check_output_dir, in_shard, parse_shard, precheck
from davel.batch.records import Record, ReportFile, Summary
from davel.batch.tasks import Item, Task

__all__ = ["BatchError", "BatchOptions", "check_output_dir", "drive", "in_shard", "make_engine", "parse_shard",
           "precheck", "run_batch", "write_report"]


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs, whatever its task. ``ray``: None (this machine, one process),
    or a Ray address (``local``, ``auto``, ``HOST:PORT``)."""

    timeout: float | None = DEFAULT_TIMEOUT
    report: Path | None = None
    shard: tuple[int, int] | None = None
    quiet: bool = False
    ray: str | None = None
    actors_per_gpu: int = 1
    cpus_per_actor: float | None = None


def make_engine(options: BatchOptions, claim_dir: str | os.PathLike | None) -> Engine:
    """The engine ``options`` ask for (Ray is imported only when asked for)."""
    if options.ray is None:
        return OneProcessEngine(claim_dir=None if claim_dir is None else Path(claim_dir),
                                timeout=options.timeout, quiet=options.quiet)
    from davel.batch.ray_engine import RayEngine

    # no claims: one driver hands out the work (the outputs still tell what is done)
    return RayEngine(options.ray, timeout=options.timeout, quiet=options.quiet,
                     actors_per_gpu=options.actors_per_gpu, cpus_per_actor=options.cpus_per_actor)


def write_report(records: list[Record], report: str | os.PathLike | None) -> Summary:
    """A batch that ends before any work (every input failed its check)."""
    with ReportFile(report) as out:
        for record in records:
            out.write(record)
    return Summary(list(records))


def run_batch(task: Task, items: Sequence[Item], *, engine: Engine, report: str | os.PathLike | None = None,
              on_record: Callable[[Record], None] | None = None, earlier: list[Record] | None = None) -> Summary:
    """Run ``task`` over ``items`` on ``engine`` and return the summary (Ctrl-C included:
    then ``interrupted`` is set; it does not raise).

    ``report``: the ``--report`` JSON Lines file. ``on_record``: called here, in
    completion order, with each finished record. ``earlier``: records made before
    (inputs that failed their checks) for the summary and the report.
    :class:`BatchError` (the engine itself failed) is raised after the report is
    written with what was finished.
    """
    summary = Summary(list(earlier or []))
    # Ctrl-C raises only while the engine runs (inside the try below, so it is always
    # caught); anywhere else in here it is only noted: a KeyboardInterrupt landing
    # between the engine's return and its close, in a claim release or in the report's
    # commit would skip the rest of the clean-up (Ray's processes, the report's
    # temporary file). A Ctrl-C noted there still makes the batch interrupted (130).
    with _sigint_noted() as noted:
        with ReportFile(report) as out:
            for record in summary.records:
                out.write(record)

            def finish(record: Record) -> None:
                summary.add(record)
                out.write(record)
                if on_record is not None:
                    on_record(record)

            try:
                with _sigint_raises(noted):
                    engine.run(task, items, finish)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                engine.close()
    summary.interrupted = summary.interrupted or noted.hit
    return summary


def drive(items: Sequence[Item], make_task: Callable[[list[Item]], Task], options: BatchOptions, *,
          claim_dir: str | os.PathLike | None = None,
          on_record: Callable[[Record], None] | None = None) -> Summary:
    """The whole batch: keep this shard's inputs, check them (no model loaded; each
    failure goes to ``on_record`` at once), build the task for the rest with
    ``make_task`` (which may raise for a bad checkpoint or weights), run it on the
    engine ``options`` ask for, and return the summary."""
    mine = [item for item in items if in_shard(item, options.shard)]
    todo, failed = precheck(mine)
    for record in failed:
        if on_record is not None:
            on_record(record)
    if not todo:
        return write_report(failed, options.report)
    task = make_task(todo)
    engine = make_engine(options, claim_dir)
    return run_batch(task, todo, engine=engine, report=options.report, on_record=on_record, earlier=failed)


class _sigint_noted:
    """Ctrl-C sets ``hit`` instead of raising, for the whole batch (main thread only:
    elsewhere signals are not ours to take)."""

    def __enter__(self) -> _sigint_noted:
        self.hit = False
        self.ours = threading.current_thread() is threading.main_thread()
        if self.ours:
            self.previous = signal.signal(signal.SIGINT, self.note)
        return self

    def note(self, *_: Any) -> None:
        self.hit = True

    def __exit__(self, *exc_info: Any) -> None:
        if self.ours:  # None: a handler set outside Python; Python's own is the closest
            signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)


class _sigint_raises:
    """Ctrl-C raises KeyboardInterrupt while the engine runs, whatever handler a library
    installed before (Ray's, for one); back to noting it after. Both switches happen
    inside the caller's ``try``, so a Ctrl-C landing on either is caught there."""

    def __init__(self, noted: _sigint_noted):
        self.noted = noted

    def __enter__(self) -> None:
        if self.noted.ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.noted.hit:  # came while the report was opened
            raise KeyboardInterrupt

    def __exit__(self, *exc_info: Any) -> None:
        if self.noted.ours:
            signal.signal(signal.SIGINT, self.noted.note)
