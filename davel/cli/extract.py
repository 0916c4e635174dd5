"""``davel extract``: many videos -> UnAV-100 feature files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from davel.cli._common import fail, gather_videos, progress_bar, report_error, user_errors


@user_errors
def extract_command(
    videos: list[Path] = typer.Argument(None, help="Video files."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory for <stem>_{rgb,flow,vggish}.npy."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Extract UnAV-100 features (I3D rgb + flow, VGGish) from raw videos.

    The defaults reproduce the published features; --short-side, --crop,
    --raft-iterations and --no-flow trade faithfulness for speed (for your own
    training and experiments only).
    """
    from davel.errors import DavelError
    from extractors import decode, feature_files
    from extractors.extract import ExtractionSettings, FeatureExtractor

    paths = gather_videos(videos or [], directory, recursive, listing)
    if not paths:
        fail("no videos given (pass files, --dir or --list)", 2)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            fail(f"two videos share the output stem '{p.stem}': {stems[p.stem]} and {p}", 2)
        stems[p.stem] = p
    settings = ExtractionSettings(vggish_pca=vggish_pca, short_side=short_side, crop=crop,
                                  raft_iterations=raft_iterations, flow=not no_flow)
    try:
        settings.check()
    except DavelError as exc:
        fail(f"{exc} (--short-side, --crop, --raft-iterations)", 2)
    if not settings.is_standard():
        typer.echo("davel: warning: non-standard sizes/iterations: these features will not match the "
                   "published UnAV-100 features or checkpoints trained on them", err=True)
    extractor = FeatureExtractor(weights_dir, device, settings)
    tb = settings.timebase
    done = skipped = 0
    failed: list[str] = []
    for path in stems.values():
        if not overwrite and feature_files.is_complete(out, path.stem, extractor.settings_key):
            skipped += 1
            continue
        try:
            frames = decode.num_frames_estimate(decode.probe(path), tb.fps)
            total = max(1, tb.num_steps(frames)) if frames is not None else None
            with progress_bar(total, path.name, quiet) as bar:
                feats = extractor.extract(path, on_window=bar.update)
            feature_files.write(out, path.stem, feats)
            done += 1
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch
            failed.append(str(path))
            report_error(exc)
    typer.echo(f"extracted {done}, skipped {skipped} (already done), failed {len(failed)}", err=True)
    if failed:
        raise typer.Exit(1)
