"""davel/results.py: the result document and its one reader, strict (eval) and lenient (viewer).

The same bad values are refused by both readers with the same one-line message;
only what a file may lack differs (exact by construction: parsing, no floats computed).
"""
from __future__ import annotations

import json

import pytest

from davel.errors import EvaluationError, InputError
from davel.evaluation import load_predictions
from davel.results import DetectionResult, Event, read_label_id, read_number, video_id_from_name
from davel.viewer.errors import ResultFileError
from davel.viewer.results import load_results
from extractors.timebase import I3D_VGGISH


def full_result(**event) -> dict:
    ev = {"label": "dog", "label_id": 3, "start": 1.0, "end": 2.5, "score": 0.9, **event}
    ev = {k: v for k, v in ev.items() if v is not DROP}
    return {"video": "/data/clip.mp4", "duration": 10.0, "model": "unav",
            "checkpoint": {"name": "unav.pth", "sha256": "0" * 64}, "timebase": I3D_VGGISH.as_dict(),
            "num_steps": 29, "windows": 1, "events": [ev]}


DROP = object()


def test_a_detect_result_round_trips():
    doc = full_result()
    for strict in (True, False):
        result = DetectionResult.from_dict(doc, strict=strict)
        assert result.to_dict() == doc
        assert result.events == [Event("dog", 3, 1.0, 2.5, 0.9)] and result.timebase == I3D_VGGISH


@pytest.mark.parametrize("event, message", [
    ({"label_id": 2.7}, '"label_id" must be an integer, got 2.7'),
    ({"label_id": "two"}, '"label_id" must be an integer, got \'two\''),
    ({"label_id": True}, '"label_id" must be an integer, got True'),
    ({"start": "one second"}, '"start" must be a number, got \'one second\''),
    ({"end": float("nan")}, '"end" must be a number, got nan'),
    ({"score": None}, '"score" must be a number, got None'),
    ({"score": False}, '"score" must be a number, got False'),
    ({"start": 3.0}, "ends (2.5 s) before it starts (3 s)"),
    ({"label": 7}, '"label" must be a string, got 7'),
])
def test_strict_and_lenient_refuse_the_same_bad_values_alike(event, message):
    doc = full_result(**event)
    lines = []
    for strict in (True, False):
        with pytest.raises(InputError) as err:
            DetectionResult.from_dict(doc, strict=strict, where="r.json")
        lines.append(str(err.value))
    assert lines[0] == lines[1] == f"r.json, video '/data/clip.mp4', event 0: {message}"


def test_eval_and_the_viewer_refuse_a_fractional_label_id_with_the_same_line(tmp_path):
    """0.2.0's viewer made lane 2 of label_id 2.7; eval refused it. Now both refuse it."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(full_result(label_id=2.7)))
    with pytest.raises(EvaluationError) as by_eval:
        load_predictions(path)
    with pytest.raises(ResultFileError) as by_viewer:
        load_results(path)
    assert '"label_id" must be an integer, got 2.7' in str(by_eval.value)
    assert str(by_eval.value).split(": ", 1)[1] == str(by_viewer.value).split(": ", 1)[1]


def test_what_a_hand_written_file_may_lack_only_the_lenient_reader_fills_in():
    doc = {"video": "a.mp4", "events": [{"label": "dog", "start": 1.0, "end": 4.0}]}
    with pytest.raises(InputError, match='"label_id" must be an integer, got None'):
        DetectionResult.from_dict(doc)
    with_id = {"video": "a.mp4", "events": [{"label_id": 1, "start": 1.0, "end": 4.0}]}
    with pytest.raises(InputError, match='"score" must be a number, got None'):
        DetectionResult.from_dict(with_id)
    lenient = DetectionResult.from_dict(doc, strict=False)
    assert lenient.events == [Event("dog", None, 1.0, 4.0, 1.0)] and lenient.duration == 4.0
    assert DetectionResult.from_dict(with_id, strict=False).events[0].label == "class_1"
    # eval needs no duration, model or time base (the official-style davel files of the tests lack them)
    strict = DetectionResult.from_dict({**with_id, "events": [{**with_id["events"][0], "score": 0.5}]})
    assert strict.duration is None and strict.model is None and strict.timebase is None
    assert strict.to_dict() == {"video": "a.mp4", "events": [
        {"label": "class_1", "label_id": 1, "start": 1.0, "end": 4.0, "score": 0.5}]}
    with pytest.raises(InputError, match="no label"):
        DetectionResult.from_dict({"video": "a.mp4", "events": [{"start": 0, "end": 1}]}, strict=False)


@pytest.mark.parametrize("doc, message", [
    ([], "expected a davel result object, got list"),
    ({"video": "a.mp4"}, 'no "events" list'),
    ({"video": "", "events": []}, 'no "video" name'),
    ({"video": "a.mp4", "events": [], "duration": 0}, "no positive duration"),
    ({"video": "a.mp4", "events": [], "duration": "long"}, '"duration" must be a number'),
    ({"video": "a.mp4", "events": [], "duration": 5, "model": 5}, '"model" must be a string'),
    ({"video": "a.mp4", "events": [], "duration": 5, "num_steps": 2.5}, '"num_steps" must be an integer'),
    ({"video": "a.mp4", "events": [], "duration": 5, "timebase": "i3d"}, '"timebase" must be'),
])
def test_the_document_itself_is_checked_by_both(doc, message):
    for strict in (True, False):
        with pytest.raises(InputError, match=message):
            DetectionResult.from_dict(doc, strict=strict)
    with pytest.raises(InputError, match="no positive duration"):  # nothing to guess from
        DetectionResult.from_dict({"video": "a.mp4", "events": []}, strict=False)


def test_numbers_and_label_ids():
    assert read_number("1.5", "x", "w") == 1.5 and read_number(2, "x", "w") == 2.0
    assert read_label_id(3.0, "w") == 3 and read_label_id("3", "w") == 3
    for bad in (None, True, [1], "inf", float("inf")):
        with pytest.raises(InputError):
            read_number(bad, "x", "w")
    assert video_id_from_name("/a/b/-x_Yz9.mp4") == "-x_Yz9" and video_id_from_name("clip.v2") == "clip.v2"
