"""What a batch says about each input: one :class:`Record` per input, a
:class:`Summary`, and the ``--report`` JSON Lines file.

Exit codes (README, ``--help``): 0 every input done or skipped, 1 some input
failed or timed out, 2 usage error (or the engine itself failed), 130
interrupted.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from davel.errors import LIBRARY_LOGGERS
from weights.atomic import commit_file, temp_path_for

DONE, SKIPPED, FAILED, TIMED_OUT = "done", "skipped", "failed", "timed-out"
STATUSES = (DONE, SKIPPED, FAILED, TIMED_OUT)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

@dataclass
class Record:
    """The outcome of one input. ``T``/``T_a``: feature steps (visual, audio) when known.
    ``result`` (a detection as a dict) travels to the engine but not into the report."""

    path: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    T: int | None = None
    T_a: int | None = None
    warnings: list[str] = field(default_factory=list)
    result: dict | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status in (DONE, SKIPPED)

    def report_line(self) -> dict[str, Any]:
        """The ``--report`` record (no detection payload)."""
        d = asdict(self)
        d.pop("result")
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class Summary:
    """Counts of a finished (or interrupted) batch and its exit code."""

    records: list[Record] = field(default_factory=list)
    interrupted: bool = False

    def add(self, record: Record) -> None:
        self.records.append(record)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(r.ok for r in self.records) else EXIT_FAILED

    def line(self, verb: str = "done") -> str:
        """``extracted 3, skipped 1 (already done), failed 1, timed out 0``."""
        text = (f"{verb} {self.count(DONE)}, skipped {self.count(SKIPPED)} (already done), "
                f"failed {self.count(FAILED)}, timed out {self.count(TIMED_OUT)}")
        return text + (" (interrupted)" if self.interrupted else "")


class ReportFile:
    """``--report FILE``: one JSON line per input, flushed as it comes, renamed into
    place when closed (also after Ctrl-C), so an earlier report is replaced only by a
    complete one and never half-written."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._tmp: Path | None = None
        self._file = None

    def __enter__(self) -> ReportFile:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temp_path_for(self.path)
            self._file = open(self._tmp, "x", encoding="utf8")
        return self

    def write(self, record: Record) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record.report_line(), ensure_ascii=False) + "\n")
            self._file.flush()

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            commit_file(self._tmp, self.path)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """The library warnings given while the block runs (they are still printed).

    A logger set quieter than WARNING (or not set) is opened to WARNING for the block,
    so that no warning escapes the record, and set back to its own level after.
    """
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield handler.messages
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
