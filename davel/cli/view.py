"""``davel plot`` and ``davel view``: a timeline figure, an offline HTML page."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from davel.cli._common import user_errors

EMBED_LIMIT_MB = 50.0  # davel.viewer.page.EMBED_LIMIT_MB (not imported: matplotlib loads late)

ResultArg = Annotated[Path, typer.Argument(
    help="Result of `davel detect`: a JSON file (one result or a list) or JSON Lines.",
    show_default=False)]
AnnotationsOpt = Annotated[Optional[Path], typer.Option(
    "--annotations", help="UnAV-100 annotation JSON: the video's ground truth is drawn above the events.")]


@user_errors
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
    video: Annotated[Optional[list[Path]], typer.Option(
        "--video", help="The video, for a strip of thumbnails (repeat it, or give a folder, "
                        "for several videos).")] = None,
    annotations: AnnotationsOpt = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="Figure format when -o is a folder: png, svg or pdf.")] = "png",
) -> None:
    """Draw the events of a result as a timeline figure.

    One lane per label, one bar per event.
    """
    from davel.viewer.timeline import plot_results

    written = plot_results(result, output, min_score=min_score, top_k=top_k, videos=video or (),
                           annotations=annotations, fmt=fmt)
    for path in written:
        typer.echo(str(path))


@user_errors
def view_command(
    result: ResultArg,
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="The HTML page to write (one file, works offline).")],
    video: Annotated[Optional[list[Path]], typer.Option(
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
    """Write an HTML page to play the video and browse its events.

    One self-contained file that works offline.
    """
    from davel.viewer.page import write_page

    path = write_page(result, output, videos=video or (), embed=embed, embed_limit_mb=embed_limit,
                      annotations=annotations, min_score=min_score)
    typer.echo(str(path))
