"""The errors davel raises: one-line messages the CLI prints as they are.

The base classes are defined in :mod:`weights.errors` (the bottom layer, so
extractors and weights raise the same types) and re-exported here.
"""
from weights.errors import DavelError, InputError, OutputError, WeightsError

__all__ = ["DavelError", "InputError", "OutputError", "WeightsError", "EvaluationError"]


class EvaluationError(DavelError):
    """Ground truth or predictions cannot be read for evaluation."""
