"""``davel``: one command per job. The commands only parse, call the library and write."""
from __future__ import annotations

import os
import signal
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from davel.cli import _common
from davel.cli.cache import cache_app
from davel.cli.detect import detect_command
from davel.cli.evaluate import eval_command
from davel.cli.extract import extract_command
from davel.cli.view import plot_command, view_command
from davel.cli.weights import weights_app


class _Commands(TyperGroup):
    """The command list, with ``train`` built only when it is asked for: its flags come from
    the detector registry (each kind's options), which imports torch, and every other
    command must start without it (bad inputs are told before any model loads)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        if "train" not in names:
            names.insert(names.index("weights") + 1, "train")
        return names

    def get_command(self, ctx: typer.Context, name: str) -> Any:
        if name == "train" and "train" not in self.commands:
            from davel.cli.train import train_command_for

            one = typer.Typer(add_completion=False)
            one.command("train")(train_command_for())
            self.add_command(typer.main.get_command(one), "train")
        return super().get_command(ctx, name)


def make_app() -> typer.Typer:
    """The command line, with the options of the detector kinds registered when ``davel
    train`` is first looked up."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Commands,
                      help="Find audio-visual events in raw videos (UnAV-100 / CCNet pipeline).")
    app.command("extract")(extract_command)
    app.command("detect")(detect_command)
    app.add_typer(weights_app, name="weights")
    app.command("eval")(eval_command)
    app.command("plot")(plot_command)
    app.command("view")(view_command)
    app.add_typer(cache_app, name="cache")
    return app


app = make_app()


def main() -> None:
    """The ``davel`` program (``python -m davel`` and the console script)."""
    # Ctrl-C exits 130 at once outside a command's body (click's parsing; the teardown
    # after it); the body itself gets KeyboardInterrupt (see _common.user_errors)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started with it ignored: leave it so
        _common.PROGRAM["sigint_exits"] = True
        signal.signal(signal.SIGINT, _common.exit_interrupted)
    try:
        app(prog_name="davel")
    except SystemExit as exc:
        if exc.code == 130:
            # Ctrl-C must stop within 2 s; with torch loaded the interpreter's teardown alone
            # can take longer, and everything (outputs, report, summary) is written by now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise


__all__ = ["app", "main", "make_app"]
