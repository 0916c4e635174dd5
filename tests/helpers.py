"""Helpers shared by the tests: tolerances any CPU can meet, and matching of detections.

Parity tests come in two kinds, and each says which it is in its docstring:

* **exact by construction**: the computation has no float rounding that could
  differ between machines (integer quantisation, copies, frame selection,
  masks, hashes, the same function run twice on the same input);
* **float tolerance**: anything that went through BLAS, a reduction, libm or
  a vectorised kernel. Those differ between CPUs, SIMD widths and library
  builds by a few float32 ulps per operation, and by more after long chains
  (a detector is hundreds of layers). Tolerances are then either a number of
  float32 ulps of the largest magnitude (:func:`ulps`) or calibrated on the
  spread measured between CPU code paths (the parity READMEs and the issue
  notes give the figures).

Detections are matched as multisets per label (:func:`assert_same_detections`):
two events whose scores differ by less than the score tolerance may come out
in either order on another CPU, so positions are never compared.

``DAVEL_TEST_REPORT=FILE`` makes :func:`report` append the deviations the
parity tests measure to FILE (JSON Lines): run the suite on two CPU code paths
and compare the files to see how far each test's numbers move.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def ulps(values, n: int = 16) -> float:
    """``n`` float32 ulps at the largest magnitude of ``values`` (a tolerance that scales)."""
    top = float(np.max(np.abs(np.asarray(values, dtype=np.float64)))) if np.size(values) else 0.0
    return n * float(np.spacing(np.float32(top)))


def report(test: str, metric: str, value: float) -> None:
    """Record a measured deviation when ``DAVEL_TEST_REPORT`` names a file (else nothing)."""
    path = os.environ.get("DAVEL_TEST_REPORT")
    if path:
        with open(path, "a", encoding="utf8") as f:
            f.write(json.dumps({"test": test, "metric": metric, "value": float(value)}) + "\n")


def _pairs(got: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> list[tuple[int, int]]:
    """Pair rows of ``got`` with rows of ``expected`` (same length), nearest first.

    The distance is the largest per-column difference in units of ``scale``
    (the column tolerances), so a pairing never trades a small time error for
    a score error past its tolerance. Globally greedy: the closest pair of all
    is fixed first, then the closest among the rest, and so on.
    """
    dist = (np.abs(got[:, None, :] - expected[None, :, :]) / scale).max(axis=2)
    pairs = []
    for flat in np.argsort(dist, axis=None, kind="stable"):
        g, e = divmod(int(flat), len(expected))
        if np.isfinite(dist[g, e]):
            pairs.append((g, e))
            dist[g, :] = np.inf
            dist[:, e] = np.inf
    return pairs


def assert_same_detections(got: Sequence, expected: Sequence, seg_tol: float = 1e-6,
                           score_tol: float = 1e-6) -> tuple[float, float]:
    """``(segments [N, 2], scores [N], labels [N])`` equal as multisets keyed by label.

    The counts and the label multisets must agree exactly; within each label,
    rows are paired nearest first and every pair must lie within ``seg_tol`` on
    both ends and ``score_tol`` on the score. Returns the worst differences.
    """
    (gs, gc, gl), (es, ec, el) = ((np.asarray(x) for x in t) for t in (got, expected))
    assert len(gc) == len(ec), f"{len(gc)} detections, expected {len(ec)}"
    assert sorted(gl.tolist()) == sorted(el.tolist()), "the labels differ"
    scale = np.array([max(seg_tol, 1e-12)] * 2 + [max(score_tol, 1e-12)])
    worst_seg = worst_score = 0.0
    for label in np.unique(el):
        g = np.c_[gs[gl == label], gc[gl == label]].astype(np.float64)
        e = np.c_[es[el == label], ec[el == label]].astype(np.float64)
        for i, j in _pairs(g, e, scale):
            worst_seg = max(worst_seg, float(np.abs(g[i, :2] - e[j, :2]).max()))
            worst_score = max(worst_score, float(abs(g[i, 2] - e[j, 2])))
    assert worst_seg <= seg_tol, f"segments differ by {worst_seg} (tolerance {seg_tol})"
    assert worst_score <= score_tol, f"scores differ by {worst_score} (tolerance {score_tol})"
    return worst_seg, worst_score


def events_as_arrays(events: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """davel's event dicts -> ``(segments [N, 2], scores [N], label ids [N])``."""
    segs = np.array([[e["start"], e["end"]] for e in events], dtype=np.float64).reshape(-1, 2)
    return segs, np.array([e["score"] for e in events], np.float64), \
        np.array([e["label_id"] for e in events], np.int64)


def assert_same_events(events: Sequence[dict], expected: Sequence, time_tol: float = 1e-3,
                       score_tol: float = 1e-4) -> tuple[float, float]:
    """A result's events against ``(segments_sec, scores, labels)`` of the original code.

    Float tolerance: the default time (1e-3 s) and score (1e-4) tolerances are
    those of the detector parity README, well above the 1e-6 spread measured
    between CPU code paths. Scores must also come out in descending order.
    """
    scores = [e["score"] for e in events]
    assert scores == sorted(scores, reverse=True), "events are not in descending score"
    return assert_same_detections(events_as_arrays(events), expected, time_tol, score_tol)


# ---------------------------------------------------------------- a tiny training set

DIM_RGB, DIM_AUD = 6, 4


# Training settings small enough for a test: two epochs of a 16-wide model on
# :func:`make_dataset`'s ten videos.
TINY = dict(epochs=2, warmup_epochs=1, batch_size=3, lr=2e-3, embd_dim=16, head_dim=16,
            dependency_dim=4, max_seq_len=32, ema_decay=0.9)


def make_dataset(root: Path, n_train: int = 6, n_val: int = 2, n_test: int = 2, seed: int = 0,
                 classes: int = 2, dims: tuple[int, int] = (DIM_RGB, DIM_AUD)) -> tuple[Path, Path]:
    """Annotations + features where class c raises rgb channels 2c..2c+1 and audio channel c
    during its event (one event per video): ``(annotation file, features folder)``."""
    from extractors.feature_files import Features, write

    dim_rgb, dim_aud = dims
    rng = np.random.default_rng(seed)
    feats = root / "feats"
    feats.mkdir(parents=True)
    db = {}
    for subset, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        for k in range(n):
            vid = f"{subset}_{k}"
            t = int(rng.integers(20, 45))
            rgb = rng.normal(0, 0.3, (t, dim_rgb)).astype(np.float32)
            flow = rng.normal(0, 0.3, (t, dim_rgb)).astype(np.float32)
            aud = rng.normal(0, 0.3, (t, dim_aud)).astype(np.float32)
            c = int(rng.integers(0, classes))
            length = int(rng.integers(4, 10))
            s = int(rng.integers(0, t - length))
            rgb[s:s + length, 2 * c:2 * c + 2] += 2
            aud[s:s + length, c] += 2
            write(feats, vid, Features(rgb, flow, aud))
            db[vid] = {"subset": subset, "duration": (8 * (t - 1) + 24) / 25,
                       "annotations": [{"segment": [(8 * s + 12) / 25, (8 * (s + length) + 12) / 25],
                                        "label": f"class{c}", "label_id": c}]}
    ann = root / "ann.json"
    ann.write_text(json.dumps({"database": db}))
    return ann, feats


def read_state(path: Path) -> dict:
    """A checkpoint written by :func:`davel.train.train`, loaded on the CPU (tensors only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
