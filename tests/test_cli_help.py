"""`davel --help` (and `davel weights --help`, `davel cache --help`): every command's summary
is one whole line in an 80-column terminal, never shortened ('...') or broken mid-sentence.

Both ways Typer draws the list are checked: with rich (boxes; a long first paragraph wraps
onto more lines) and without (``TYPER_USE_RICH=0``: click's plain list, which cuts a long
one with '...'). The real program runs, as a user's terminal would size it: Typer's
CliRunner forces a width of its own.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from davel.cli import app

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 80  # a standard terminal
GROUPS = [(), ("weights",), ("cache",)]


def commands_of(path: tuple[str, ...]) -> dict:
    """The commands a group lists, in its order (``train`` is built when looked up)."""
    group = get_command(app)
    for name in path:
        group = group.commands[name]
    ctx = typer.Context(group)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def summary_of(command) -> str:
    """What the list should show: the command's own first paragraph, on one line."""
    text = command.short_help or command.help or ""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def listed(output: str, rich: bool) -> dict[str, list[str]]:
    """The command list of a help text: name -> its summary's lines as drawn."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in output.splitlines():
        if rich:
            if line.startswith("╭─ Commands"):
                inside = True
                continue
            if not inside:
                continue
            if line.startswith("╰"):
                break
            cell = line.strip().strip("│").rstrip()[1:]  # the border and its one space of padding
        else:
            if line.startswith("Commands:"):
                inside = True
                continue
            if not inside or not line.strip():
                continue
            cell = line[2:]  # click indents the list by two
        if cell and not cell[0].isspace():
            name, _, text = cell.partition(" ")
            rows[name] = [text.strip()]
        else:
            rows[list(rows)[-1]].append(cell.strip())
    return rows


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("path", GROUPS, ids=["davel", "weights", "cache"])
def test_every_command_summary_is_one_whole_line(path, rich):
    env = {k: v for k, v in os.environ.items() if k not in ("TERMINAL_WIDTH", "TYPER_USE_RICH")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS=str(WIDTH), TYPER_USE_RICH="1" if rich else "0")
    res = subprocess.run([sys.executable, "-m", "davel", *path, "--help"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    commands = commands_of(path)
    rows = listed(res.stdout, rich)
    assert list(rows) == list(commands), res.stdout
    for name, lines in rows.items():
        expected = summary_of(commands[name])
        assert len(lines) == 1, f"{name}: its summary takes {len(lines)} lines: {lines}"
        assert lines[0] == expected, f"{name}: shown {lines[0]!r}, its docstring says {expected!r}"
        assert not lines[0].endswith(("...", "…")) and lines[0].endswith((".", ")")), lines[0]


def test_the_command_line_needs_no_click_of_its_own():
    """typer vendors click: a plain `pip install .` has no click package (the test extras
    bring one), so davel must not import it."""
    code = ("import sys; sys.modules['click'] = None\n"
            "from davel.cli import main\n"
            "sys.argv = ['davel', 'train', '--help']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--attention" in res.stdout
