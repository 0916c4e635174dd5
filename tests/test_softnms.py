"""Soft-NMS / hard NMS parity with UnAV's batched_nms (tests/fixtures/detector/softnms.npz).

Kinds (see tests/helpers.py): against the fixture, float tolerance (the port
keeps the reference's float32 arithmetic, but exp() and the voting average are
libm / SIMD reductions); against the literal loops below, exact by construction
(both sides run the same numpy float32 operations on the same machine).
"""
import numpy as np
import pytest
import torch

import davel.softnms as softnms
from davel.errors import DavelError
from davel.softnms import _SoftNMSClass, soft_nms_1d

from helpers import assert_same_detections, report, ulps


@pytest.fixture
def ref(fixtures):
    return dict(np.load(fixtures / "detector" / "softnms.npz"))


@pytest.mark.parametrize("name, kwargs", [
    ("soft", {}),
    ("soft_nocap", {"max_seg_num": 100000}),
    ("hard", {"method": "hard"}),
    ("agnostic_soft_voting", {"multiclass": False}),
])
def test_matches_batched_nms(ref, name, kwargs):
    params = dict(sigma=float(ref["sigma"]), min_score=float(ref["min_score"]),
                  max_seg_num=int(ref["max_seg_num"]), iou_threshold=float(ref["iou_threshold"]),
                  voting_thresh=float(ref["voting_thresh"]))
    params.update(kwargs)
    got = soft_nms_1d(ref["in_segments"], ref["in_scores"], ref["in_labels"], **params)
    expected = (ref[f"{name}_segments"], ref[f"{name}_scores"], ref[f"{name}_labels"])
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32 and got[2].dtype == np.int64
    # Segments are grid units of order 100, where one float32 ulp is 7.6e-6: the
    # voting average (a weighted mean) lands a few ulps away on other CPUs (4
    # ulps seen on an AVX-512 Xeon), so allow 16 ulps of the largest value.
    # Scores lie in (0, 1]; the Gaussian decay's exp() may differ by an ulp too.
    worst = assert_same_detections(got, expected, seg_tol=ulps(expected[0]),
                                   score_tol=ulps(expected[1]))
    report(f"softnms[{name}]", "max_abs_segment", worst[0])
    report(f"softnms[{name}]", "max_abs_score", worst[1])
    # descending score, as the reference returns them
    assert np.all(np.diff(got[1]) <= 0)


# A literal, one-candidate-at-a-time rendering of the reference loops, to check the
# vectorised version on inputs full of ties and drops (where iteration order matters).
def _iou32(a, b):
    inter = max(np.float32(0), min(a[1], b[1]) - max(a[0], b[0]))
    la = (a[1] - a[0]) + np.float32(1e-6)
    lb = (b[1] - b[0]) + np.float32(1e-6)
    return inter / ((la + lb) - inter)


def _literal_soft(segs, scores, sigma, min_score):
    rows = [[segs[k], scores[k], k] for k in range(len(scores))]
    picked = []
    i = 0
    while i < len(rows):
        best = i
        for p in range(i + 1, len(rows)):
            if rows[best][1] < rows[p][1]:
                best = p
        rows[i], rows[best] = rows[best], rows[i]
        picked.append((rows[i][2], rows[i][1]))
        p = i + 1
        while p < len(rows):
            ovr = _iou32(rows[i][0], rows[p][0])
            w = np.float32(np.exp(np.float64(-(ovr * ovr) / np.float32(sigma))))
            rows[p][1] = np.float32(rows[p][1] * w)
            if rows[p][1] < np.float32(min_score):
                rows[p] = rows[-1]
                rows.pop()
                continue
            p += 1
        i += 1
    return picked


@pytest.mark.parametrize("seed", range(4))
def test_soft_matches_literal_loop_on_ties(seed):
    rng = np.random.default_rng(seed)
    n = 150
    start = rng.integers(0, 30, n).astype(np.float32)
    segs = np.stack([start, start + rng.integers(1, 8, n)], 1).astype(np.float32)
    scores = (rng.integers(1, 12, n) / 12).astype(np.float32)  # many exact ties
    min_score = 0.3  # high, so many candidates are dropped and slots get refilled
    expected = _literal_soft(segs, scores, 0.4, min_score)

    # selection order inside one class (before the final re-sort)
    selector = _SoftNMSClass(segs, scores, 0.4, min_score, cap=10**6)
    got_seq = list(iter(selector.next, None))
    assert [k for k, _ in got_seq] == [k for k, _ in expected]
    np.testing.assert_array_equal(np.float32([s for _, s in got_seq]), np.float32([s for _, s in expected]))

    # and through the public function: the same multiset of (segment, score)
    got = soft_nms_1d(segs, scores, np.zeros(n, np.int64), min_score=min_score, max_seg_num=10**6)
    exp_rows = sorted((float(segs[k][0]), float(segs[k][1]), float(s)) for k, s in expected)
    got_rows = sorted((float(a), float(b), float(s)) for (a, b), s in zip(got[0], got[1]))
    assert got_rows == exp_rows


def _literal_hard(segs, scores, iou_threshold, min_score):
    valid = np.flatnonzero(scores > np.float32(min_score))
    order = valid[torch.sort(torch.from_numpy(scores[valid]), descending=True).indices.numpy()]
    alive = [True] * len(order)
    kept = []
    for a in range(len(order)):
        if not alive[a]:
            continue
        kept.append(int(order[a]))
        for b in range(a + 1, len(order)):
            if alive[b] and _iou32(segs[order[a]], segs[order[b]]) >= np.float32(iou_threshold):
                alive[b] = False
    return kept


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_hard_matches_literal_loop(thr):
    rng = np.random.default_rng(int(thr * 10))
    n = 200
    start = rng.uniform(0, 50, n).astype(np.float32)
    segs = np.stack([start, start + rng.uniform(0, 15, n).astype(np.float32)], 1)
    scores = (rng.integers(0, 30, n) / 30).astype(np.float32)
    expected = _literal_hard(segs, scores, thr, 0.001)
    got = soft_nms_1d(segs, scores, np.zeros(n, np.int64), method="hard", iou_threshold=thr,
                      max_seg_num=10**6)
    assert sorted(map(tuple, got[0].tolist())) == sorted(map(tuple, segs[expected].tolist()))


def _reference_merge(segs, scores, labels, cap, min_score=0.001):
    """Every class run to its cap with the literal loop, concatenated, torch.sort, cut."""
    inds, dets = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked = _literal_soft(segs[members], scores[members], 0.4, min_score)[:cap]
        inds += [members[k] for k, _ in picked]
        dets += [s for _, s in picked]
    dets = np.asarray(dets, np.float32)
    order = torch.sort(torch.from_numpy(dets), descending=True).indices.numpy()[:cap]
    return segs[np.asarray(inds)[order]], dets[order], labels[np.asarray(inds)[order]]


@pytest.mark.parametrize("tied", [False, True])
def test_lazy_class_merge_equals_full_run(tied, monkeypatch):
    rng = np.random.default_rng(5)
    n = 400
    start = rng.uniform(0, 60, n).astype(np.float32)
    segs = np.stack([start, start + rng.uniform(0.5, 12, n).astype(np.float32)], 1)
    scores = rng.uniform(0.01, 1, n).astype(np.float32)
    if tied:  # exact ties: the reference's torch.sort decides, so every class is run out
        scores = (np.round(scores * 8) / 8 + np.float32(0.01)).astype(np.float32)
    labels = rng.integers(0, 7, n)
    for cap in (1, 5, 30):
        got = soft_nms_1d(segs, scores, labels, max_seg_num=cap)
        expected = _reference_merge(segs, scores, labels, cap)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    # beyond the work limit, ties keep class order: same detections, possibly reordered
    monkeypatch.setattr(softnms, "_COMPLETE_WORK_LIMIT", 0)
    got = soft_nms_1d(segs, scores, labels, max_seg_num=30)
    expected = _reference_merge(segs, scores, labels, 30)
    if not tied:
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    else:
        np.testing.assert_array_equal(got[1], expected[1])


def test_pooled_windows_of_an_hour(fixtures):
    """100 half-overlapping windows of candidates (what the pipeline pools for 1 h of
    CCNet input), cap 100 per window: runs in about a second."""
    z = np.load(fixtures / "detector" / "ccnet_T224.npz")
    rng = np.random.default_rng(0)
    segs = np.concatenate([z["cand_segments"] + np.float32(112 * w) for w in range(100)])
    scores = np.concatenate([z["cand_scores"] * np.float32(rng.uniform(0.9, 1)) for _ in range(100)])
    labels = np.tile(z["cand_labels"], 100)
    out_segs, out_scores, out_labels = soft_nms_1d(segs, scores, labels, max_seg_num=10_000)
    assert out_segs.shape == (10_000, 2)
    assert np.all(np.diff(out_scores) <= 0)
    # the best detection is the best candidate
    assert out_scores[0] == scores.max()


def test_cap_keeps_the_highest(ref):
    full = soft_nms_1d(ref["in_segments"], ref["in_scores"], ref["in_labels"], max_seg_num=100000)
    capped = soft_nms_1d(ref["in_segments"], ref["in_scores"], ref["in_labels"], max_seg_num=7)
    assert len(capped[1]) == 7
    np.testing.assert_array_equal(capped[1], full[1][:7])


def test_hard_respects_threshold():
    segs = np.array([[0, 10], [1, 10], [0, 4], [20, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.0005], np.float32)
    out_segs, out_scores, _ = soft_nms_1d(segs, scores, np.zeros(4, np.int64), method="hard")
    # [1, 10] overlaps [0, 10] by 0.9 -> suppressed; [0, 4] by 0.4 -> kept; 0.0005 < min_score
    np.testing.assert_array_equal(out_segs, [[0, 10], [0, 4]])
    np.testing.assert_array_equal(out_scores, np.float32([0.9, 0.7]))


def test_empty_and_bad_inputs():
    segs, scores, labels = soft_nms_1d(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))
    assert segs.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)
    with pytest.raises(DavelError):
        soft_nms_1d(np.zeros((3, 2)), np.zeros(3), np.zeros(3), method="linear")
    with pytest.raises(DavelError):
        soft_nms_1d(np.zeros((3, 3)), np.zeros(3), np.zeros(3))
    with pytest.raises(DavelError):
        soft_nms_1d(np.zeros((3, 2)), np.zeros(3), np.zeros(3), max_seg_num=0)
