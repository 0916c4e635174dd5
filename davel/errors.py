"""The errors davel raises, and how they (and library warnings) reach the user.

The base classes are defined in :mod:`weights.errors` (the bottom layer, so
extractors and weights raise the same types) and re-exported here.
:func:`one_line` turns any exception into the one line the CLI prints and a
batch record carries; :data:`LIBRARY_LOGGERS` names the loggers whose warnings
the CLI shows and a batch records. Both live here, at the bottom of davel, so
that the command line and the batch engine share them.
"""
from __future__ import annotations

import os
import sys
import traceback

from weights.errors import DavelError, InputError, OutputError, WeightsError

__all__ = ["DavelError", "InputError", "OutputError", "WeightsError", "EvaluationError", "BatchError",
           "LIBRARY_LOGGERS", "one_line"]

LIBRARY_LOGGERS = ("davel", "extractors", "weights")


class EvaluationError(DavelError):
    """Ground truth or predictions cannot be read for evaluation."""


class BatchError(DavelError):
    """A batch's engine itself cannot go on (its workers cannot load the models, the
    cluster is gone): exit 2, and what was written stays valid."""


def one_line(exc: BaseException) -> str:
    """The one line a user is told about ``exc``: a DavelError's text as is, an OSError
    as ``<file>: <reason>``, anything else labelled as unexpected.

    ``DAVEL_DEBUG=1`` prints the traceback (with its causes) to stderr first: the line
    alone hides where an unexpected error came from.
    """
    if os.environ.get("DAVEL_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, DavelError):
        return first or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return f"unexpected {type(exc).__name__}: {first[:200]} (set DAVEL_DEBUG=1 for details)"
