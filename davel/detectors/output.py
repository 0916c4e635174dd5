"""What every detector's forward returns: per-level dense predictions."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DetectorOutput:
    """Dense predictions on the temporal pyramid (one entry per level ``i``).

    With ``L`` the padded input length, ``T_i = L / 2**i``, ``B`` the batch and
    ``C`` the number of classes:

    - ``cls_logits[i]``: ``[B, T_i, C]`` raw classification logits;
    - ``offsets[i]``: ``[B, T_i, C, 2]`` class-aware (start, end) distances in
      units of the level's stride, already non-negative (after ReLU(scale * conv));
    - ``masks[i]``: ``[B, T_i]`` bool, True on positions inside the video;
    - ``points[i]``: ``[T_i, 4]`` float32 rows ``(t, reg_lo, reg_hi, stride)``
      where ``t`` is the position on the level-0 grid.
    """

    cls_logits: list[torch.Tensor]
    offsets: list[torch.Tensor]
    masks: list[torch.Tensor]
    points: list[torch.Tensor]
