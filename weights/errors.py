"""User-facing errors: each carries a one-line message the CLI prints as is.

They live in the bottom layer so that every layer (weights, extractors, davel)
raises the same types; ``davel.errors`` re-exports them for users.
"""


class DavelError(Exception):
    """A user-facing error with a one-line message."""


class InputError(DavelError):
    """The input video or feature file cannot be used (corrupt, too short, no stream...)."""


class WeightsError(DavelError):
    """A weights file is missing, fails its hash check, or has the wrong layout."""


class OutputError(DavelError):
    """An output cannot be written (full disk, read-only folder, a file where a folder
    should be); earlier outputs are left as they were."""
