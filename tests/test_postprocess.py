"""Decoding + NMS + seconds parity with the detectors' inference_single_video / postprocessing.

Kinds (see tests/helpers.py): float tolerance throughout. The sigmoid is a
vectorised libm kernel whose last bit differs between CPUs, so candidates of
near-equal probability may be ordered differently: they are matched per label
as multisets, never by position. Clamping and masks are exact by construction.
"""
import numpy as np
import pytest
import torch

from davel.detectors.output import DetectorOutput
from davel.postprocess import Detections, PostprocessConfig, candidates, nms_to_seconds, postprocess, to_seconds
from extractors.timebase import I3D_VGGISH, TimeBase

from helpers import assert_same_detections, report

MODEL_FIXTURES = ["unav_T150", "unav_T300", "ccnet_T150", "ccnet_T224"]


def output_from_fixture(z) -> DetectorOutput:
    """The fixture's per-level arrays as a batch-of-one DetectorOutput."""
    levels = range(6)
    return DetectorOutput(
        cls_logits=[torch.from_numpy(z[f"cls_logits_l{i}"])[None] for i in levels],
        offsets=[torch.from_numpy(z[f"offsets_l{i}"])[None] for i in levels],
        masks=[torch.from_numpy(z[f"mask_l{i}"])[None] for i in levels],
        points=[torch.from_numpy(z[f"points_l{i}"]) for i in levels],
    )


def timebase_of(z) -> TimeBase:
    return TimeBase(float(z["fps"]), int(z["feat_stride"]), int(z["num_frames"]))


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_candidates_match_inference_single_video(fixtures, name):
    z = np.load(fixtures / "detector" / f"{name}.npz")
    segs, scores, labels = candidates(output_from_fixture(z))
    assert segs.shape == z["cand_segments"].shape
    worst = assert_same_detections((segs, scores, labels),
                                   (z["cand_segments"], z["cand_scores"], z["cand_labels"]),
                                   seg_tol=1e-5, score_tol=1e-6)
    report(f"candidates[{name}]", "max_abs_segment", worst[0])
    report(f"candidates[{name}]", "max_abs_score", worst[1])
    # each level comes out by descending probability, as the reference's sort leaves it
    out = output_from_fixture(z)
    for i in range(6):
        level = DetectorOutput([out.cls_logits[i]], [out.offsets[i]], [out.masks[i]], [out.points[i]])
        assert np.all(np.diff(candidates(level)[1]) <= 0)


@pytest.mark.parametrize("name", MODEL_FIXTURES)
def test_final_detections_match_model_output(fixtures, name):
    z = np.load(fixtures / "detector" / f"{name}.npz")
    det = postprocess(output_from_fixture(z), float(z["duration"]), timebase_of(z))
    assert isinstance(det, Detections)
    worst = assert_same_detections(tuple(det), (z["segments_sec"], z["scores"], z["labels"]),
                                   seg_tol=1e-3, score_tol=1e-4)
    report(f"final[{name}]", "max_abs_seconds", worst[0])
    report(f"final[{name}]", "max_abs_score", worst[1])
    assert det.segments.min() >= 0 and det.segments.max() <= np.float32(z["duration"])


def test_postprocessing_clamps_like_reference(fixtures):
    z = np.load(fixtures / "detector" / "postprocess.npz")
    det = nms_to_seconds(z["in_segments_grid"], z["in_scores"], z["in_labels"],
                         float(z["duration"]), timebase_of(z))
    expected = (z["segments_sec"], z["scores"], z["labels"])
    assert_same_detections(tuple(det), expected, seg_tol=1e-5, score_tol=1e-6)
    # the fixture reaches both clamps: -0.0 starts and segments collapsed to [d, d]
    assert np.signbit(det.segments).sum() == np.signbit(z["segments_sec"]).sum() > 0
    dur = np.float32(z["duration"])
    assert (det.segments == dur).all(axis=1).sum() == (z["segments_sec"] == dur).all(axis=1).sum() > 0


def test_to_seconds_clamp_semantics():
    tb = I3D_VGGISH
    g = np.array([[-5.0, 0.0], [-1.5, 2.0], [200.0, 300.0]], np.float32)
    sec = to_seconds(g, duration=40.0, timebase=tb)
    assert sec.dtype == np.float32
    # -5 -> 0.32 * -5 + 0.48 < 0 -> -0.0; -1.5 -> 0.0 exactly (0.48 - 0.48)
    assert sec[0, 0] == 0 and np.signbit(sec[0, 0])
    assert sec[0, 1] == np.float32(0.48)
    assert sec[1, 0] == 0
    np.testing.assert_array_equal(sec[2], np.float32([40.0, 40.0]))
    np.testing.assert_allclose(sec[1, 1], 0.32 * 2 + 0.48, rtol=1e-6)
    assert to_seconds(np.zeros((0, 2)), 10.0).shape == (0, 2)


def test_config_defaults_are_the_test_cfg():
    cfg = PostprocessConfig()
    assert (cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.duration_thresh) == (0.001, 2000, 0.05)
    assert (cfg.method, cfg.multiclass, cfg.nms_sigma, cfg.min_score, cfg.max_seg_num) == \
        ("soft", True, 0.4, 0.001, 100)
    assert (cfg.iou_threshold, cfg.voting_thresh) == (0.7, 0.75)


def test_one_hour_video_candidate_set():
    """11250 feature steps (1 h) -> padded 11264; the top-k caps keep NMS small."""
    gen = torch.Generator().manual_seed(0)
    steps, padded, num_classes = 11250, 11264, 100
    logits, offsets, masks, points = [], [], [], []
    for i in range(6):
        n, stride = padded >> i, 2 ** i
        logits.append(torch.randn(1, n, num_classes, generator=gen) * 1.5 - 1.0)
        offsets.append(torch.rand(1, n, num_classes, 2, generator=gen) * 3.0)
        masks.append((torch.arange(n) * stride < steps)[None])
        t = torch.arange(n, dtype=torch.float32) * stride
        points.append(torch.stack([t, torch.zeros(n), torch.zeros(n), torch.full((n,), float(stride))], 1))
    out = DetectorOutput(logits, offsets, masks, points)
    segs, scores, labels = candidates(out)
    assert 6 * 1900 < len(scores) <= 6 * 2000
    duration = I3D_VGGISH.covered_seconds(steps)
    det = postprocess(out, duration)
    assert det.segments.shape == (100, 2) and det.scores.shape == (100,)
    assert np.all(np.diff(det.scores) <= 0)
    assert det.segments.min() >= 0 and det.segments.max() <= np.float32(duration)
