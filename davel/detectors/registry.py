"""The detector kinds davel knows, by name (torchvision's ``get_model`` idea, as one table).

Everything that depends on the kind (how a checkpoint is recognised and
built, which options training passes, how long an input runs in one pass)
is a property of the class, so adding a detector is one new module and one
line in :data:`DETECTORS`.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from davel.detectors.base import PyramidDetector
from davel.detectors.ccnet import CCNetDetector
from davel.detectors.loco import LoCoDetector
from davel.detectors.unav import UnAVDetector
from davel.errors import WeightsError

# Checkpoints are matched in this order: a kind whose keys include another
# kind's markers (LoCo's GB variant carries UnAV's backbone keys) comes first.
DETECTORS: dict[str, type[PyramidDetector]] = {
    "ccnet": CCNetDetector,
    "loco": LoCoDetector,
    "unav": UnAVDetector,
}


def detector_names() -> list[str]:
    return list(DETECTORS)


def get_detector_class(kind: str) -> type[PyramidDetector]:
    try:
        return DETECTORS[kind]
    except KeyError as exc:
        raise WeightsError(f"unknown detector kind '{kind}' (known: {', '.join(DETECTORS)})") from exc


def detector_class_for(state_dict: Mapping[str, Tensor], where: str,
                       declared: str | None = None) -> type[PyramidDetector]:
    """The kind of a checkpoint: the one davel recorded (``davel.model``) when it is known,
    else the first whose markers the keys carry (keys without ``module.``)."""
    if declared in DETECTORS:
        return DETECTORS[declared]
    for cls in DETECTORS.values():
        if cls.matches_state_dict(state_dict):
            return cls
    kinds = " or ".join(c.__name__.removesuffix("Detector") for c in DETECTORS.values())
    raise WeightsError(f"{where} is not a {kinds} detector checkpoint")
