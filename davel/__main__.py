"""``python -m davel``: the command line."""
import signal


def _interrupted(*_: object) -> None:
    # Ctrl-C during the imports below (a second or more on a busy machine): exit 130 without
    # a traceback; davel.cli.main takes over from there
    import os

    os.write(2, b"davel: error: interrupted\n")
    os._exit(130)


if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, _interrupted)

from davel.cli import main  # noqa: E402 - after the handler, on purpose

main()
