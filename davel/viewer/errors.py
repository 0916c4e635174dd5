"""Errors of the viewer, each with a one-line message the CLI prints as is.

An output that cannot be written is :class:`davel.errors.OutputError`, as everywhere.
"""
from __future__ import annotations

from davel.errors import InputError


class ResultFileError(InputError):
    """A result file (or dict) cannot be read or is not a `davel detect` result."""


class VideoError(InputError):
    """A video cannot be found, opened or decoded."""
