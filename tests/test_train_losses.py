"""Training targets and losses (davel.train.losses): label assignment, DIoU, focal loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from davel.detectors.output import DetectorOutput
from davel.train.losses import LossNormalizer, assign_targets, detection_losses, diou_loss_1d

# ------------------------------------------------------------------ label assignment


def reference_targets(points, segments, labels, num_classes):
    """Per-point loops written from the repos' description (independent of davel.train.losses)."""
    cls = np.zeros((len(points), num_classes))
    off = np.zeros((len(points), num_classes, 2))
    for i, (t, lo, hi, stride) in enumerate(points):
        for (s, e), c in zip(segments, labels):
            left, right = t - s, e - t
            if min(left, right) > 0 and lo <= max(left, right) <= hi:
                cls[i, c] = 1
                off[i, c] = (left / stride, right / stride)
    return cls, off


def level_rows(length=32):
    from davel.detectors.base import level_points

    return torch.cat(level_points(length, 6))


def test_assign_targets_hand_example():
    points = level_rows()
    cls, off = assign_targets(points, torch.tensor([[2.0, 9.0]]), torch.tensor([1]), 3)
    pos = {(float(points[i, 0]), int(points[i, 3])) for i in torch.nonzero(cls[:, 1]).flatten()}
    # level 0 (range 0..4): t = 5, 6; level 1 (4..8): t = 4, 6, 8; nothing else
    assert pos == {(5.0, 1), (6.0, 1), (4.0, 2), (6.0, 2), (8.0, 2)}
    assert cls[:, [0, 2]].sum() == 0
    row = next(i for i in range(len(points)) if points[i, 0] == 4 and points[i, 3] == 2)
    assert off[row, 1].tolist() == [1.0, 2.5]  # (4 - 2) / 2, (9 - 4) / 2


def test_assign_targets_matches_reference_loops():
    rng = np.random.default_rng(3)
    points = level_rows(64)
    for _ in range(20):
        n = int(rng.integers(0, 5))
        starts = rng.uniform(-3, 55, n)
        segs = np.stack([starts, starts + rng.uniform(0.5, 40, n)], 1).astype(np.float32)
        labels = rng.integers(0, 3, n)
        cls, off = assign_targets(points, torch.from_numpy(segs).reshape(-1, 2), torch.from_numpy(labels), 3)
        ref_cls, ref_off = reference_targets(points.numpy(), segs, labels, 3)
        np.testing.assert_array_equal(cls.numpy(), ref_cls)
        np.testing.assert_allclose(off.numpy(), ref_off, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ losses


def test_diou_loss_values():
    pred = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    # identical; nested same centre (IoU 1/2); IoU 1/3 with centres 1 apart in a span of 3
    np.testing.assert_allclose(diou_loss_1d(pred, target).numpy(), [0.0, 0.5, 1 - 1 / 3 + 1 / 9], atol=1e-6)


def _output(logits, offsets, mask):
    return DetectorOutput(cls_logits=[logits], offsets=[offsets], masks=[mask],
                          points=[torch.zeros(logits.shape[1], 4)])


def test_detection_losses_normaliser_and_masking():
    torch.manual_seed(0)
    b, t, c = 2, 5, 3
    logits = torch.randn(b, t, c)
    offsets = torch.rand(b, t, c, 2) + 0.1
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3:] = False
    gt_cls = torch.zeros(b, t, c)
    gt_off = torch.zeros(b, t, c, 2)
    gt_cls[0, 1, 2] = 1
    gt_off[0, 1, 2] = torch.tensor([0.5, 1.5])
    gt_cls[1, 4, 0] = 1  # outside the mask: no positive, no loss
    gt_off[1, 4, 0] = torch.tensor([1.0, 1.0])
    norm = LossNormalizer()
    out = detection_losses(_output(logits, offsets, mask), gt_cls, gt_off, norm)
    assert norm.value == pytest.approx(0.9 * 250 + 0.1 * 1)
    from torchvision.ops import sigmoid_focal_loss

    cls_ref = sigmoid_focal_loss(logits[mask], gt_cls[mask], 0.25, 2.0, "sum") / norm.value
    reg_ref = diou_loss_1d(offsets[0, 1, 2][None], gt_off[0, 1, 2][None]).sum() / norm.value
    assert float(out["cls_loss"]) == pytest.approx(float(cls_ref), rel=1e-6)
    assert float(out["reg_loss"]) == pytest.approx(float(reg_ref), rel=1e-6)
    assert float(out["final_loss"]) == pytest.approx(float(cls_ref + reg_ref), rel=1e-6)
