"""``davel extract``: many videos -> UnAV-100 feature files."""
from __future__ import annotations

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
    gather_videos,
    output_folder,
    report_failure,
    user_errors,
)


@user_errors(interrupt_exits=True)
def extract_command(
    videos: list[Path] = typer.Argument(None, help="Video files."),
    out: str = typer.Option(..., "-o", "--out", metavar="DIR|URL", help="Output directory for <stem>_{rgb,flow,vggish}.npy (one-peace: <stem>_one_peace_{video_finetune,audio}.npy), or an fsspec URL (s3://bucket/prefix, gs://..., file:///abs/path; needs fsspec and the store's package, e.g. s3fs): each file one object, written whole. With a URL there are no claim files: run one process per prefix (or split with --shard)."),
    feature_set: str = typer.Option("i3d-vggish", "--feature-set", help="i3d-vggish (UnAV-100's features) or one-peace (the released CCNet's: 1536-d, 16 fps, 16-frame windows every 4)."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Also take every video in this directory."),
    recursive: bool = typer.Option(False, "--recursive", help="With --dir: descend into sub-directories."),
    listing: Optional[str] = typer.Option(None, "--list", help="File with one video path per line ('-': stdin)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Weights directory (default: cache)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    vggish_pca: bool = typer.Option(False, "--vggish-pca", help="AudioSet PCA + 8-bit output instead of the raw embedding."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose outputs already exist."),
    short_side: int = typer.Option(256, "--short-side", help="Frames resized to this shorter side (non-standard if not 256)."),
    crop: int = typer.Option(224, "--crop", help="Centre crop fed to I3D (non-standard if not 224)."),
    raft_iterations: int = typer.Option(20, "--raft-iterations", help="RAFT refinement steps (non-standard if not 20)."),
    no_flow: bool = typer.Option(False, "--no-flow", help="Skip optical flow (flow features written as zeros): fast, non-standard."),
    precision: str = typer.Option("fp32", "--precision", help="one-peace: fp32 (the reference) or bf16 (CUDA only; see examples/bench_onepeace.py for its drift)."),
    timeout: float = typer.Option(1800.0, "--timeout", metavar="S", help=TIMEOUT_HELP),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE", help=REPORT_HELP),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help=SHARD_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    actors_per_gpu: int = typer.Option(1, "--actors-per-gpu", metavar="K", help=ACTORS_HELP),
    cpus_per_actor: Optional[float] = typer.Option(None, "--cpus-per-actor", metavar="C", help=CPUS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Extract I3D + VGGish or ONE-PEACE features from videos.

    The default feature set, i3d-vggish, is the UnAV-100 features (I3D rgb + flow,
    VGGish); one-peace is what the released CCNet was trained on (on a CPU its
    encoders take minutes per second of video: each video's time is estimated,
    measured on this machine, before it starts). The defaults reproduce the
    published features; --short-side, --crop,
    --raft-iterations and --no-flow trade faithfulness for speed (for your own
    training and experiments only).

    Several processes (on one machine or many) may run the same command on the
    same videos and output folder: they share the work through claim files,
    and a run killed at any point is resumed by running it again.

    Exit codes: 0 every input done (or skipped: already done), 1 some input
    failed or timed out, 2 usage error (bad options, an output folder that
    cannot be written), 130 interrupted (Ctrl-C).
    """
    from davel.batch.runner import drive
    from davel.batch.tasks import Item
    from weights.storage import is_url

    # an fsspec URL stays a string (Path would fold its "//"); a plain path is a Path, as always.
    # Claims are files in a local folder: with a URL the batch runs without them (one process
    # per output prefix, or split with --shard), and there are no temporary files to sweep.
    target: str | Path = out if is_url(out) else Path(out)
    options = batch_settings(timeout, shard, report, quiet, ray, actors_per_gpu, cpus_per_actor)
    paths = gather_videos(videos or [], directory, recursive, listing)
    if not paths:
        fail("no videos given (pass files, --dir or --list)", 2)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            fail(f"two videos share the output stem '{p.stem}': {stems[p.stem]} and {p}", 2)
        stems[p.stem] = p
    from extractors.feature_sets import FEATURE_SETS

    if feature_set not in FEATURE_SETS:
        fail(f"--feature-set must be one of {', '.join(FEATURE_SETS)}", 2)
    i3d_options = {"--vggish-pca": vggish_pca, "--short-side": short_side != 256, "--crop": crop != 224,
                   "--raft-iterations": raft_iterations != 20, "--no-flow": no_flow}
    if feature_set == "one-peace":
        given = [flag for flag, on in i3d_options.items() if on]
        if given:
            fail(f"{given[0]} is an I3D + VGGish option: it does not go with --feature-set one-peace", 2)
    elif precision != "fp32":
        fail("--precision goes with --feature-set one-peace", 2)

    def make_task(items: list[Item]):
        # reached only when some input passed its checks: missing or unreadable files
        # are told before any model (or torch) is loaded
        output_folder(target)
        settings = _settings(feature_set, precision, vggish_pca, short_side, crop, raft_iterations, no_flow)
        from davel.batch.tasks import ExtractTask

        task = ExtractTask(target, settings, weights_dir, device, overwrite, feature_set=feature_set)
        if feature_set == "one-peace" and task.extractor.device.type == "cpu" and not quiet and ray is None:
            typer.echo(f"davel: {task.extractor.estimate_line([i.path for i in items if not task.is_done(i)])}",
                       err=True)
        return task

    from davel.batch.tasks import ExtractTask

    summary = drive([Item(str(p)) for p in stems.values()], make_task, options,
                    claim_dir=None if is_url(out) else target,
                    on_record=report_failure)
    typer.echo(summary.line(ExtractTask.verb), err=True)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _settings(feature_set: str, precision: str, vggish_pca: bool, short_side: int, crop: int,
              raft_iterations: int, no_flow: bool):
    """The extraction settings the options ask for (exit 2 when they cannot be)."""
    from davel.errors import DavelError

    if feature_set == "one-peace":
        from extractors.onepeace import OnePeaceSettings  # torch from here on

        return OnePeaceSettings(precision=precision)
    from extractors.extract import ExtractionSettings  # torch from here on

    settings = ExtractionSettings(vggish_pca=vggish_pca, short_side=short_side, crop=crop,
                                  raft_iterations=raft_iterations, flow=not no_flow)
    try:
        settings.check()
    except DavelError as exc:
        fail(f"{exc} (--short-side, --crop, --raft-iterations)", 2)
    if not settings.is_standard():
        typer.echo("davel: warning: non-standard sizes/iterations: these features will not match the "
                   "published UnAV-100 features or checkpoints trained on them", err=True)
    return settings
