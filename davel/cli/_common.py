"""What every command shares: one-line errors, warnings on stderr, progress bars, inputs.

Every command turns a user-facing error into one line on stderr and a
non-zero exit; ``DAVEL_DEBUG=1`` prints the whole traceback (with its causes)
before that line. Library warnings (the ``davel``, ``extractors`` and
``weights`` loggers) are printed as ``davel: warning: ...``.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer

from davel.errors import LIBRARY_LOGGERS, BatchError, DavelError, one_line
from extractors.media import VIDEO_SUFFIXES

if TYPE_CHECKING:
    from davel.batch.records import Record


def fail(message: str, code: int = 1) -> NoReturn:
    """``davel: error: <message>`` on stderr and exit ``code``."""
    typer.echo(f"davel: error: {message}", err=True)
    raise typer.Exit(code)


def report_error(exc: BaseException) -> None:
    """One input of a batch failed: say so in one line and go on."""
    typer.echo(f"davel: error: {one_line(exc)}", err=True)


class _WarningLine(logging.Handler):
    """Library warnings -> ``davel: warning: ...`` on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            typer.echo(f"davel: warning: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 - a warning must never break a run
            self.handleError(record)


_HANDLER = _WarningLine(logging.WARNING)


def show_library_warnings() -> None:
    """Install the warning handler once per process (commands may run many times in one)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False


def exit_interrupted(*_: object) -> NoReturn:
    """Ctrl-C outside a command's body (Python's start-up and imports, the interpreter's
    teardown: seconds with torch loaded): nothing of ours to clean up, so stop now, 130.
    A KeyboardInterrupt there would give a traceback, click's "Aborted!" (exit 1) or,
    once Python restored the default handler late in its teardown, a death by SIGINT."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - interrupted inside a write: what is buffered is lost
            pass
    os.write(2, b"davel: error: interrupted\n")
    os._exit(130)


PROGRAM = {"sigint_exits": False}  # set by davel.cli.main: the process is the davel program


def user_errors(fn: Callable | None = None, *, interrupt_exits: bool = False) -> Callable:
    """Run a command; DavelError (and anything unexpected) -> one line, exit 1; Ctrl-C -> 130.

    ``interrupt_exits``: the body has nothing to clean up outside the batch, which takes
    Ctrl-C over itself while it runs (``davel extract``, ``davel detect``): Ctrl-C exits
    130 at once there too. A KeyboardInterrupt raised inside torch's import (native code
    calling Python) aborted the process (exit -6) instead.
    """
    if fn is None:
        return functools.partial(user_errors, interrupt_exits=interrupt_exits)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        show_library_warnings()
        program = PROGRAM["sigint_exits"]
        if program and not interrupt_exits:  # the body cleans up on KeyboardInterrupt (downloads)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            if program:  # a second Ctrl-C in here would be a traceback or "Aborted!"
                exit_interrupted()
            fail("interrupted", 130)
        except BatchError as exc:  # the engine itself, not an input: what was written stays valid
            fail(one_line(exc), 2)
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback
            fail(one_line(exc))
        finally:
            if program:
                signal.signal(signal.SIGINT, exit_interrupted)

    return wrapper


TIMEOUT_HELP = ("Give up a video after S seconds WITHOUT PROGRESS (a stall timer reset at each "
                "window of frames; model loading not counted): it is reported as timed out and "
                "the batch goes on. 0: no limit.")
REPORT_HELP = "Write one JSON line per input (path, status, reason, seconds, T, T_a, warnings) to FILE."
SHARD_HELP = "Take only shard K of N (1 <= K <= N) of the inputs, split by a hash of their names."


RAY_HELP = ("Run on a Ray cluster: local (this machine's CPUs and GPUs), auto (the cluster "
            "`ray start` made) or HOST:PORT. Needs `pip install 'davel[ray]'`.")
ACTORS_HELP = "With --ray: workers per GPU (2 lets one decode while the other computes)."
CPUS_HELP = "With --ray: CPUs each worker asks for (default: min(4, (CPUs - 1) / workers))."


def batch_settings(timeout: float, shard: Optional[str], report: Optional[Path] = None, quiet: bool = False,
                   ray: Optional[str] = None, actors_per_gpu: int = 1,
                   cpus_per_actor: Optional[float] = None):
    """``--timeout``, ``--shard`` and the engine options checked (exit 2 when wrong), as
    :class:`davel.batch.runner.BatchOptions`."""
    from davel.batch.runner import BatchOptions, parse_shard

    if timeout < 0:
        fail("--timeout must be positive (or 0: no limit)", 2)
    parsed = None
    if shard is not None:
        try:
            parsed = parse_shard(shard)
        except ValueError as exc:
            fail(str(exc), 2)
    if ray is None and (actors_per_gpu != 1 or cpus_per_actor is not None):
        fail("--actors-per-gpu and --cpus-per-actor go with --ray", 2)
    if actors_per_gpu < 1:
        fail("--actors-per-gpu must be at least 1", 2)
    if cpus_per_actor is not None and cpus_per_actor <= 0:
        fail("--cpus-per-actor must be positive", 2)
    if ray is not None:
        from davel.batch.ray_engine import check_address, ray_missing

        missing = ray_missing()
        if missing:
            fail(missing, 2)
        try:
            check_address(ray)
        except ValueError as exc:
            fail(str(exc), 2)
    return BatchOptions(timeout=timeout or None, report=report, shard=parsed, quiet=quiet, ray=ray,
                        actors_per_gpu=actors_per_gpu, cpus_per_actor=cpus_per_actor)


def report_failure(record: Record) -> None:
    """``davel: error: <file>: <reason>`` on stderr for an input that failed or timed out
    (its reason may already name the file); nothing for one done or skipped."""
    if record.ok:
        return
    reason = record.reason or record.status
    line = reason if record.path in reason else f"{record.path}: {reason}"
    typer.echo(f"davel: error: {line}", err=True)


def output_folder(path: Path) -> Path:
    """The output folder made and writable, else one line and exit 2 (before any work)."""
    from davel.batch.runner import check_output_dir

    try:
        return check_output_dir(path)
    except DavelError as exc:
        fail(str(exc), 2)


def progress_bar(total: int | None, desc: str, quiet: bool, unit: str = "win"):
    """A tqdm bar on stderr, shown only on a terminal."""
    from davel.batch.engines import progress_bar as bar

    return bar(total, desc, quiet, unit)


def gather_videos(videos: list[Path], directory: Optional[Path], recursive: bool,
                  listing: Optional[str]) -> list[Path]:
    """The videos named on the command line, found in ``--dir``, or listed in ``--list``."""
    out = list(videos)
    if directory is not None:
        if not directory.is_dir():
            raise DavelError(f"--dir {directory}: not a directory")
        pattern = "**/*" if recursive else "*"
        out += sorted(p for p in directory.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if listing is not None:
        try:
            text = sys.stdin.read() if listing == "-" else Path(listing).read_text()
        except OSError as exc:
            raise DavelError(f"--list {listing}: {exc.strerror or exc}") from exc
        out += [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return out
