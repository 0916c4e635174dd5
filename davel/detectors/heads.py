"""The classification and regression heads shared across pyramid levels, and the
conversion of their outputs to :class:`DetectorOutput`."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from davel.detectors.layers import ChannelLayerNorm, MaskedConv1D, Scale
from davel.detectors.output import DetectorOutput


class _ConvTower(nn.Module):
    """Shared part of both heads: (num_layers - 1) x [masked conv, LN, ReLU]."""

    def __init__(self, input_dim: int, feat_dim: int, num_layers: int, kernel_size: int,
                 with_ln: bool) -> None:
        super().__init__()
        self.head = nn.ModuleList()
        self.norm = nn.ModuleList()
        for idx in range(num_layers - 1):
            self.head.append(MaskedConv1D(input_dim if idx == 0 else feat_dim, feat_dim,
                                          kernel_size, bias=not with_ln))
            self.norm.append(ChannelLayerNorm(feat_dim) if with_ln else nn.Identity())

    def _tower(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.head, self.norm):
            x, _ = conv(x, mask)
            x = F.relu(norm(x))
        return x


class ClsHead(_ConvTower):
    """Classification head shared across levels: per level ``[B, D, T_i] -> [B, C, T_i]`` logits."""

    def __init__(self, input_dim: int, feat_dim: int, num_classes: int, num_layers: int = 3,
                 kernel_size: int = 3, with_ln: bool = True) -> None:
        super().__init__(input_dim, feat_dim, num_layers, kernel_size, with_ln)
        self.cls_head = MaskedConv1D(feat_dim, num_classes, kernel_size)

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        return [self.cls_head(self._tower(x, m), m)[0] for x, m in zip(feats, masks)]


class RegHead(_ConvTower):
    """Regression head: per level ``[B, D, T_i] -> [B, 2C, T_i]`` (class-aware) or ``[B, 2, T_i]``.

    Output is ``ReLU(scale_i * conv)``, channels ``2c`` (start) and ``2c + 1`` (end).
    """

    def __init__(self, input_dim: int, feat_dim: int, num_classes: int, fpn_levels: int,
                 num_layers: int = 3, kernel_size: int = 3, with_ln: bool = True,
                 class_aware: bool = True) -> None:
        super().__init__(input_dim, feat_dim, num_layers, kernel_size, with_ln)
        self.scale = nn.ModuleList(Scale() for _ in range(fpn_levels))
        self.offset_head = MaskedConv1D(feat_dim, 2 * num_classes if class_aware else 2, kernel_size)

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        return [F.relu(scale(self.offset_head(self._tower(x, m), m)[0]))
                for x, m, scale in zip(feats, masks, self.scale)]


def to_detector_output(cls_logits: Sequence[Tensor], offsets: Sequence[Tensor],
                       masks: Sequence[Tensor], points: Sequence[Tensor]) -> DetectorOutput:
    """Head outputs (``[B, C, T_i]``, ``[B, 2C or 2, T_i]``, masks ``[B, 1, T_i]``) -> DetectorOutput.

    Offsets become ``[B, T_i, C, 2]`` (class-agnostic: ``[B, T_i, 1, 2]``).
    """
    logits = [x.permute(0, 2, 1) for x in cls_logits]
    offs = [x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], -1, 2) for x in offsets]
    return DetectorOutput(cls_logits=logits, offsets=offs,
                          masks=[m.squeeze(1) for m in masks], points=list(points))
