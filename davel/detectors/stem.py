"""The two-stream stem every detector kind starts with: per modality a masked-conv
embedding, the sinusoid positional table, then unimodal self-attention blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from davel.detectors.layers import (
    ChannelLayerNorm,
    MaskedConv1D,
    resize_pos_embd,
    sinusoid_table,
    transformer_blocks,
)


def embed(x: Tensor, mask: Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> Tensor:
    """Embedding stem: ``ReLU(norm(masked conv(x)))`` per layer; ``[B, C, T] -> [B, D, T]``."""
    for conv, norm in zip(convs, norms):
        x, _ = conv(x, mask)
        x = F.relu(norm(x))
    return x



class TwoStreamStem(nn.Module):
    """The part both backbones share: per modality, conv embedding + LayerNorm,
    the positional table, then unimodal self-attention blocks.

    Subclasses add their cross-modal pyramid; the attribute names here are the
    checkpoints' (``backbone.embd_V.0...``, ``backbone.self_att_A.1...``).
    :meth:`encode` maps ``x_v [B, Cv, L]``, ``x_a [B, Ca, L]`` (``mask [B, 1, L]``)
    to ``[B, D, L]`` each. The positional table ``pos_embd [1, D, max_len]``
    (``use_abs_pe``) is a non-persistent buffer: checkpoints do not store it.
    """

    def __init__(self, in_v: int, in_a: int, n_embd: int, n_head: int, kernel_size: int,
                 n_embd_layers: int, n_self_att: int, with_ln: bool = True,
                 layer_scale: bool = True, max_len: int = 0, use_abs_pe: bool = True) -> None:
        super().__init__()
        self.max_len, self.n_embd, self.use_abs_pe = max_len, n_embd, use_abs_pe
        if use_abs_pe:
            self.register_buffer("pos_embd", torch.empty(1, n_embd, max_len), persistent=False)
            self.reset_buffers()

        def convs(n_in: int) -> nn.ModuleList:
            return nn.ModuleList(MaskedConv1D(n_in if i == 0 else n_embd, n_embd, kernel_size,
                                              bias=not with_ln) for i in range(n_embd_layers))

        def norms() -> nn.ModuleList:
            return nn.ModuleList(ChannelLayerNorm(n_embd) if with_ln else nn.Identity()
                                 for _ in range(n_embd_layers))

        self.embd_V = convs(in_v)
        self.embd_A = convs(in_a)
        self.embd_norm_V = norms()
        self.embd_norm_A = norms()
        self.self_att_V = transformer_blocks(n_embd, n_head, n_self_att, 1, layer_scale)
        self.self_att_A = transformer_blocks(n_embd, n_head, n_self_att, 1, layer_scale)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the positional table (after loading, or on another device)."""
        if self.use_abs_pe:
            table = sinusoid_table(self.max_len, self.n_embd) / self.n_embd ** 0.5
            self.pos_embd = table.to(device or self.pos_embd.device)

    def encode(self, x_v: Tensor, x_a: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Embed both streams, add the positional table (resized to ``L``; none without
        ``use_abs_pe``) and run the unimodal blocks."""
        x_v = embed(x_v, mask, self.embd_V, self.embd_norm_V)
        x_a = embed(x_a, mask, self.embd_A, self.embd_norm_A)
        if self.use_abs_pe:
            pe = resize_pos_embd(self.pos_embd, x_v.shape[-1]) * mask.to(x_v.dtype)
            x_v = x_v + pe
            x_a = x_a + pe
        for block_v, block_a in zip(self.self_att_V, self.self_att_A):
            x_v, _ = block_v(x_v, x_v, mask)
            x_a, _ = block_a(x_a, x_a, mask)
        return x_v, x_a
