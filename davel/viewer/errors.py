"""Errors of the viewer, each with a one-line message the CLI prints as is."""
from __future__ import annotations

from davel.errors import DavelError, InputError


class ResultFileError(InputError):
    """A result file (or dict) cannot be read or is not a `davel detect` result."""


class VideoError(InputError):
    """A video cannot be found, opened or decoded."""


class OutputError(DavelError):
    """An output file cannot be written (folder missing, read-only, wrong suffix...)."""
