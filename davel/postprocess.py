"""Dense detector output -> events: decode, Soft-NMS, grid -> seconds.

Reproduces ``inference_single_video`` and ``postprocessing`` of the UnAV /
CCNet meta-architectures (identical in both repositories). Everything stays in
float32 and uses torch for the sigmoid and the sorts, so ties and threshold
decisions fall the way the reference's do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from davel.detectors.output import DetectorOutput
from davel.errors import DavelError
from davel.softnms import soft_nms_1d
from extractors.timebase import I3D_VGGISH, TimeBase


@dataclass(frozen=True)
class PostprocessConfig:
    """Test-time settings (the repositories' ``test_cfg`` defaults)."""

    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    duration_thresh: float = 0.05
    method: str = "soft"  # "soft" (Gaussian) or "hard"
    multiclass: bool = True
    nms_sigma: float = 0.4
    iou_threshold: float = 0.7
    min_score: float = 0.001
    max_seg_num: int = 100
    voting_thresh: float = 0.75  # class-agnostic mode only


class Detections(NamedTuple):
    """Final detections of one video, descending score.

    ``segments``: ``[K, 2]`` float32 (start, end) in seconds; ``scores``: ``[K]``
    float32; ``labels``: ``[K]`` int64 class index.
    """

    segments: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def candidates(
    out: DetectorOutput,
    batch_index: int = 0,
    pre_nms_thresh: float = 0.001,
    pre_nms_topk: int = 2000,
    duration_thresh: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one video's dense predictions into NMS candidates (grid units).

    Per pyramid level: ``p = sigmoid(logit) * mask`` flattened time-major
    (``idx = t * C + c``), keep ``p > pre_nms_thresh``, the ``pre_nms_topk``
    highest, then ``start = t - off_start * stride``, ``end = t + off_end * stride``
    with the class's own offsets, and keep ``end - start > duration_thresh``.

    Returns:
        ``(segments [N, 2] float32, scores [N] float32, labels [N] int64)``:
        levels concatenated in order, each level by descending score.
    """
    levels = (out.cls_logits, out.offsets, out.masks, out.points)
    if len({len(x) for x in levels}) != 1:
        raise DavelError("detector output has a different number of levels per field")
    segs_all, scores_all, labels_all = [], [], []
    with torch.no_grad():
        for logits, offsets, mask, points in zip(*levels):
            logits = logits[batch_index].float().cpu()          # [T_i, C]
            offsets = offsets[batch_index].float().cpu()        # [T_i, C, 2]
            mask = mask[batch_index].cpu()                      # [T_i]
            points = points.float().cpu()                       # [T_i, 4]
            num_classes = logits.shape[-1]

            prob = (logits.sigmoid() * mask.unsqueeze(-1)).flatten()
            above = prob > pre_nms_thresh
            prob = prob[above]
            flat_idx = above.nonzero(as_tuple=True)[0]
            prob, order = prob.sort(descending=True)
            k = min(pre_nms_topk, flat_idx.numel())
            prob = prob[:k]
            flat_idx = flat_idx[order[:k]]

            t_idx = torch.div(flat_idx, num_classes, rounding_mode="floor")
            cls_idx = torch.fmod(flat_idx, num_classes)
            off = offsets.reshape(-1, 2)[flat_idx]
            pts = points[t_idx]
            left = pts[:, 0] - off[:, 0] * pts[:, 3]
            right = pts[:, 0] + off[:, 1] * pts[:, 3]
            keep = (right - left) > duration_thresh

            segs_all.append(torch.stack((left, right), -1)[keep])
            scores_all.append(prob[keep])
            labels_all.append(cls_idx[keep])
    if not segs_all:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return (torch.cat(segs_all).numpy(), torch.cat(scores_all).numpy(),
            torch.cat(labels_all).to(torch.int64).numpy())


def to_seconds(segments_grid, duration: float, timebase: TimeBase = I3D_VGGISH) -> np.ndarray:
    """Grid positions -> seconds, clamped to ``[0, duration]`` as the reference does.

    Values ``<= 0`` are multiplied by 0 (so negatives become ``-0.0``), then values
    ``>= duration`` become ``duration``; start and end independently, so a
    segment may collapse to ``[duration, duration]``.
    """
    segs = np.asarray(segments_grid, dtype=np.float32)
    if segs.size == 0:
        return segs.reshape(0, 2)
    sec = np.asarray(timebase.grid_to_seconds(segs), dtype=np.float32)
    low = sec <= 0.0
    sec[low] *= np.float32(0.0)
    # the comparison and the fill both use the duration rounded to float32
    dur = np.float32(duration)
    high = sec >= dur
    sec[high] = sec[high] * np.float32(0.0) + dur
    return sec


def postprocess(
    out: DetectorOutput,
    duration: float,
    timebase: TimeBase = I3D_VGGISH,
    cfg: PostprocessConfig = PostprocessConfig(),
    batch_index: int = 0,
) -> Detections:
    """One video's dense output -> final detections in seconds (candidates, NMS, clamp)."""
    segs, scores, labels = candidates(
        out, batch_index, cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.duration_thresh)
    return nms_to_seconds(segs, scores, labels, duration, timebase, cfg)


def nms_to_seconds(
    segments_grid,
    scores,
    labels,
    duration: float,
    timebase: TimeBase = I3D_VGGISH,
    cfg: PostprocessConfig = PostprocessConfig(),
) -> Detections:
    """NMS on grid-unit candidates, then seconds (the reference's ``postprocessing``)."""
    segs, scores, labels = soft_nms_1d(
        segments_grid, scores, labels,
        sigma=cfg.nms_sigma, min_score=cfg.min_score, max_seg_num=cfg.max_seg_num,
        method=cfg.method, iou_threshold=cfg.iou_threshold, multiclass=cfg.multiclass,
        voting_thresh=cfg.voting_thresh,
    )
    return Detections(to_seconds(segs, duration, timebase), scores, labels)
