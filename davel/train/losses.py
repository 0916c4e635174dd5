"""Training targets and losses of the UnAV / CCNet detectors (identical in both repos).

Label assignment ("points" -> targets): every pyramid position ``t`` (on the
level-0 grid, stride ``s``, regression range ``[lo, hi]``) is a positive for
every ground-truth event that contains it strictly (``start < t < end``) and
whose farther boundary lies inside the level's range (``lo <= max(t - start,
end - t) <= hi``). There is no centre sampling. Regression is class-aware: the
target of class ``c`` at ``t`` is ``((t - start) / s, (end - t) / s)`` of the
event of that class (the later one in annotation order if two qualify).

Losses: sigmoid focal loss (alpha 0.25, gamma 2) summed over the valid
positions and classes, plus the 1-D distance-IoU loss summed over the
(position, class) pairs that have a regression target, both divided by an EMA
of the number of positive positions (start 250, momentum 0.9).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from davel.detectors.output import DetectorOutput


def assign_targets(points: Tensor, segments: Tensor, labels: Tensor,
                   num_classes: int) -> tuple[Tensor, Tensor]:
    """Targets of one video on all pyramid positions.

    Args:
        points: ``[P, 4]`` rows ``(t, reg_lo, reg_hi, stride)``, levels concatenated.
        segments: ``[N, 2]`` events (start, end) in grid units.
        labels: ``[N]`` int64 class ids.
        num_classes: ``C``.

    Returns:
        ``(cls [P, C] float in {0, 1}, offsets [P, C, 2] float)``; offsets are in
        units of the position's stride and zero where the class has no target.
    """
    num_pts = points.shape[0]
    cls = points.new_zeros(num_pts, num_classes)
    offsets = points.new_zeros(num_pts, num_classes, 2)
    if segments.shape[0] == 0:
        return cls, offsets
    t = points[:, 0, None]                                      # [P, 1]
    dist = torch.stack((t - segments[None, :, 0], segments[None, :, 1] - t), dim=-1)  # [P, N, 2]
    inside = dist.min(dim=-1).values > 0
    reach = dist.max(dim=-1).values
    in_range = (reach >= points[:, 1, None]) & (reach <= points[:, 2, None])
    match = inside & in_range                                   # [P, N]
    scaled = dist / points[:, 3, None, None]
    # annotation order: a later event of the same class overwrites an earlier one
    for j in range(segments.shape[0]):
        rows = match[:, j]
        c = int(labels[j])
        cls[rows, c] = 1.0
        offsets[rows, c] = scaled[rows, j]
    return cls, offsets


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Distance-IoU loss of 1-D segments given as (left, right) distances from a shared point.

    ``pred``, ``target``: ``[N, 2]`` non-negative. Returns ``[N]``:
    ``1 - IoU + (centre distance / enclosing length)^2``.
    """
    pred, target = pred.float(), target.float()
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    inter = torch.min(lp, lg) + torch.min(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.max(lp, lg) + torch.max(rp, rg)
    centre_gap = 0.5 * (rp - lp - rg + lg)
    return 1.0 - iou + torch.square(centre_gap / enclosing.clamp(min=eps))


@dataclass
class LossNormalizer:
    """EMA of the number of positive positions per batch (stabilises small batches)."""

    value: float = 250.0
    momentum: float = 0.9

    def update(self, num_pos: int) -> float:
        self.value = self.momentum * self.value + (1 - self.momentum) * max(num_pos, 1)
        return self.value


def detection_losses(out: DetectorOutput, gt_cls: Tensor, gt_offsets: Tensor,
                     normalizer: LossNormalizer, reg_weight: float = 1.0) -> dict[str, Tensor]:
    """Focal + DIoU losses of a batch.

    Args:
        out: the detector's output (``cls_logits [B, T_i, C]``, ``offsets [B, T_i, C, 2]``).
        gt_cls: ``[B, P, C]`` from :func:`assign_targets` (``P = sum T_i``).
        gt_offsets: ``[B, P, C, 2]``.
        normalizer: updated in place with this batch's positives.
        reg_weight: weight of the regression loss (the repos' configs use 1).

    Returns:
        ``{"cls_loss", "reg_loss", "final_loss"}`` (scalars; only ``final_loss`` needs backward).
    """
    valid = torch.cat(out.masks, dim=1)                          # [B, P]
    logits = torch.cat(out.cls_logits, dim=1)                    # [B, P, C]
    offsets = torch.cat(out.offsets, dim=1)                      # [B, P, C, 2]
    pos = (gt_cls.sum(-1) > 0) & valid
    num_pos = int(pos.sum())
    norm = normalizer.update(num_pos)

    target = gt_cls[valid]
    cls_loss = sigmoid_focal_loss(logits[valid].float(), target.float(), alpha=0.25, gamma=2.0,
                                  reduction="sum") / norm

    pred_off, tgt_off = offsets[pos], gt_offsets[pos]            # [N_pos, C, 2]
    # only the classes that have a target at that position (an event may
    # start or end exactly on the position, so either side > 0 counts)
    has = (tgt_off[..., 0] > 0) | (tgt_off[..., 1] > 0)
    if num_pos == 0:
        reg_loss = 0.0 * offsets.sum()
    else:
        reg_loss = diou_loss_1d(pred_off[has], tgt_off[has]).sum() / norm

    return {"cls_loss": cls_loss, "reg_loss": reg_loss, "final_loss": cls_loss + reg_loss * reg_weight}


def concat_points(points: Sequence[Tensor]) -> Tensor:
    """Per-level point rows -> ``[P, 4]`` in level order (the layout the targets use)."""
    return torch.cat(list(points), dim=0)
