"""The ``davel`` entry of a checkpoint: what davel keeps next to a detector's weights.

Written by ``davel train`` (:mod:`davel.train.loop`) and ``davel weights import``
(:func:`davel.models.import_checkpoint`), read when a checkpoint is loaded
(:func:`davel.detectors.checkpoint.build_detector`), to detect with it
(:meth:`davel.inference.Detector.from_checkpoint`) and to resume a run.
Official checkpoints have no such entry: every field is then None.

Every key is optional; its meaning when absent is given with each field. Keys
davel does not know are kept in ``extra`` and written back as they were, so
``CheckpointMeta.from_dict(d).to_dict() == d`` for what any davel wrote.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from davel.errors import WeightsError
from davel.feature_norm import FeatureNorm
from extractors.settings import ExtractionSettings
from extractors.timebase import TimeBase

# CheckpointMeta's field -> its key in the entry (where the two differ)
_KEYS = {"kind": "model"}
_NOT_ENTRIES = ("extra", "nulls")


@dataclass(frozen=True, eq=False)  # eq=False: feature_norm holds arrays; compare to_dict() instead
class CheckpointMeta:
    """The ``davel`` entry, typed. Fields in the order ``davel train`` writes them."""

    # ---- a davel training run (davel train) and what the detector is
    format: int | None = None                      # davel's checkpoint format (1)
    kind: str | None = None                        # "model": a registered detector kind (None: from the keys)
    labels: tuple[str, ...] | None = None          # class names by label id (None: class_<id>)
    timebase: TimeBase | None = None               # how feature steps map to seconds (None: I3D + VGGish's)
    config: Mapping[str, Any] | None = None        # TrainConfig.as_dict() of the run
    model_config: Mapping[str, Any] | None = None  # constructor arguments; the kind's config_hints come from it
    extractor: Mapping[str, Any] | None = None     # {"settings", "settings_key", "weights"} of the training features
    annotations_sha256: str | None = None
    skipped_videos: int | None = None              # training videos without features
    epochs: int | None = None                      # of the whole run (warm-up included)
    history: tuple[Mapping[str, Any], ...] | None = None  # the log.jsonl records of the epochs done
    feature_norm: FeatureNorm | None = None        # --standardize-features statistics (None: features as they are)
    epoch: int | None = None                       # epochs done
    loss_normalizer: float | None = None
    ema_updates: int | None = None
    best_average_mAP: float | None = None
    best_epoch: int | None = None
    val_average_mAP: float | None = None
    # ---- features of other extractors
    feature_set: str | None = None                 # which features it takes (None: "i3d-vggish")
    # ---- a stored checkpoint (davel weights import)
    origin: str | None = None                      # where the file came from
    source_sha256: str | None = None               # the imported file's sha256
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The fields written as null when they have no value (the others are left out): what
    # a writer always writes (the trainer: "extractor", "best_epoch", ...), or the null
    # entries of the entry it was read from, so that to_dict gives that entry back.
    nulls: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str = "checkpoint") -> CheckpointMeta:
        """The entry, checked; WeightsError (one line, naming ``where`` and the key) otherwise."""
        keys = {_KEYS.get(f.name, f.name): f.name for f in fields(cls) if f.name not in _NOT_ENTRIES}
        get = entry.get
        return cls(
            format=_typed(get("format"), int, "format", where),
            kind=_typed(get("model"), str, "model", where),
            labels=_labels(get("labels"), where),
            timebase=_timebase(get("timebase"), where),
            config=_typed(get("config"), Mapping, "config", where),
            model_config=_typed(get("model_config"), Mapping, "model_config", where),
            extractor=_extractor(get("extractor"), where),
            annotations_sha256=_typed(get("annotations_sha256"), str, "annotations_sha256", where),
            skipped_videos=_typed(get("skipped_videos"), int, "skipped_videos", where),
            epochs=_typed(get("epochs"), int, "epochs", where),
            history=_history(get("history"), where),
            feature_norm=_feature_norm(get("feature_norm"), where),
            epoch=_typed(get("epoch"), int, "epoch", where),
            loss_normalizer=_typed(get("loss_normalizer"), float, "loss_normalizer", where),
            ema_updates=_typed(get("ema_updates"), int, "ema_updates", where),
            best_average_mAP=_typed(get("best_average_mAP"), float, "best_average_mAP", where),
            best_epoch=_typed(get("best_epoch"), int, "best_epoch", where),
            val_average_mAP=_typed(get("val_average_mAP"), float, "val_average_mAP", where),
            feature_set=_typed(get("feature_set"), str, "feature_set", where),
            origin=_typed(get("origin"), str, "origin", where),
            source_sha256=_typed(get("source_sha256"), str, "source_sha256", where),
            extra={k: v for k, v in entry.items() if k not in keys},
            nulls=frozenset(keys[k] for k, v in entry.items() if k in keys and v is None),
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as a checkpoint stores it (tensors for the statistics: they load
        under ``weights_only``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_ENTRIES or (value is None and f.name not in self.nulls):
                continue
            if isinstance(value, TimeBase):
                value = value.as_dict()
            elif isinstance(value, FeatureNorm):
                value = value.to_meta()
            elif f.name in ("labels", "history"):
                value = [dict(x) if isinstance(x, Mapping) else x for x in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            out[_KEYS.get(f.name, f.name)] = value
        out.update(self.extra)
        return out

    def extraction_settings(self) -> ExtractionSettings | None:
        """The extractor settings of the training features, or None when the checkpoint
        does not say (official checkpoints, features made elsewhere)."""
        settings = (self.extractor or {}).get("settings")
        return ExtractionSettings.from_record(settings) if isinstance(settings, Mapping) else None


_KINDS = {str: "a string", int: "an integer", float: "a number", Mapping: "an object"}


def _typed(value: Any, kind: type, key: str, where: str) -> Any:
    kinds = (int, float) if kind is float else (kind,)
    # bool is an int to Python, never a count to a user
    if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    raise WeightsError(f"{where}: unreadable davel.{key} (expected {_KINDS[kind]}, got {value!r:.60})")


def _labels(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise WeightsError(f"{where}: unreadable class names (davel.labels)")
    return tuple(value)


def _timebase(value: Any, where: str) -> TimeBase | None:
    if value is None:
        return None
    try:
        tb = TimeBase.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: unreadable time base (davel.timebase)") from exc
    if not (math.isfinite(tb.fps) and tb.fps > 0 and tb.stride >= 1 and tb.window >= 1):
        raise WeightsError(f"{where}: unreadable time base (davel.timebase)")
    return tb


def _feature_norm(value: Any, where: str) -> FeatureNorm | None:
    try:
        return FeatureNorm.from_meta(value)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{where}: unreadable feature statistics (davel.feature_norm)") from exc


def _extractor(value: Any, where: str) -> Mapping[str, Any] | None:
    value = _typed(value, Mapping, "extractor", where)
    if value is not None and not isinstance(value.get("settings"), (Mapping, type(None))):
        raise WeightsError(f"{where}: unreadable davel.extractor (its settings are not an object)")
    return value


def _history(value: Any, where: str) -> tuple[Mapping[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, Mapping) for r in value):
        raise WeightsError(f"{where}: unreadable davel.history (expected a list of epoch records)")
    return tuple(value)
