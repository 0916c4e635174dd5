"""Errors of the viewer, each with a one-line message the CLI prints as is."""
from __future__ import annotations

from davel.errors import DavelError, InputError


class ResultFileError(InputError):
    """A result file (or dict) cannot be read or is not a `davel detect` result."""


class AnnotationError(InputError):
    """A ground-truth file cannot be read or is not in the UnAV-100 layout."""


class VideoError(InputError):
    """A video cannot be found, opened or decoded."""


class OutputError(DavelError):
    """An output file cannot be written (folder missing, read-only, wrong suffix...)."""


def reason(exc: BaseException) -> str:
    """The first line of an exception's text (OSError: its strerror), for one-line messages."""
    # OSError and PyAV's FFmpegError: strerror is the message without errno and file name.
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
