"""``davel weights``: list, download, verify, write stand-ins, import detector checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from davel.cli._common import user_errors

weights_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="List, download, verify and import weights files.")


@weights_app.command("list")
@user_errors
def weights_list(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir")) -> None:
    """List the known weights files and which of them are here.

    Each with its role, hash, licence, description and where it comes from.
    """
    from weights import store

    d = store.weights_dir(weights_dir)
    typer.echo(f"weights directory: {d}")
    for s in store.registry().values():
        here = "present" if (d / s.name).is_file() else "missing"
        typer.echo(f"  {s.name:38s} {here:8s} {s.role:10s} {s.expected():28s} {s.licence}")
        typer.echo(f"  {'':38s} {s.description}")
        typer.echo(f"  {'':38s} {s.source}")


@weights_app.command("download")
@user_errors
def weights_download(
    names: list[str] = typer.Argument(None, help="Files to fetch (default: what `davel extract` needs)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir"),
    force: bool = typer.Option(False, "--force", help="Download again even if present."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download weights into the cache, with progress and hash checks."""
    from extractors.onepeace_weights import conversion_for, convert
    from weights import store

    wanted = names or [s.name for s in store.registry().values() if s.default]
    for name in wanted:
        made_from = store.spec(name).made_from
        source = made_from or name
        path = store.download(source, weights_dir, force=force, progress=not quiet)
        typer.echo(f"{source}: ok ({path})")
        conv = conversion_for(source)
        if conv is not None:
            # the official file is a pickle: what davel loads is the safe file made from it
            done = convert(path, source, weights_dir)
            typer.echo(f"{conv.target}: converted ({done}); {source} may be deleted now")


@weights_app.command("verify")
@user_errors
def weights_verify(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir")) -> None:
    """Check the weights files present against their known hashes.

    Each against its lock file and the registry's hash.
    """
    from davel.errors import DavelError
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
    one_peace: bool = typer.Option(True, "--one-peace/--no-one-peace", help="Also write the ONE-PEACE files (official layouts, converted as downloads are)."),
    one_peace_depth: Optional[int] = typer.Option(None, "--one-peace-depth", min=1, help="Layers of the ONE-PEACE stand-ins (default: the official 40; 1-2 run a CPU in seconds per window). Widths stay official."),
) -> None:
    """Write deterministic STAND-IN weights for tests and demos.

    For offline tests and demos: they have the original layouts but are random,
    not trained, so detections made with them mean nothing.
    """
    from weights import store
    from weights.standin_files import write_standins

    d = write_standins(weights_dir or store.cache_dir() / "standin", salt=salt, detectors=detectors)
    if one_peace:
        from extractors.onepeace_weights import standin_sources

        standin_sources(d, depth=one_peace_depth, salt=salt)
    typer.echo(f"stand-in weights (salt {salt}) written to {d}")


@weights_app.command("import")
@user_errors
def weights_import(
    checkpoint: Path = typer.Argument(..., help="A detector checkpoint (official layout or davel's), or an official ONE-PEACE file."),
    name: Optional[str] = typer.Option(None, "--name", help="Name to use with `davel detect --model NAME` (detector checkpoints)."),
    as_file: Optional[str] = typer.Option(None, "--as", help="The official file this is, when renamed (onepeace_video_k400.pth, one-peace.pt)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Where converted ONE-PEACE files go (default: cache)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Annotation JSON or text file of class names."),
    origin: str = typer.Option("", "--origin", help="Where the checkpoint came from (kept with it)."),
) -> None:
    """Store a detector checkpoint, or convert a ONE-PEACE file.

    A detector checkpoint is stored with its class names and time base. An official
    ONE-PEACE file (onepeace_video_k400.pth, one-peace.pt) you already have is
    converted, memory-mapped and without running its pickled code, into the file
    davel loads, as `davel weights download` would.
    """
    from davel.cli._common import fail
    from davel.models import import_checkpoint
    from extractors.onepeace_weights import conversion_for, convert

    official = as_file or checkpoint.name
    if conversion_for(official) is not None:
        done = convert(checkpoint, official, weights_dir)
        typer.echo(f"{checkpoint}: converted to {done}")
        return
    if as_file is not None:
        fail(f"--as {as_file}: not a file davel converts (onepeace_video_k400.pth, one-peace.pt)", 2)
    if name is None:
        fail("--name is needed to store a detector checkpoint", 2)
    path = import_checkpoint(checkpoint, name, labels, origin)
    typer.echo(f"stored as {path}; use `davel detect --model {name}`")
