"""davel: dense audio-visual event localisation on raw, untrimmed videos.

The whole job in two calls::

    import davel
    detector = davel.load_detector("unav", device="cuda")   # or a checkpoint path
    result = detector.detect("video.mp4")                   # -> davel.DetectionResult
    for event in result.events:
        print(event.label, event.start, event.end, event.score)

``davel.available_models()`` lists the names ``load_detector`` accepts;
``detector.detect_features(features)`` runs on pre-extracted features
(``extractors.feature_files.read("DIR/STEM")``); ``result.to_dict()`` is the
JSON that ``davel detect`` writes. Importing davel is cheap: torch and the
models load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from davel.errors import DavelError, EvaluationError, InputError, WeightsError

__version__ = "0.2.0"

__all__ = ["DavelError", "DetectionResult", "Detector", "EvaluationError", "Event", "InputError",
           "WeightsError", "available_models", "load_detector", "__version__"]

_LAZY = {"DetectionResult": "davel.results", "Detector": "davel.inference", "Event": "davel.results",
         "load_detector": "davel.inference", "available_models": "davel.models"}

if TYPE_CHECKING:
    from davel.inference import Detector, load_detector
    from davel.models import available_models
    from davel.results import DetectionResult, Event


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'davel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
