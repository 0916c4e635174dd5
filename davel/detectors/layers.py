"""The layers every detector kind is built from: masked convolution, channel LayerNorm,
layer scale with stochastic depth, the sinusoid positional table, masked multi-head
conv-attention and the pre-LN transformer block (ActionFormer / UnAV naming).

Every module is named so that its ``state_dict`` keys equal the official
checkpoints' keys (after the ``module.`` prefix is stripped), so the published
weights load with ``strict=True`` and no renaming. Dropout is left out (both
repos train with dropout 0); stochastic depth (AffineDropPath) acts only in
train mode with a ``drop_prob`` that training sets, so eval outputs are unchanged.

Mask conventions (as in the official code, whose numerics we reproduce):
a sequence mask is ``[B, 1, T]`` bool; a 1-D mask ``[N]`` means "sample n is
valid as a whole" (the co-occurrence branches attend over the class axis and
pass one flag per time step).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth


def _broadcast_mask(mask: Tensor, out: Tensor) -> Tensor:
    """Float mask shaped to multiply ``out`` ([N, C, T]).

    A mask whose last dim is not the output length is a per-sample flag. A 1-D
    mask is always per-sample: the original code would broadcast it over the
    last axis when N happens to equal T and then crash in the attention
    (B * T_i == num_classes, e.g. UnAV at padded length 800); we keep the
    intended per-sample meaning there.
    """
    m = mask.to(out.dtype)
    if m.dim() == 1 or m.shape[-1] != out.shape[-1]:
        m = m[:, None, None]
    return m


class MaskedConv1D(nn.Module):
    """1-D convolution whose output is zeroed outside the mask.

    ``x``: ``[B, C_in, T]``, ``mask``: ``[B, 1, T]`` bool (or ``[B]``, see module doc).
    Returns ``([B, C_out, T / stride], mask downsampled by nearest neighbour)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("MaskedConv1D needs an odd kernel size")
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride,
                              kernel_size // 2, groups=groups, bias=bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        length = x.shape[-1]
        if length % self.stride:
            raise ValueError(f"length {length} is not divisible by stride {self.stride}")
        out = self.conv(x)
        if self.stride > 1 and mask.dim() == 3:
            # nearest-neighbour downsampling keeps positions 0, s, 2s, ...
            mask = F.interpolate(mask.to(x.dtype), size=length // self.stride, mode="nearest")
        out_mask = _broadcast_mask(mask, out)
        return out * out_mask, out_mask.bool()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, T]``; parameters ``[1, C, 1]``."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        var = (centred ** 2).mean(dim=1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


class AffineDropPath(nn.Module):
    """Per-channel learnable scale ``[1, C, 1]``, then stochastic depth in training.

    ``drop_prob`` (0 unless training sets it, see ``davel.training``) zeroes the
    branch for a whole sample (first axis) and rescales the kept samples by
    ``1 / (1 - drop_prob)``; in eval mode this is the plain scale.
    """

    def __init__(self, num_dim: int, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, num_dim, 1), 1e-4))
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        x = self.scale * x
        if self.training and self.drop_prob > 0.0:
            x = stochastic_depth(x, self.drop_prob, "row", training=True)
        return x


class Scale(nn.Module):
    """A learnable scalar multiplier (per pyramid level in the regression head)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def sinusoid_table(n_position: int, dim: int) -> Tensor:
    """Transformer sinusoid table, ``[1, dim, n_position]`` float32.

    Angles are computed in float64 and cast once, as the original numpy table.
    """
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    expo = 2.0 * (np.arange(dim) // 2) / dim
    angles = pos / np.power(10000.0, expo)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.from_numpy(angles.astype(np.float32)).T.unsqueeze(0).contiguous()


def resize_pos_embd(pos_embd: Tensor, length: int) -> Tensor:
    """Eval-time positional embedding for ``length`` steps, ``[1, C, length]``.

    At or above the table length the table is linearly resampled (identity at
    equal length); below it the first ``length`` rows are used.
    """
    if length >= pos_embd.shape[-1]:
        return F.interpolate(pos_embd, length, mode="linear", align_corners=False)
    return pos_embd[:, :, :length]


class MaskedMHCA(nn.Module):
    """Multi-head attention with depthwise-conv projections (ActionFormer MHCA).

    Keys/values come from ``x_kv``, queries from ``x_q`` (both ``[B, C, T]``);
    a stride > 1 downsamples both (kernel ``stride + 1``, else 3).
    Returns ``([B, C, T / stride], query mask)``.
    """

    def __init__(self, n_embd: int, n_head: int, qx_stride: int = 1, kv_stride: int = 1) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        q_kernel = qx_stride + 1 if qx_stride > 1 else 3
        kv_kernel = kv_stride + 1 if kv_stride > 1 else 3
        # The official code strides the query conv by the key/value stride.
        self.query_conv = MaskedConv1D(n_embd, n_embd, q_kernel, kv_stride, groups=n_embd, bias=False)
        self.query_norm = ChannelLayerNorm(n_embd)
        self.key_conv = MaskedConv1D(n_embd, n_embd, kv_kernel, kv_stride, groups=n_embd, bias=False)
        self.key_norm = ChannelLayerNorm(n_embd)
        self.value_conv = MaskedConv1D(n_embd, n_embd, kv_kernel, kv_stride, groups=n_embd, bias=False)
        self.value_norm = ChannelLayerNorm(n_embd)
        self.key = nn.Conv1d(n_embd, n_embd, 1)
        self.query = nn.Conv1d(n_embd, n_embd, 1)
        self.value = nn.Conv1d(n_embd, n_embd, 1)
        self.proj = nn.Conv1d(n_embd, n_embd, 1)

    def _heads(self, x: Tensor) -> Tensor:
        # [B, C, T] -> [B, heads, T, head_dim]
        return x.view(x.shape[0], self.n_head, self.head_dim, -1).transpose(2, 3)

    def forward(self, x_kv: Tensor, x_q: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        batch, channels, length = x_kv.shape
        q, q_mask = self.query_conv(x_q, mask)
        k, kv_mask = self.key_conv(x_kv, mask)
        v, _ = self.value_conv(x_kv, mask)
        q = self._heads(self.query(self.query_norm(q)))
        k = self._heads(self.key(self.key_norm(k)))
        v = self._heads(self.value(self.value_norm(v)))

        att = (q * self.scale) @ k.transpose(-2, -1)
        if mask.dim() == 3 and mask.shape[-1] == length:
            # sequence mask: keys outside the video get zero weight
            att = att.masked_fill(~kv_mask[:, :, None, :], float("-inf")).softmax(dim=-1)
        else:
            # per-sample flag: whole samples are switched off
            att = att.softmax(dim=-1) * kv_mask[:, :, :, None].to(att.dtype)
        out = att @ (v * kv_mask[:, :, :, None].to(v.dtype))
        out = out.transpose(2, 3).contiguous().view(batch, channels, -1)
        return self.proj(out) * q_mask.to(out.dtype), q_mask


class TransformerBlock(nn.Module):
    """Pre-LN transformer block on ``[B, C, T]`` (ActionFormer / UnAV naming).

    ``forward(x_kv, x_q, mask)``: attention takes keys/values (and the skip
    path) from ``x_kv``, queries from ``x_q``; ``stride`` > 1 halves (etc.) the
    length, the skip path then max-pools. Returns ``([B, C, T / stride], mask)``.
    ``layer_scale`` adds the AffineDropPath scales (present when the model was
    trained with drop-path > 0).
    """

    def __init__(self, n_embd: int, n_head: int, stride: int = 1,
                 n_hidden: int | None = None, layer_scale: bool = True) -> None:
        super().__init__()
        n_hidden = 4 * n_embd if n_hidden is None else n_hidden
        self.ln11 = ChannelLayerNorm(n_embd)
        self.ln12 = ChannelLayerNorm(n_embd)
        self.ln2 = ChannelLayerNorm(n_embd)
        self.attn = MaskedMHCA(n_embd, n_head, stride, stride)
        self.pool_skip: nn.Module = (
            nn.MaxPool1d(stride + 1, stride=stride, padding=(stride + 1) // 2)
            if stride > 1 else nn.Identity())
        # indices 0 and 3 hold the weights, as in the checkpoints (2, 4: dropout)
        self.mlp = nn.Sequential(nn.Conv1d(n_embd, n_hidden, 1), nn.GELU(), nn.Identity(),
                                 nn.Conv1d(n_hidden, n_embd, 1), nn.Identity())
        self.drop_path_attn: nn.Module = AffineDropPath(n_embd) if layer_scale else nn.Identity()
        self.drop_path_mlp: nn.Module = AffineDropPath(n_embd) if layer_scale else nn.Identity()

    def forward(self, x_kv: Tensor, x_q: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, out_mask = self.attn(self.ln11(x_kv), self.ln12(x_q), mask)
        keep = out_mask.to(out.dtype)
        out = self.pool_skip(x_kv) * keep + self.drop_path_attn(out)
        out = out + self.drop_path_mlp(self.mlp(self.ln2(out)) * keep)
        return out, out_mask



def transformer_blocks(n_embd: int, n_head: int, count: int, stride: int,
                       layer_scale: bool = True) -> nn.ModuleList:
    """``count`` identical :class:`TransformerBlock` s of one stride (a stage of a pyramid)."""
    return nn.ModuleList(TransformerBlock(n_embd, n_head, stride, layer_scale=layer_scale)
                         for _ in range(count))
