"""RAFT flow field -> the integer flow image the I3D flow stream was trained on.

video_features (and so UnAV-100) takes the centre 224 x 224 of the PADDED flow
field, clamps it to +-20 px and maps it to ``round(128 + 255 / 40 * f)``: the
kinetics-i3d uint8 convention, except that nothing saturates at 255, so +20 px
lands on 255.5 and rounds (half to even) to 256. The values are kept as
integers here; scaling to [-1, 1] for the network is ``extractors.i3d.flow_to_i3d_input``.
Exact integers matter: a one-pixel crop shift or floor instead of round hides
inside RAFT's float noise downstream, so only this step can catch it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CROP = 224
FLOW_CLAMP = 20.0  # px
QUANT_CENTRE = 128
QUANT_SCALE = 255 / 40  # 6.375: exact in float32, so the product rounds once


def crop_offset(size_hw: Sequence[int], crop: int = CROP) -> tuple[int, int]:
    """Top-left (y, x) of the centre ``crop`` x ``crop`` window in an H x W image.

    Odd margins put the extra pixel after the crop: 256 x 344 -> (16, 60).
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if h < crop or w < crop:
        raise ValueError(f"cannot centre-crop {crop} x {crop} from {h} x {w}")
    return (h - crop) // 2, (w - crop) // 2


def quantise_flow(flow_padded: Tensor, crop: int = CROP) -> Tensor:
    """Flow [..., 2, H, W] in px (padded, not unpadded) -> [..., 2, crop, crop] uint16 in 0..256.

    uint16 like the reference arrays; torch supports few ops on it (convert with
    ``.numpy()``, ``.float()`` or ``.int()`` before arithmetic).
    """
    if flow_padded.dim() < 3 or flow_padded.shape[-3] != 2:
        raise ValueError(f"expected flow [..., 2, H, W], got {list(flow_padded.shape)}")
    if not flow_padded.is_floating_point():
        raise ValueError(f"expected a floating-point flow field, got {flow_padded.dtype}")
    y, x = crop_offset(flow_padded.shape[-2:], crop)
    f = flow_padded[..., y:y + crop, x:x + crop].clamp(-FLOW_CLAMP, FLOW_CLAMP)
    # Same float operations as the reference (in the field's own precision), then
    # torch's round, which is half to even like the reference's.
    return (QUANT_CENTRE + QUANT_SCALE * f).round().to(torch.uint16)
