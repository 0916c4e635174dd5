"""CCNet's multi-granularity temporal collaboration (official ``MTGC_block``).

Input: the fused (visual ++ audio) pyramid, level ``k`` ``[B, 2D, L / 2^k]``.
Per level, in the official order:

1. coarse-to-fine (all but the coarsest level): the next coarser level is
   stretched to this level's length by a Linear over time (``C2F_linear``,
   ReLU) and used as the queries of a transformer block over this level;
2. per-class expansion ``[B, C, H, T]`` = ReLU(conv expansion) + ReLU(Linear
   over time of the channel-attended, squeezed features) (``channel_att``
   attends across the ``H`` squeezed channels with the time steps as
   features, then ``feature_tem_block`` maps ``T -> T * C``);
3. dependency branches: attention along time per class plus attention across
   classes per step, summed and squeezed back to ``[B, 2D, T]``;

then fine-to-coarse: starting from the finest output, each step max-pools by
2, attends (keys/values from the pooled finer result, queries from this
level) and adds this level's output.

Because ``C2F_linear``, ``feature_tem_block`` and ``channel_att`` act on the
time axis with sizes ``max_seq_len / 2^k``, the block only runs at exactly
``max_seq_len`` steps.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from davel.detectors.dependency import dependency_branches
from davel.detectors.layers import MaskedConv1D, TransformerBlock


class MTGCBlock(nn.Module):
    """Multi-granularity temporal collaboration over a pyramid of strides 1, 2, 4, ...

    ``forward(feats, masks)``: ``feats[k] [B, in_channel, max_seq_len / 2^k]``,
    ``masks[k] [B, 1, max_seq_len / 2^k]`` bool -> list of the same shapes.
    ``n_embd`` is the per-class hidden size ``H`` of the dependency branches.
    Head counts follow the official block: 1 everywhere except 4 in the
    coarse-to-fine attention.
    """

    def __init__(self, in_channel: int, n_embd: int, kernel_size: int, max_seq_len: int,
                 num_classes: int, num_levels: int = 6, n_head: int = 1, c2f_heads: int = 4,
                 use_channel_att: bool = True, layer_scale: bool = True) -> None:
        super().__init__()
        if max_seq_len % 2 ** (num_levels - 1):
            raise ValueError(f"max_seq_len {max_seq_len} is not divisible by "
                             f"{2 ** (num_levels - 1)}")
        self.num_classes = num_classes
        self.use_channel_att = use_channel_att
        self.level_lengths = [max_seq_len // 2 ** k for k in range(num_levels)]

        def block(dim: int, heads: int, hidden: int | None = None) -> TransformerBlock:
            return TransformerBlock(dim, heads, n_hidden=hidden, layer_scale=layer_scale)

        expanded_dim = n_embd * num_classes
        self.feature_expand = MaskedConv1D(in_channel, expanded_dim, kernel_size, bias=False)
        self.cooccur_branch = block(n_embd, n_head, n_embd)
        self.temporal_branch = block(n_embd, n_head, n_embd)
        self.feature_squeeze = MaskedConv1D(expanded_dim, in_channel, kernel_size, bias=False)
        self.C2F_attention = block(in_channel, c2f_heads)
        steps = range(num_levels - 1)
        self.F2C_maxpooling = nn.ModuleList(
            nn.MaxPool1d(kernel_size, stride=2, padding=kernel_size // 2) for _ in steps)
        self.F2C_attention_block = nn.ModuleList(block(in_channel, n_head) for _ in steps)
        # maps level k + 1's time axis onto level k's
        self.C2F_linear = nn.ModuleList(
            nn.Linear(self.level_lengths[k + 1], self.level_lengths[k]) for k in steps)
        if use_channel_att:
            self.feature_tem_press = MaskedConv1D(in_channel, n_embd, kernel_size, bias=False)
            self.feature_tem_block = nn.ModuleList(
                nn.Linear(t, t * num_classes) for t in self.level_lengths)
            # channels of these blocks are time steps; the "sequence" is the H squeezed channels
            self.channel_att = nn.ModuleList(block(t, n_head, n_embd) for t in self.level_lengths)
            self.register_buffer("channel_mask", torch.empty(1, 1, n_embd, dtype=torch.bool),
                                 persistent=False)
            self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)fill the channel mask (all valid), which checkpoints do not store."""
        if self.use_channel_att:
            device = device or self.channel_mask.device
            self.channel_mask = torch.ones_like(self.channel_mask, device=device)

    def _expand(self, x: Tensor, mask: Tensor, level: int) -> Tensor:
        """``[B, 2D, T]`` -> per-class features ``[B, C, H, T]``."""
        batch, _, length = x.shape
        expanded, _ = self.feature_expand(x, mask)
        expanded = F.relu(expanded).reshape(batch, self.num_classes, -1, length)
        if not self.use_channel_att:
            return expanded
        pressed, _ = self.feature_tem_press(x, mask)
        pressed = F.relu(pressed).transpose(1, 2)  # [B, T, H]: time steps act as channels
        attended, _ = self.channel_att[level](pressed, pressed, self.channel_mask)
        # [B*H, T] -> [B*H, T*C] -> [B, C, H, T], a plain reshape of the Linear output
        over_time = self.feature_tem_block[level](attended.transpose(1, 2).reshape(-1, length))
        over_time = F.relu(over_time).reshape(batch, self.num_classes, -1, length)
        return over_time + expanded

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.level_lengths):
            raise ValueError(f"MTGC block expects {len(self.level_lengths)} levels, "
                             f"got {len(feats)}")
        last = len(feats) - 1
        refined = []
        for level, (x, mask) in enumerate(zip(feats, masks)):
            if level != last:
                batch, channels, length = x.shape
                # the coarser level as it came in, not its refined version
                coarse = feats[level + 1].reshape(batch * channels, -1)
                coarse = F.relu(self.C2F_linear[level](coarse)).reshape(batch, channels, length)
                x, _ = self.C2F_attention(x, coarse, mask)
            mixed = dependency_branches(self.temporal_branch, self.cooccur_branch,
                                        self._expand(x, mask, level), mask)
            squeezed, _ = self.feature_squeeze(mixed, mask)
            refined.append(squeezed)

        outputs = [refined[0]]
        carried = refined[0]
        for level in range(1, len(refined)):
            pooled = self.F2C_maxpooling[level - 1](carried)
            pooled, _ = self.F2C_attention_block[level - 1](pooled, refined[level], masks[level])
            carried = refined[level] + pooled
            outputs.append(carried)
        return outputs
