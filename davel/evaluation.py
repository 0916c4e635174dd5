"""Temporal detection mAP, reproducing UnAV/CCNet's ``ANETdetection`` (numpy only).

What the reference does, including its quirks:

* Ground truth: videos whose ``subset.lower()`` equals the requested split;
  within a video an annotation is dropped when an earlier kept one has the same
  ``label_id`` and both ends within 1e-3 s.
* Classes are the ``label_id`` values present in that ground truth, renumbered
  0..n-1 in ascending order. Predicted labels are renumbered through the same
  map; a label missing from it passes through unchanged, so a stray label in
  0..n-1 is scored as that renumbered class and one >= n is ignored.
* Per class, predictions by descending score (numpy ``argsort`` reversed); each
  one, per tIoU threshold, takes the highest-tIoU ground truth of its video that
  is not taken yet if that tIoU >= threshold (TP), else it is a FP.
* AP is VOC all-point interpolated; a class without predictions has AP 0; mAP
  is the mean over classes, ``average_mAP`` the mean over thresholds.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from davel.annotations import Annotations, read_annotations
from davel.errors import EvaluationError, InputError
from davel.outputs import read_json_documents
from davel.results import DetectionResult, read_label_id, read_number, video_id_from_name

DEFAULT_TIOU_THRESHOLDS = np.linspace(0.1, 0.9, 9)
_DUPLICATE_TOL = 1e-3
_OFFICIAL_KEYS = ("video-id", "t-start", "t-end", "label", "score")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentTable:
    """Flat table of temporal segments (one row each).

    ``video_ids`` ``[N]`` str, ``starts``/``ends`` ``[N]`` float64 seconds,
    ``labels`` ``[N]`` int64 label ids, ``scores`` ``[N]`` float64 (None for
    ground truth).
    """

    video_ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> SegmentTable:
        return SegmentTable(self.video_ids[idx], self.starts[idx], self.ends[idx],
                            self.labels[idx], None if self.scores is None else self.scores[idx])


def _table(vids, starts, ends, labels, scores=None) -> SegmentTable:
    vids = np.asarray([str(v) for v in vids], dtype=object)
    n = len(vids)
    arrays = [_float64(starts), _float64(ends), _int64(labels)]
    if scores is not None:
        arrays.append(_float64(scores))
    if any(a.shape != (n,) for a in arrays):
        raise EvaluationError("prediction columns have different lengths")
    return SegmentTable(vids, *arrays[:3], arrays[3] if scores is not None else None)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _float64(x) -> np.ndarray:
    # float32 inputs widen exactly, as the reference's .tolist() does
    return _to_numpy(x).astype(np.float64).reshape(-1)


def _int64(x) -> np.ndarray:
    return _to_numpy(x).astype(np.int64).reshape(-1)


def _read_json(path: str | Path) -> Any:
    """A JSON document, or the list of the objects of a JSON Lines file."""
    docs = read_json_documents(path, EvaluationError)
    return docs[0] if len(docs) == 1 else docs


# ----------------------------------------------------------------- ground truth
def _is_duplicate(seg, label, kept) -> bool:
    return any(abs(seg[0] - k[0]) <= _DUPLICATE_TOL and abs(seg[1] - k[1]) <= _DUPLICATE_TOL
               and label == k[2] for k in kept)


def load_ground_truth(source: str | Path | Mapping | Annotations,
                      subset: str | None = "test") -> SegmentTable:
    """UnAV-100 annotations (a path, the parsed JSON or :class:`Annotations`) -> ground-truth table.

    Read by :func:`davel.annotations.read_annotations`; only videos of
    ``subset`` (lower-cased) are kept (all when ``subset`` is None) and
    near-duplicate annotations are dropped as the reference does.
    """
    ann = source if isinstance(source, Annotations) else read_annotations(source)
    vids, starts, ends, labels = [], [], [], []
    for video in ann.subset(subset):
        kept: list[tuple] = []
        for (s, e), label in zip(video.segments.tolist(), video.labels.tolist()):
            if not _is_duplicate((s, e), label, kept):
                kept.append((s, e, label))
        for s, e, label in kept:
            vids.append(video.video_id)
            starts.append(s)
            ends.append(e)
            labels.append(label)
    return _table(vids, starts, ends, labels)


# ------------------------------------------------------------------ predictions
def _from_official_columns(d: Mapping) -> SegmentTable:
    return _table(list(d["video-id"]), d["t-start"], d["t-end"], d["label"], d["score"])


def _from_official_database(db: Mapping, where: str) -> SegmentTable:
    vids, starts, ends, labels, scores = [], [], [], [], []
    for vid, events in db.items():
        if not isinstance(events, list):
            raise EvaluationError(f"{where}, video {vid!r}: expected a list of events, got {events!r:.60}")
        for k, ev in enumerate(events):
            at = f"{where}, video {vid!r}, event {k}"
            if not isinstance(ev, Mapping):
                raise EvaluationError(f"{at}: expected an object, got {ev!r:.60}")
            seg = ev.get("segment")
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise EvaluationError(f'{at}: "segment" must be [start, end], got {seg!r:.60}')
            vids.append(vid)
            starts.append(read_number(seg[0], "the segment start", at))
            ends.append(read_number(seg[1], "the segment end", at))
            labels.append(read_label_id(ev.get("label_id"), at))
            scores.append(read_number(ev.get("scores"), '"scores"', at))
    return _table(vids, starts, ends, labels, scores)


def _from_davel_videos(videos: list, where: str) -> SegmentTable:
    vids, starts, ends, labels, scores = [], [], [], [], []
    for n, doc in enumerate(videos):
        at = where if len(videos) == 1 else f"{where}, result {n}"
        result = DetectionResult.from_dict(doc, strict=True, where=at)
        vid = video_id_from_name(result.video)
        for ev in result.events:
            vids.append(vid)
            starts.append(ev.start)
            ends.append(ev.end)
            labels.append(ev.label_id)
            scores.append(ev.score)
    return _table(vids, starts, ends, labels, scores)


def load_predictions(source: Any) -> SegmentTable:
    """Predictions in any of the accepted layouts -> prediction table.

    Accepted (a path to a JSON / JSON Lines file, or the parsed object):

    * the reference's columns ``{"video-id", "t-start", "t-end", "label", "score"}``
      (lists, numpy arrays or tensors), or a list of rows with those keys;
    * the reference's file layout ``{"database": {video_id: [{"segment": [s, e],
      "label_id": int, "scores": float}]}}``;
    * davel's output: one object per video ``{"video": id_or_path, "events":
      [{"start", "end", "label_id", "score", ...}]}``, alone, in a list, or as JSON Lines.

    Anything else is an :class:`EvaluationError` naming the file and, for a bad
    event, its video and position.
    """
    if isinstance(source, SegmentTable):
        return source
    is_file = isinstance(source, (str, Path))
    where = f"predictions {Path(source).name}" if is_file else "predictions"
    doc = _read_json(source) if is_file else source
    try:
        if isinstance(doc, Mapping):
            if all(k in doc for k in _OFFICIAL_KEYS):
                return _from_official_columns(doc)
            if isinstance(doc.get("database"), Mapping):
                return _from_official_database(doc["database"], where)
            if "video" in doc and "events" in doc:
                return _from_davel_videos([doc], where)
        elif isinstance(doc, list):
            if not doc:
                return _table([], [], [], [], [])
            if all(isinstance(r, Mapping) and all(k in r for k in _OFFICIAL_KEYS) for r in doc):
                return _table(*([r[k] for r in doc] for k in _OFFICIAL_KEYS))
            if all(isinstance(r, Mapping) and "video" in r and "events" in r for r in doc):
                return _from_davel_videos(doc, where)
    except InputError as e:  # the result reader's one line, as evaluation's own error
        raise EvaluationError(str(e)) from e
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise EvaluationError(f"{where}: malformed ({type(e).__name__}: {e})") from e
    raise EvaluationError(
        f"{where}: unrecognised layout: expected video-id/t-start/t-end/label/score "
        'columns, a {"database": ...} object, or {"video", "events"} objects')


# ---------------------------------------------------------------------- scoring
def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-point interpolated AP (precision envelope, summed over recall steps)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _segment_iou(starts: np.ndarray, ends: np.ndarray, gt_starts: np.ndarray,
                 gt_ends: np.ndarray) -> np.ndarray:
    """tIoU ``[P, G]`` of P predictions against G ground-truth segments."""
    inter = (np.minimum(ends[:, None], gt_ends[None, :])
             - np.maximum(starts[:, None], gt_starts[None, :])).clip(0)
    union = (gt_ends - gt_starts)[None, :] + (ends - starts)[:, None] - inter
    return inter / union


def average_precision(ground_truth: SegmentTable, predictions: SegmentTable,
                      tiou_thresholds=DEFAULT_TIOU_THRESHOLDS) -> np.ndarray:
    """AP per threshold ``[len(tiou_thresholds)]`` for one class.

    ``ground_truth`` and ``predictions`` hold only that class's rows.
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    n_thr, n_pred = len(thresholds), len(predictions)
    if n_pred == 0:
        return np.zeros(n_thr)
    order = np.argsort(predictions.scores)[::-1]
    pred = predictions.take(order)
    tp = np.zeros((n_thr, n_pred))

    gt_rows: dict[str, list] = {}
    for i, vid in enumerate(ground_truth.video_ids):
        gt_rows.setdefault(vid, []).append(i)
    pred_rows: dict[str, list] = {}
    for i, vid in enumerate(pred.video_ids):
        if vid in gt_rows:
            pred_rows.setdefault(vid, []).append(i)

    # ground truth is only shared within a video, so each video is matched alone,
    # its predictions still in descending score
    for vid, p_idx in pred_rows.items():
        p_idx = np.asarray(p_idx)
        g_idx = np.asarray(gt_rows[vid])
        tiou = _segment_iou(pred.starts[p_idx], pred.ends[p_idx],
                            ground_truth.starts[g_idx], ground_truth.ends[g_idx])
        _match_video(tiou, thresholds, p_idx, tp)

    fp = 1.0 - tp  # every prediction is exactly one of TP / FP
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(fp, axis=1)
    recall = tp_cum / float(len(ground_truth))
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_average_precision(precision[t], recall[t]) for t in range(n_thr)])


def _match_video(tiou: np.ndarray, thresholds: np.ndarray, p_idx: np.ndarray, tp: np.ndarray) -> None:
    """Greedy matching of one video's predictions (rows of ``tiou``, by descending score).

    Marks ``tp[:, p_idx[row]]``. Each prediction takes, per threshold, the first
    untaken ground truth in its descending-tIoU order if that tIoU reaches the threshold.
    """
    n_thr, n_gt = len(thresholds), tiou.shape[1]
    reachable = tiou.max(axis=1) >= thresholds.min()
    taken = np.zeros((n_thr, n_gt), dtype=bool)
    rows = np.arange(n_thr)
    for r in np.flatnonzero(reachable):
        rank = np.argsort(tiou[r])[::-1]  # same call as the reference: same order on ties
        free = ~taken[:, rank]
        first = free.argmax(axis=1)
        gt = rank[first]
        hit = free[rows, first] & (tiou[r, gt] >= thresholds)
        taken[rows[hit], gt[hit]] = True
        tp[hit, p_idx[r]] = 1.0


def average_precision_by_class(
    ground_truth: SegmentTable,
    predictions: SegmentTable,
    tiou_thresholds=DEFAULT_TIOU_THRESHOLDS,
) -> dict[int, np.ndarray]:
    """AP ``[len(tiou_thresholds)]`` for every label id present in ``ground_truth``,
    with the reference's renumbering of predicted labels (see the module doc)."""
    class_ids = np.unique(ground_truth.labels)
    gt_index = np.searchsorted(class_ids, ground_truth.labels)
    # renumber: known ids -> their rank; unknown ids pass through unchanged
    pos = np.searchsorted(class_ids, predictions.labels).clip(0, max(len(class_ids) - 1, 0))
    known = (class_ids[pos] == predictions.labels) if len(class_ids) else np.zeros(len(predictions), bool)
    pred_index = np.where(known, pos, predictions.labels)
    return {
        int(label_id): average_precision(ground_truth.take(np.flatnonzero(gt_index == k)),
                                         predictions.take(np.flatnonzero(pred_index == k)),
                                         tiou_thresholds)
        for k, label_id in enumerate(class_ids)
    }


def evaluate_map(
    ground_truth,
    predictions,
    tiou_thresholds=DEFAULT_TIOU_THRESHOLDS,
    subset: str | None = "test",
) -> dict:
    """mAP of ``predictions`` against ``ground_truth`` as ``ANETdetection.evaluate``.

    Args:
        ground_truth: annotation JSON path, its parsed object, :class:`Annotations`,
            or a ``SegmentTable`` (then ``subset`` is not applied).
        predictions: anything :func:`load_predictions` accepts.
        tiou_thresholds: tIoU thresholds.
        subset: split to evaluate (compared with each video's lower-cased ``subset``).

    Returns:
        ``{"tiou_thresholds": [...], "mAP": [...] (per threshold), "average_mAP": float,
        "ap_per_class": {label_id: [...]}}``.
    """
    gt = ground_truth if isinstance(ground_truth, SegmentTable) else load_ground_truth(ground_truth, subset)
    if len(gt) == 0:
        raise EvaluationError(f"no ground-truth events in subset {subset!r}")
    preds = load_predictions(predictions)
    if len(preds) == 0:
        log.warning("no predictions at all: every ground-truth event counts as missed (mAP 0)")
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    per_class = average_precision_by_class(gt, preds, thresholds)
    ap = np.stack(list(per_class.values()), axis=1)  # [n_thr, n_classes]
    m_ap = ap.mean(axis=1)
    return {
        "tiou_thresholds": thresholds.tolist(),
        "mAP": m_ap.tolist(),
        "average_mAP": float(m_ap.mean()),
        "ap_per_class": {k: v.tolist() for k, v in per_class.items()},
    }
