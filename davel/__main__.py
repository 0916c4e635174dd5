"""``python -m davel``: the command line."""
from davel.cli import main

main()
