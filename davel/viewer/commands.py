"""The `davel plot` and `davel view` commands, as plain Typer command functions.

They are registered by the CLI module (``app.command("plot")(plot_command)``,
``app.command("view")(view_command)``); nothing here registers itself. Like the
other commands, a user-facing error becomes one line on stderr and exit code 1.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Callable, List, Optional, TypeVar

import typer

from davel.errors import DavelError
from davel.viewer.page import EMBED_LIMIT_MB

T = TypeVar("T")


def _echo_error(message: str) -> None:
    typer.echo(f"davel: error: {message}", err=True)


def _warn(message: str) -> None:
    typer.echo(f"davel: warning: {message}", err=True)


def _run(job: Callable[[], T]) -> T:
    """``job()``; a DavelError (or, without DAVEL_DEBUG, anything else) -> one line, exit 1."""
    try:
        return job()
    except DavelError as exc:
        text = str(exc).strip()
        _echo_error(text.splitlines()[0] if text else type(exc).__name__)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a command never ends in a traceback
        if os.environ.get("DAVEL_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        _echo_error(f"unexpected {type(exc).__name__}: {first} (set DAVEL_DEBUG=1 for details)")
    raise typer.Exit(1)


ResultArg = Annotated[Path, typer.Argument(
    help="Result of `davel detect`: a JSON file (one result or a list) or JSON Lines.",
    show_default=False)]
AnnotationsOpt = Annotated[Optional[Path], typer.Option(
    "--annotations", help="UnAV-100 annotation JSON: the video's ground truth is drawn above the events.")]


def plot_command(
    result: ResultArg,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output",
        help="Figure file (.png, .svg or .pdf), or a folder for one figure per video "
             "(default: timeline.png; timelines/ for several videos).")] = None,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", help="Draw only events scoring at least this.")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", min=1, help="Draw only the K best-scoring events per video.")] = None,
    video: Annotated[Optional[List[Path]], typer.Option(
        "--video", help="The video, for a strip of thumbnails (repeat it, or give a folder, "
                        "for several videos).")] = None,
    annotations: AnnotationsOpt = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="Figure format when -o is a folder: png, svg or pdf.")] = "png",
) -> None:
    """Draw the events of a result as a timeline: a lane per label, a bar per event."""
    from davel.viewer.timeline import plot_results

    written = _run(lambda: plot_results(result, output, min_score=min_score, top_k=top_k,
                                        videos=video or (), annotations=annotations, fmt=fmt))
    for path in written:
        typer.echo(str(path))


def view_command(
    result: ResultArg,
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="The HTML page to write (one file, works offline).")],
    video: Annotated[Optional[List[Path]], typer.Option(
        "--video", help="The video file (repeat it, or give a folder, for several videos; "
                        "default: the path in the result).")] = None,
    embed: Annotated[bool, typer.Option(
        "--embed", help="Put the video inside the page (a data URI) instead of linking it.")] = False,
    embed_limit: Annotated[float, typer.Option(
        "--embed-limit", min=0, help="Largest total video size in MB that --embed accepts.")] = EMBED_LIMIT_MB,
    annotations: AnnotationsOpt = None,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", help="Where the page's score slider starts.")] = None,
) -> None:
    """Write one self-contained HTML page to play the video and browse its events."""
    from davel.viewer.page import write_page

    path = _run(lambda: write_page(result, output, videos=video or (), embed=embed,
                                   embed_limit_mb=embed_limit, annotations=annotations,
                                   min_score=min_score, warn=_warn))
    typer.echo(str(path))
