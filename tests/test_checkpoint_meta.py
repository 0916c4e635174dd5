"""davel/detectors/meta.py: a checkpoint's ``davel`` entry, typed, read and written by one pair.

Exact by construction (parsing; the statistics are copied, never computed).
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from davel.detectors.meta import CheckpointMeta
from davel.errors import WeightsError
from davel.feature_norm import FeatureNorm
from extractors.settings import ExtractionSettings
from extractors.timebase import ONE_PEACE, TimeBase

RELEASE = Path(__file__).parent / "fixtures" / "release-0.2.0"


def same(a, b) -> bool:
    """Equal documents, tensors compared by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def entry_of(rel: str) -> dict:
    with gzip.open(RELEASE / rel, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)["davel"]


@pytest.mark.parametrize("rel", ["run/last.pth.gz", "models/tiny-unav.pth.gz"])
def test_the_0_2_0_entries_round_trip(rel):
    entry = entry_of(rel)
    meta = CheckpointMeta.from_dict(entry)
    assert same(meta.to_dict(), entry)


def test_a_training_entry_is_typed():
    meta = CheckpointMeta.from_dict(entry_of("run/last.pth.gz"))
    assert meta.kind == "loco" and meta.labels == ("class0", "class1") and meta.format == 1
    assert meta.timebase == TimeBase(25.0, 8, 24) and meta.feature_norm.dims == (12, 4)
    assert meta.extraction_settings() == ExtractionSettings(short_side=128, crop=64, flow=False)
    assert meta.model_config["attention"] == "fixed" and meta.config["model"] == "loco"
    assert (meta.epoch, meta.epochs, meta.ema_updates, meta.best_epoch) == (1, 2, 3, 1)
    assert len(meta.history) == 1 and meta.history[0]["epoch"] == 1
    assert meta.feature_set is None and meta.origin is None and meta.extra == {}
    imported = CheckpointMeta.from_dict(entry_of("models/tiny-unav.pth.gz"))
    assert imported.kind == "unav" and imported.origin.startswith("release-0.2.0 fixture")
    assert imported.extraction_settings() is None and imported.feature_norm is None


def test_unknown_keys_nulls_and_new_fields_are_kept():
    norm = FeatureNorm(*(np.arange(n, dtype=np.float32) + 1 for n in (3, 3, 2, 2)))
    entry = {"labels": ["a"], "timebase": ONE_PEACE.as_dict(), "feature_set": "one-peace",
             "feature_norm": norm.to_meta(), "extractor": None, "best_epoch": None,
             "from_the_future": {"x": [1, 2]}, "note": None}
    meta = CheckpointMeta.from_dict(entry)
    assert meta.feature_set == "one-peace" and meta.timebase == ONE_PEACE
    assert meta.extra == {"from_the_future": {"x": [1, 2]}, "note": None}
    assert same(meta.to_dict(), entry)
    # a record made in code writes what has a value, and the nulls it names
    made = CheckpointMeta(kind="unav", labels=("a", "b"), best_epoch=None, nulls=frozenset({"best_epoch"}))
    assert made.to_dict() == {"model": "unav", "labels": ["a", "b"], "best_epoch": None}
    assert CheckpointMeta().to_dict() == {}


@pytest.mark.parametrize("entry, message", [
    ({"timebase": {"fps": 25.0}}, r"unreadable time base \(davel.timebase\)"),
    ({"timebase": {"fps": 0, "stride": 8, "window": 24}}, r"unreadable time base \(davel.timebase\)"),
    ({"feature_norm": {"visual_mean": torch.zeros(3)}}, r"unreadable feature statistics \(davel.feature_norm\)"),
    ({"labels": "dog,cat"}, r"unreadable class names \(davel.labels\)"),
    ({"labels": ["dog", 3]}, r"unreadable class names \(davel.labels\)"),
    ({"model": 3}, r"unreadable davel.model \(expected a string, got 3\)"),
    ({"model_config": [1]}, r"unreadable davel.model_config \(expected an object"),
    ({"extractor": {"settings": "fast"}}, r"unreadable davel.extractor"),
    ({"epoch": True}, r"unreadable davel.epoch \(expected an integer, got True\)"),
    ({"history": [1, 2]}, r"unreadable davel.history"),
])
def test_a_broken_entry_is_one_line(entry, message):
    with pytest.raises(WeightsError, match=f"^x.pth: {message}") as err:
        CheckpointMeta.from_dict(entry, "x.pth")
    assert "\n" not in str(err.value)
