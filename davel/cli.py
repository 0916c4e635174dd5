"""``davel``: one command per job (extract, detect, weights, train, eval).

Every command turns a user-facing error into one line on stderr and a
non-zero exit; a traceback is printed only with ``DAVEL_DEBUG=1``.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from davel.errors import DavelError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find audio-visual events in raw videos (UnAV-100 / CCNet pipeline).")
weights_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="List, download, verify and import weights files.")
app.add_typer(weights_app, name="weights")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts"}


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"davel: error: {message}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"davel: warning: {message}", err=True)


def one_line(exc: BaseException) -> str:
    """A user-facing line for an exception: DavelError text as is, anything else labelled."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DavelError):
        return text or type(exc).__name__
    if os.environ.get("DAVEL_DEBUG"):
        raise exc
    return f"unexpected {type(exc).__name__}: {text[:200]} (set DAVEL_DEBUG=1 for details)"


def user_errors(fn: Callable) -> Callable:
    """Run a command; DavelError (and anything unexpected) -> one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback
            fail(one_line(exc))

    return wrapper


def progress_bar(total: int | None, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="win", leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def gather_videos(videos: list[Path], directory: Optional[Path], recursive: bool,
                  listing: Optional[str]) -> list[Path]:
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
            raise DavelError(f"--list {listing}: {exc.strerror or exc}") from None
        out += [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return out


# ------------------------------------------------------------------ extract


@app.command()
@user_errors
def extract(
    videos: List[Path] = typer.Argument(None, help="Video files."),
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
    from extractors import decode
    from extractors import feature_files
    from extractors.extract import ExtractionSettings, FeatureExtractor

    paths = gather_videos(videos or [], directory, recursive, listing)
    if not paths:
        fail("no videos given (pass files, --dir or --list)", 2)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems and stems[p.stem] != p:
            fail(f"two videos share the output stem '{p.stem}': {stems[p.stem]} and {p}", 2)
        stems[p.stem] = p
    if short_side < 128 or not (32 <= crop <= short_side) or raft_iterations < 1:
        fail("need --short-side >= 128 (RAFT's smallest input), 32 <= --crop <= --short-side "
             "and --raft-iterations >= 1", 2)
    settings = ExtractionSettings(vggish_pca=vggish_pca, short_side=short_side, crop=crop,
                                  raft_iterations=raft_iterations, flow=not no_flow)
    if not settings.is_standard():
        warn("non-standard sizes/iterations: these features will not match the published "
             "UnAV-100 features or checkpoints trained on them")
    extractor = FeatureExtractor(weights_dir, device, settings)
    done = skipped = 0
    failed: list[str] = []
    for path in stems.values():
        if not overwrite and feature_files.is_complete(out, path.stem, extractor.settings_key):
            skipped += 1
            continue
        try:
            info = decode.probe(path)
            total = max(1, (decode.num_frames_estimate(info) - 25) // 8 + 1)
            with progress_bar(total, path.name, quiet) as bar:
                feats = extractor.extract(path, on_window=bar.update, warn=warn)
            feature_files.write(out, path.stem, feats, feats.meta)
            done += 1
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the batch
            failed.append(str(path))
            typer.echo(f"davel: error: {one_line(exc)}", err=True)
    summary = f"extracted {done}, skipped {skipped} (already done), failed {len(failed)}"
    typer.echo(summary, err=True)
    if failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------ detect


@app.command()
@user_errors
def detect(
    videos: List[Path] = typer.Argument(None, help="Video files."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file ('-' or none: stdout)."),
    model: str = typer.Option("ccnet", "--model", help="ccnet, unav, or a name stored with `davel weights import`."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A detector checkpoint file (overrides --model)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="UnAV-100 annotation JSON or a text file of class names."),
    features: Optional[List[str]] = typer.Option(None, "--features", help="DIR/STEM of pre-extracted features (repeatable)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="With --features: the video's duration in seconds."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Weights directory (default: cache)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    min_score: float = typer.Option(0.0, "--min-score", help="Drop events scoring below this."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Keep at most K events per video (default: 100 per 224-step window)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="json, jsonl, csv, srt or vtt (default: from -o, else json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Find audio-visual events: what, when, how sure."""
    from davel import outputs, pipeline
    from davel.labels import read_labels
    from extractors import feature_files
    from extractors.devices import resolve_device

    inputs: list[tuple[str, Path | str]] = [("video", p) for p in (videos or [])]
    inputs += [("features", f) for f in (features or [])]
    if not inputs:
        fail("nothing to detect: pass video files or --features DIR/STEM", 2)
    if duration is not None and (duration <= 0 or not features or videos):
        fail("--duration needs a positive value and goes with --features only", 2)
    fmt = fmt or outputs.format_from_path(output, "jsonl" if len(inputs) > 1 else "json")
    if fmt not in outputs.FORMATS:
        fail(f"unknown --format {fmt} (choose {', '.join(outputs.FORMATS)})", 2)
    if top_k is not None and top_k < 1:
        fail("--top-k must be at least 1", 2)
    names = read_labels(labels) if labels else None
    dev = resolve_device(device)
    ckpt = pipeline.resolve_checkpoint(model, str(checkpoint) if checkpoint else None,
                                       str(weights_dir) if weights_dir else None)
    det = pipeline.load(ckpt, dev, names, expect_dims=_input_dims(videos, features))
    if det.labels is None:
        warn("no class names: events are labelled class_<id>; pass --labels unav100_annotations.json "
             "(from the UnAV-100 dataset) for real names")
    extractor = None
    sink = outputs.ResultSink(output, fmt)
    failed = 0
    for kind, item in inputs:
        try:
            if kind == "features":
                feats = feature_files.read(item)
                name, dur = Path(item).name, duration
                differs = pipeline.settings_mismatch(det, feature_files.read_meta(item))
                if differs:
                    warn(f"{name}: features made with other extractor settings than the "
                         f"detector's training features: {differs}")
            else:
                if extractor is None:
                    from davel.feature_cache import CachedExtractor
                    settings = pipeline.extraction_settings(det)
                    if not settings.is_standard():
                        warn(f"{ckpt.name} was trained on non-standard features: extracting with its "
                             f"settings (short side {settings.short_side}, crop {settings.crop}, "
                             f"flow {'on' if settings.flow else 'off'}, "
                             f"RAFT iterations {settings.raft_iterations})")
                    extractor = CachedExtractor(weights_dir, device, settings)
                with progress_bar(None, Path(item).name, quiet) as bar:
                    feats, dur = extractor.features(Path(item), on_window=bar.update, warn=warn)
                name = str(item)
            result = pipeline.detect_features(det, feats, dur, top_k=top_k, min_score=min_score)
            sink.add({"video": name, **result})
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
            failed += 1
            typer.echo(f"davel: error: {one_line(exc)}", err=True)
    sink.close()
    if failed:
        raise typer.Exit(1)


def _input_dims(videos: list[Path] | None, features: list[str] | None) -> tuple[int, int]:
    """Visual / audio feature sizes the detector will be fed: I3D + VGGish when a video is
    extracted, else those of the first feature files (features made elsewhere may differ)."""
    from davel.errors import DavelError
    from extractors import feature_files

    if not videos and features:
        try:
            first = feature_files.read(features[0])
            return first.visual().shape[0], first.audio().shape[0]
        except DavelError:  # reported with that input below
            pass
    return 2048, 128


# ------------------------------------------------------------------ weights


@weights_app.command("list")
@user_errors
def weights_list(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir")) -> None:
    """Show every known weights file, where it comes from and whether it is here."""
    from weights import store

    d = store.weights_dir(weights_dir)
    typer.echo(f"weights directory: {d}")
    for s in store.registry().values():
        here = "present" if (d / s.name).is_file() else "missing"
        typer.echo(f"  {s.name:38s} {here:8s} {s.role:10s} {s.expected():28s} {s.licence}")
        typer.echo(f"  {'':38s} {s.urls[0]}")


@weights_app.command("download")
@user_errors
def weights_download(
    names: List[str] = typer.Argument(None, help="Files to fetch (default: what `davel extract` needs)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir"),
    force: bool = typer.Option(False, "--force", help="Download again even if present."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download weights into the cache, with progress and hash checks."""
    from weights import store

    wanted = names or [s.name for s in store.registry().values() if s.default]
    for name in wanted:
        path = store.download(name, weights_dir, force=force, progress=not quiet)
        typer.echo(f"{name}: ok ({path})")


@weights_app.command("verify")
@user_errors
def weights_verify(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir")) -> None:
    """Check every weights file present against its lock and registry hash."""
    from weights import store

    d = store.weights_dir(weights_dir)
    bad = 0
    for s in store.registry().values():
        p = d / s.name
        if not p.is_file():
            continue
        try:
            store.check_file(p, s)
            typer.echo(f"{s.name}: ok")
        except DavelError as exc:
            bad += 1
            typer.echo(f"{s.name}: FAILED: {exc}", err=True)
    if bad:
        raise typer.Exit(1)


@weights_app.command("standin")
@user_errors
def weights_standin(
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Default: <cache>/standin (never the real cache)."),
    salt: int = typer.Option(0, "--salt", help="Salt of the deterministic stand-in rule."),
    detectors: bool = typer.Option(True, "--detectors/--no-detectors", help="Also write the two detector checkpoints."),
) -> None:
    """Write deterministic STAND-IN weights (original layouts) for offline tests and demos.

    They are random, not trained: detections made with them mean nothing.
    """
    from weights.standin_files import write_standins

    from weights import store

    d = write_standins(weights_dir or store.cache_dir() / "standin", salt=salt, detectors=detectors)
    typer.echo(f"stand-in weights (salt {salt}) written to {d}")


@weights_app.command("import")
@user_errors
def weights_import(
    checkpoint: Path = typer.Argument(..., help="A detector checkpoint (official layout or davel's)."),
    name: str = typer.Option(..., "--name", help="Name to use with `davel detect --model NAME`."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Annotation JSON or text file of class names."),
    origin: str = typer.Option("", "--origin", help="Where the checkpoint came from (kept with it)."),
) -> None:
    """Store a detector checkpoint with its class names and time base in the cache."""
    from davel.model_store import import_checkpoint

    path = import_checkpoint(checkpoint, name, labels, origin)
    typer.echo(f"stored as {path}; use `davel detect --model {name}`")


from davel.cli_train import eval_command, train_command  # noqa: E402
app.command("train")(train_command)
app.command("eval")(eval_command)


if __name__ == "__main__":
    app()
