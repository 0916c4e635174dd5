"""``davel detect``: videos (or pre-extracted features) -> events, in several formats."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from davel.cli._common import fail, progress_bar, report_error, user_errors


@user_errors
def detect_command(
    videos: list[Path] = typer.Argument(None, help="Video files."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file ('-' or none: stdout)."),
    model: str = typer.Option("ccnet", "--model", help="ccnet, unav, or a name stored with `davel weights import`."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A detector checkpoint file (overrides --model)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="UnAV-100 annotation JSON or a text file of class names."),
    features: Optional[list[str]] = typer.Option(None, "--features", help="DIR/STEM of pre-extracted features (repeatable)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="With one --features input: the video's duration in seconds (default: from its davel sidecar, else the span the features cover)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Weights directory (default: cache)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    min_score: float = typer.Option(0.0, "--min-score", help="Drop events scoring below this."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep at most K events per video (default: 100 per 224-step window)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="json, jsonl, csv, srt or vtt (default: from -o, else json)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw each video's timeline: a .png/.svg/.pdf file for one input, a folder for several (see `davel plot`)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Find audio-visual events: what, when, how sure."""
    from davel import outputs
    from davel.errors import DavelError
    from davel.inference import VIDEO_FEATURE_DIMS, load_detector
    from davel.labels import read_labels
    from extractors import feature_files

    inputs: list[tuple[str, str]] = [("video", str(p)) for p in (videos or [])]
    inputs += [("features", f) for f in (features or [])]
    if not inputs:
        fail("nothing to detect: pass video files or --features DIR/STEM", 2)
    if duration is not None and (duration <= 0 or len(features or []) != 1 or videos):
        fail("--duration needs a positive value and goes with exactly one --features input", 2)
    fmt = fmt or outputs.format_from_path(output, "jsonl" if len(inputs) > 1 else "json")
    if fmt not in outputs.FORMATS:
        fail(f"unknown --format {fmt} (choose {', '.join(outputs.FORMATS)})", 2)
    if top_k is not None and top_k < 1:
        fail("--top-k must be at least 1", 2)
    try:
        plots = _plot_targets(plot, inputs) if plot is not None else None
    except DavelError as exc:
        fail(f"--plot: {exc}", 2)
    names = read_labels(labels) if labels else None
    det = load_detector(checkpoint or model, device, names, weights_dir,
                        expect_dims=_input_dims(videos, features, VIDEO_FEATURE_DIMS))
    if det.labels is None:
        typer.echo("davel: warning: no class names: events are labelled class_<id>; pass --labels "
                   "unav100_annotations.json (from the UnAV-100 dataset) for real names", err=True)
    failed = 0
    with outputs.ResultSink(output, fmt) as sink:
        for kind, item in inputs:
            try:
                if kind == "features":
                    result = det.detect_features(feature_files.read(item), name=Path(item).name,
                                                 duration=duration, top_k=top_k, min_score=min_score)
                else:
                    with progress_bar(None, Path(item).name, quiet) as bar:
                        result = det.detect(item, top_k=top_k, min_score=min_score, on_window=bar.update)
                sink.add(result)
                if plots is not None:
                    from davel.viewer import save_timeline

                    save_timeline(result, plots[(kind, item)], video=item if kind == "video" else None)
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
                failed += 1
                report_error(exc)
    if failed:
        raise typer.Exit(1)


def _plot_targets(plot: Path, inputs: list[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """Where ``--plot`` draws each input's timeline (checked before any work)."""
    from davel.viewer.timeline import output_paths

    named = [{"video": item, "events": []} for _, item in inputs]
    return dict(zip(inputs, output_paths(named, plot)))


def _input_dims(videos: list[Path] | None, features: list[str] | None,
                video_dims: tuple[int, int]) -> tuple[int, int]:
    """Visual / audio feature sizes the detector will be fed: I3D + VGGish when a video is
    extracted, else those of the first feature files (features made elsewhere may differ)."""
    from davel.errors import DavelError
    from extractors import feature_files

    if not videos and features:
        try:
            (_, c_rgb), (_, c_flow), (_, c_aud) = feature_files.read_shapes(features[0])
            return c_rgb + c_flow, c_aud
        except DavelError:  # reported with that input below
            pass
    return video_dims
