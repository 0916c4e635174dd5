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
    from weights import store

    wanted = names or [s.name for s in store.registry().values() if s.default]
    for name in wanted:
        path = store.download(name, weights_dir, force=force, progress=not quiet)
        typer.echo(f"{name}: ok ({path})")


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
) -> None:
    """Write deterministic STAND-IN weights for tests and demos.

    For offline tests and demos: they have the original layouts but are random,
    not trained, so detections made with them mean nothing.
    """
    from weights import store
    from weights.standin_files import write_standins

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
    """Store a detector checkpoint in the cache, under a name.

    Its class names and time base are stored with it.
    """
    from davel.models import import_checkpoint

    path = import_checkpoint(checkpoint, name, labels, origin)
    typer.echo(f"stored as {path}; use `davel detect --model {name}`")
