"""extractors/feature_files.py FeatureMeta: the sidecar ``<stem>_davel.json``, typed.

Exact by construction (parsing and JSON only).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from extractors import feature_files
from extractors.feature_files import NO_SIDECAR, FeatureMeta, Features
from extractors.settings import ExtractionSettings
from extractors.timebase import I3D_VGGISH
from weights.errors import InputError

SIDECAR = Path(__file__).parent / "fixtures" / "release-0.2.0" / "extracted" / "clip_davel.json"


def test_an_extracted_sidecar_round_trips_and_is_typed():
    doc = json.loads(SIDECAR.read_text())  # written by `davel extract` 0.2.0
    meta = FeatureMeta.from_dict(doc)
    assert meta.to_dict() == doc
    assert (meta.video, meta.steps, meta.audio_steps, meta.frames) == ("clip.mp4", 4, 5, 50)
    assert meta.duration == 2.0 and meta.size == (160, 120) and meta.device == "cpu"
    assert meta.timebase == I3D_VGGISH and meta.weights["raft"] == "raft-sintel.pth"
    assert meta.extraction_settings() == ExtractionSettings(raft_iterations=2, short_side=128, crop=64)
    # read like the dict of 0.2.0
    assert meta["T"] == 4 and meta.get("settings_key") == doc["settings_key"] and dict(meta) == doc


def test_unknown_keys_and_nulls_are_kept_and_nothing_is_added():
    doc = {"T": 3, "container_duration": None, "one_peace": {"model": "x"}, "note": None}
    meta = FeatureMeta.from_dict(doc)
    assert meta.steps == 3 and meta.container_duration is None and meta.duration is None
    assert meta.extra == {"one_peace": {"model": "x"}, "note": None}
    assert meta.to_dict() == doc
    assert FeatureMeta.from_dict({}).to_dict() == {} and NO_SIDECAR.to_dict() == {} and not NO_SIDECAR
    assert FeatureMeta.from_dict({}).timebase is None and FeatureMeta().extraction_settings() is None
    # what the extractor writes: every field, the container's duration null when it has none
    made = FeatureMeta(video="v.mp4", duration=2.0, nulls=frozenset({"container_duration"}))
    assert made.to_dict() == {"video": "v.mp4", "duration": 2.0, "container_duration": None}


@pytest.mark.parametrize("doc, message", [
    ({"T": "4"}, "'T' must be an integer, got '4'"),
    ({"T_audio": True}, "'T_audio' must be an integer, got True"),
    ({"duration": "2 s"}, "'duration' must be a number"),
    ({"settings": [1]}, "'settings' must be an object"),
    ({"size": [160]}, "'size' must be \\[width, height\\]"),
    ([], "expected an object"),
])
def test_a_sidecar_of_the_wrong_types_is_one_line(doc, message):
    with pytest.raises(InputError, match=f"^v_davel.json: unreadable sidecar: {message}"):
        FeatureMeta.from_dict(doc, "v_davel.json")


def test_features_carry_it_and_write_it_back(tmp_path):
    a = np.ones((3, 2), np.float32)
    plain = Features(a, a, a)
    assert plain.meta is NO_SIDECAR
    feature_files.write(tmp_path, "x", plain)
    assert json.loads((tmp_path / "x_davel.json").read_text()) == {}
    given = Features(a, a, a, meta={"T": 3, "duration": 1.0})  # a dict, as 0.2.0 took
    assert isinstance(given.meta, FeatureMeta) and given.meta.steps == 3
    feature_files.write(tmp_path, "y", given)
    assert feature_files.read(tmp_path / "y").meta == given.meta
    assert feature_files.read_meta(tmp_path / "none") is None
    (tmp_path / "z_davel.json").write_text('{"T": "many"}')
    with pytest.raises(InputError, match="z_davel.json: unreadable sidecar"):
        feature_files.read_meta(tmp_path / "z")
    for s in ("rgb", "flow", "vggish"):
        np.save(tmp_path / f"z_{s}.npy", a)
    assert not feature_files.is_complete(tmp_path, "z", "key")  # damaged: made again
