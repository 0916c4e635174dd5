"""User-facing errors: each carries a one-line message the CLI prints as is."""


class DavelError(Exception):
    """A user-facing error with a one-line message."""


class InputError(DavelError):
    """The input video or feature file cannot be used (corrupt, too short, no stream...)."""


class WeightsError(DavelError):
    """A weights file is missing, fails its hash check, or has the wrong layout."""
