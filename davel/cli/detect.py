"""``davel detect``: videos (or pre-extracted features) -> events, in several formats."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from davel.cli._common import (
    ACTORS_HELP,
    CPUS_HELP,
    RAY_HELP,
    REPORT_HELP,
    SHARD_HELP,
    TIMEOUT_HELP,
    batch_settings,
    fail,
    output_folder,
    report_failure,
    user_errors,
)


@user_errors(interrupt_exits=True)
def detect_command(
    videos: list[Path] = typer.Argument(None, help="Video files."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file ('-' or none: stdout), or a folder (an existing one, or a path ending in '/'): one <stem>.<format> per input, inputs whose file exists skipped, shared by several processes."),
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
    timeout: float = typer.Option(1800.0, "--timeout", metavar="S", help=TIMEOUT_HELP),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE", help=REPORT_HELP),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help=SHARD_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="With -o FOLDER: redo inputs whose output exists."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    actors_per_gpu: int = typer.Option(1, "--actors-per-gpu", metavar="K", help=ACTORS_HELP),
    cpus_per_actor: Optional[float] = typer.Option(None, "--cpus-per-actor", metavar="C", help=CPUS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Find audio-visual events: what, when, how sure.

    Exit codes: 0 every input done (or skipped: already done), 1 some input
    failed or timed out, 2 usage error (bad options, an output folder that
    cannot be written), 130 interrupted (Ctrl-C).
    """
    from davel import outputs
    from davel.batch.runner import drive
    from davel.batch.tasks import DetectTask, Item
    from davel.errors import DavelError

    options = batch_settings(timeout, shard, report, quiet, ray, actors_per_gpu, cpus_per_actor)
    items = [Item(str(p)) for p in (videos or [])] + [Item(f, "features") for f in (features or [])]
    if not items:
        fail("nothing to detect: pass video files or --features DIR/STEM", 2)
    if duration is not None and (duration <= 0 or len(features or []) != 1 or videos):
        fail("--duration needs a positive value and goes with exactly one --features input", 2)
    folder = _output_folder(output)
    default_fmt = "json" if folder is not None or len(items) == 1 else "jsonl"
    fmt = fmt or (default_fmt if folder is not None else outputs.format_from_path(output, default_fmt))
    if fmt not in outputs.FORMATS:
        fail(f"unknown --format {fmt} (choose {', '.join(outputs.FORMATS)})", 2)
    if top_k is not None and top_k < 1:
        fail("--top-k must be at least 1", 2)
    if folder is not None:
        stems: dict[str, str] = {}
        for item in items:
            if stems.setdefault(item.stem, item.path) != item.path:
                fail(f"two inputs share the output name '{item.stem}': {stems[item.stem]} and {item.path}", 2)
    try:
        plots = None
        if plot is not None:
            targets = _plot_targets(plot, [(i.kind, i.path) for i in items])
            plots = {path: (kind, target) for (kind, path), target in targets.items()}
    except DavelError as exc:
        fail(f"--plot: {exc}", 2)
    if ray is not None and features:
        fail("--ray runs on videos (pre-extracted features are detected in one process)", 2)

    def make_task(todo: list[Item]) -> DetectTask:
        # reached only when some input passed its checks: missing or unreadable inputs
        # are told before the detector (or torch) is loaded
        if folder is not None:
            output_folder(folder)
        from davel.labels import read_labels

        names = read_labels(labels) if labels else None
        task = DetectTask(str(checkpoint or model), labels=names, weights_dir=weights_dir, device=device,
                          top_k=top_k, min_score=min_score, duration=duration, out_dir=folder, fmt=fmt,
                          expect_dims=_input_dims(videos, features), overwrite=overwrite)
        # the checkpoint is checked here once so that a bad one is one line before any work
        if any(item.kind == "video" for item in todo):
            # videos run in workers that load their own detector: the driver reads the
            # checkpoint memory-mapped and keeps no model (nor its weights) in memory
            from davel.inference import check_checkpoint

            summary = check_checkpoint(task.model, task.device, task.labels, task.weights_dir,
                                       expect_dims=task.expect_dims)
            has_labels, extractor = summary.has_labels, lambda: summary.extractor(tune_allocator=True)
        else:
            detector = summary = task.detector  # features only: detected here, in this process
            has_labels, extractor = detector.labels is not None, lambda: detector.feature_cache().extractor
        if videos:
            # the checkpoint decides which features a video gets (its recorded set, or its widths)
            fs = summary.video_feature_set()
            if fs.name == "one-peace" and summary.device.type == "cpu" and not quiet and ray is None:
                line = extractor().estimate_line([i.path for i in todo])
                typer.echo(f"davel: {line}", err=True)
        if not has_labels:
            typer.echo("davel: warning: no class names: events are labelled class_<id>; pass --labels "
                       "unav100_annotations.json (from the UnAV-100 dataset) for real names", err=True)
        return task

    with outputs.ResultSink(None if folder is not None else output, fmt) as sink:
        def on_record(record) -> None:
            if not record.ok:
                report_failure(record)
                return
            if record.result is None:  # skipped: its output is there already
                return
            if folder is None:
                sink.add(record.result)
            if plots is not None:
                _plot(record, plots)

        summary = drive(items, make_task, options, claim_dir=folder, on_record=on_record)
    if folder is not None or summary.interrupted or len(summary.records) > 1:
        typer.echo(summary.line(DetectTask.verb), err=True)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _output_folder(output: str | None) -> Path | None:
    """``-o`` names a folder when it is one already or ends in '/'."""
    if output is None or output == "-":
        return None
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return Path(output)
    return None


def _plot(record, plots: dict[str, tuple[str, Path]]) -> None:
    from davel.cli._common import report_error
    from davel.viewer import save_timeline

    kind, target = plots[record.path]
    try:
        save_timeline(record.result, target, video=record.path if kind == "video" else None)
    except Exception as exc:  # noqa: BLE001 - a plot that fails must not stop the batch
        report_error(exc)


def _plot_targets(plot: Path, inputs: list[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """Where ``--plot`` draws each input's timeline (checked before any work)."""
    from davel.viewer.timeline import output_paths

    named = [{"video": item, "events": []} for _, item in inputs]
    return dict(zip(inputs, output_paths(named, plot)))


def _input_dims(videos: list[Path] | None, features: list[str] | None) -> tuple[int, int] | None:
    """Visual / audio feature sizes the detector will be fed: those of the first feature
    files (features made elsewhere may differ); None when videos are given (the checkpoint
    decides which features they get)."""
    from davel.errors import DavelError
    from extractors import feature_files

    if not videos and features:
        try:
            (_, c_rgb), (_, c_flow), (_, c_aud) = feature_files.read_shapes(features[0])
            return c_rgb + c_flow, c_aud
        except DavelError:  # reported with that input below
            pass
    return None
