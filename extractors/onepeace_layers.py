"""What ONE-PEACE's video and audio encoders share, layer for layer (ported from
OFA-Sys/ONE-PEACE, Apache-2.0): the GeGLU feed-forward of every modality's FFN."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GeGLU(nn.Module):
    """``[.., D] -> [.., F]``: ``GELU(wi_0 x) * wi_1 x`` (no biases; the checkpoints' names)."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.wi_0 = nn.Linear(dim, ffn_dim, bias=False)
        self.wi_1 = nn.Linear(dim, ffn_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.wi_0(x)) * self.wi_1(x)
