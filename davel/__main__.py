"""``python -m davel``: the command line."""
from davel.cli import app

app(prog_name="davel")
