"""``davel cache``: where the feature cache is, what it holds, and clearing it."""
from __future__ import annotations

import typer

from davel.cli._common import user_errors

cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Show or clear the feature cache of `davel detect VIDEO`.")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


@cache_app.command("info")
@user_errors
def cache_info() -> None:
    """Show where the cache is, what it holds and its size limit.

    Its folder, its number of entries, their total size and the limit.
    """
    from extractors.cache import CacheDir

    d = CacheDir()
    entries = d.entries()
    typer.echo(f"feature cache: {d.root}")
    typer.echo(f"entries: {len(entries)}")
    typer.echo(f"total size: {_gb(sum(e.size for e in entries))} ({sum(e.size for e in entries)} bytes)")
    typer.echo(f"limit: {_gb(d.max_bytes)} (DAVEL_CACHE_MAX_GB)")


@cache_app.command("clear")
@user_errors
def cache_clear() -> None:
    """Remove every cached entry.

    Features are extracted again when next needed.
    """
    from extractors.cache import CacheDir

    count, freed = CacheDir().clear()
    typer.echo(f"removed {count} entries, freed {_gb(freed)} ({freed} bytes)")
