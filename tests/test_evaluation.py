"""mAP parity with ANETdetection (tests/fixtures/detector/map_*.json).

Kind (see tests/helpers.py): float tolerance of 1e-6 on AP values in [0, 1]. The
matching is decided by comparisons of float64 tIoUs and scores (the fixture's
scores are all distinct, so argsort tie order cannot matter), and AP is a short
float64 sum: a few ulps apart at most on any CPU.
"""
import json

import numpy as np
import pytest

from davel.errors import DavelError
from davel.evaluation import (
    EvaluationError,
    evaluate_map,
    interpolated_average_precision,
    load_ground_truth,
    load_predictions,
    video_id_from_name,
)

TOL = 1e-6


@pytest.fixture
def det(fixtures):
    return fixtures / "detector"


@pytest.fixture
def preds(det):
    return json.loads((det / "map_pred.json").read_text())


@pytest.fixture
def expected(det):
    return json.loads((det / "map_expected.json").read_text())


def assert_matches(result, expected):
    np.testing.assert_allclose(result["tiou_thresholds"], expected["tiou_thresholds"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["mAP"], expected["mAP"], rtol=0, atol=TOL)
    assert abs(result["average_mAP"] - expected["average_mAP"]) <= TOL
    assert sorted(result["ap_per_class"]) == sorted(int(k) for k in expected["ap_per_class"])
    for label, ap in expected["ap_per_class"].items():
        np.testing.assert_allclose(result["ap_per_class"][int(label)], ap, rtol=0, atol=TOL)


def test_official_columns(det, preds, expected):
    assert_matches(evaluate_map(det / "map_gt.json", preds), expected)


def test_official_columns_float32_arrays(det, preds, expected):
    arrays = {k: (v if k == "video-id" else np.asarray(v, np.float32 if k != "label" else np.int64))
              for k, v in preds.items()}
    assert_matches(evaluate_map(det / "map_gt.json", arrays), expected)


def test_list_of_rows(det, preds, expected):
    keys = list(preds)
    rows = [dict(zip(keys, vals)) for vals in zip(*(preds[k] for k in keys))]
    assert_matches(evaluate_map(det / "map_gt.json", rows), expected)


def _official_database(preds):
    db = {}
    for vid, s, e, label, score in zip(*(preds[k] for k in ("video-id", "t-start", "t-end", "label", "score"))):
        db.setdefault(vid, []).append({"segment": [s, e], "label_id": label, "scores": score})
    return {"database": db}


def test_official_json_file(det, preds, expected, tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(_official_database(preds)))
    assert_matches(evaluate_map(str(det / "map_gt.json"), path), expected)


def _davel_videos(preds):
    return [{"video": f"/data/videos/{vid}.mp4",
             "events": [{"label": f"class {ev['label_id']}", "label_id": ev["label_id"],
                         "start": ev["segment"][0], "end": ev["segment"][1], "score": ev["scores"]}
                        for ev in events]}
            for vid, events in _official_database(preds)["database"].items()]


def test_davel_jsonl_and_json(det, preds, expected, tmp_path):
    videos = _davel_videos(preds)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("".join(json.dumps(v) + "\n" for v in videos))
    assert_matches(evaluate_map(det / "map_gt.json", jsonl), expected)
    as_json = tmp_path / "events.json"
    as_json.write_text(json.dumps(videos))
    assert_matches(evaluate_map(det / "map_gt.json", as_json), expected)
    one = load_predictions(videos[0])
    assert set(one.video_ids) == {video_id_from_name(videos[0]["video"])}


def test_ground_truth_split_and_duplicates(det, expected):
    gt = load_ground_truth(det / "map_gt.json", "test")
    assert len(gt) == expected["n_gt_after_dedup_test_split"]
    everything = load_ground_truth(det / "map_gt.json", None)
    assert len(everything) > len(gt)


def _gt(annotations, subset="Test"):
    return {"database": {"v": {"subset": subset, "annotations": [
        {"segment": list(seg), "label_id": label} for seg, label in annotations]}}}


def test_label_absent_from_ground_truth_uses_replace_quirk():
    # GT classes {3, 7} -> renumbered {0, 1}; a prediction labelled 1 passes the map
    # unchanged and is scored as renumbered class 1, i.e. as label 7.
    gt = _gt([((0.0, 10.0), 3), ((20.0, 30.0), 7)])
    preds = {"video-id": ["v", "v"], "t-start": [0.0, 20.0], "t-end": [10.0, 30.0],
             "label": [3, 1], "score": [0.9, 0.8]}
    result = evaluate_map(gt, preds, tiou_thresholds=[0.5])
    assert result["ap_per_class"] == {3: [1.0], 7: [1.0]}
    # a label >= number of GT classes is ignored
    preds["label"] = [3, 99]
    assert evaluate_map(gt, preds, tiou_thresholds=[0.5])["ap_per_class"] == {3: [1.0], 7: [0.0]}


def test_matching_takes_best_free_ground_truth():
    gt = _gt([((0.0, 10.0), 1), ((0.0, 8.0), 1), ((0.0, 10.0005), 1)])  # third: duplicate
    preds = {"video-id": ["v", "v", "v", "w"], "t-start": [0.0, 0.0, 0.0, 0.0],
             "t-end": [10.0, 10.0, 10.0, 10.0], "label": [1, 1, 1, 1], "score": [0.9, 0.8, 0.7, 0.95]}
    result = evaluate_map(gt, preds, tiou_thresholds=[0.5, 0.85])
    # by score: w (no GT -> FP), v 0.9 -> [0, 10] (TP), 0.8 -> [0, 8] (tIoU 0.8: TP at 0.5, FP at 0.85),
    # 0.7 -> nothing left (FP). At 0.5 the precision envelope is 2/3 at both recall steps.
    np.testing.assert_allclose(result["ap_per_class"][1], [2 / 3, 0.25], rtol=0, atol=1e-12)


def test_interpolated_average_precision():
    assert interpolated_average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) \
        == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_video_id_from_name():
    assert video_id_from_name("dev_000") == "dev_000"
    assert video_id_from_name("/a/b/-x_Yz9.mp4") == "-x_Yz9"
    assert video_id_from_name("C:\\videos\\abc.mkv") == "abc"
    assert video_id_from_name("clip.v2") == "clip.v2" and video_id_from_name("a.b.MP4") == "a.b"


def test_bad_inputs(det, tmp_path):
    with pytest.raises(EvaluationError):
        load_predictions({"foo": 1})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DavelError):
        load_predictions(bad)
    with pytest.raises(DavelError):
        load_predictions(tmp_path / "missing.json")
    with pytest.raises(DavelError):
        load_ground_truth({"videos": []})
    with pytest.raises(DavelError):
        evaluate_map(det / "map_gt.json", {"video-id": [], "t-start": [], "t-end": [], "label": [],
                                             "score": []}, subset="no-such-split")
