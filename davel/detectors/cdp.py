"""Cross-modal Dynamic Perception (CDP) layer of LoCo (Xing et al., §III-D, Eq. 7-11).

A CDP layer is UnAV's cross-modal :class:`TransformerBlock` whose global
:class:`MaskedMHCA` is replaced by :class:`CDPAttention`: the same depthwise
downsampling convs, norms and 1x1 projections (Eq. 7-8, so every MaskedMHCA
state-dict key is kept), plus a Window Adaptation module (Eq. 9) that
predicts, per base window and per head, a scale and an offset; keys and
values are linearly re-sampled at W positions of each target window and
attended with cross-modal sliding-window attention (Eq. 10). The residual,
pre-LN and FFN of Eq. 11 are TransformerBlock's, unchanged.

Choices the paper leaves open (LOCO.md §4):

* A2: CSWA is a band over the stacked sampled slots, ``|t - j| <= W // 2``
  (ActionFormer's LocalMaskedMHCA convention, W + 1 keys); ``mode="window"``
  instead lets slot ``t`` attend only to the W samples of its own window
  ``t // W`` (VSA).
* A3: target windows follow VSA: centre ``c_w + (W / 2) * o``, size
  ``(1 + s) * W``, no clamping. The offset unit is ``W / 2`` (VSA's
  ``(T' - 1) / (2 N_w)`` differs by ``1 / (2 N_w)``). One WA per layer, on K
  after its 1x1 projection, shared by K and V (Table VII's +4,104 parameters
  per layer allow no second one). Both WA convs are zero-initialised, so a
  fresh CDP layer is exactly the "fixed" sliding-window layer. The average
  pooling is mask-aware, K and V are zeroed at invalid steps before
  sampling, and a sampled key is valid iff its interpolated mask is > 0.
* A8: TransformerBlock's pre-LN, max-pooled skip, AffineDropPath scales and
  masked FFN are kept (Eq. 10-11 print no attention residual).
* A9: a level whose length is not a multiple of W is right-padded to
  ``ceil(T_l / W) * W`` slots, marked invalid, and cropped after attention;
  W is never shrunk per level.

A query with no valid key in its band (possible once windows have moved
into the padding) gets a zero attention output instead of NaN.
CDPAttention takes sequence masks ``[B, 1, T]`` only (MaskedMHCA's per-sample
1-D masks serve UnAV's co-occurrence branch, which CDP does not replace).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from davel.detectors.layers import MaskedMHCA, TransformerBlock

MODES = ("sliding", "window")


def band_mask(length: int, half: int, device: torch.device | str | None = None) -> Tensor:
    """``[length, length]`` bool, True where ``|i - j| <= half``."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= half


def sample_positions(scale: Tensor, offset: Tensor, window: int) -> Tensor:
    """Sample positions of the target windows (VSA convention, 1-D).

    ``scale``, ``offset``: ``[B, H, N_w]`` (``s``, ``o`` of each window and head).
    Returns ``[B, H, N_w * W]`` float: slot ``w * W + i`` samples at
    ``c_w + (W / 2) * o + (1 + s) * r_i`` with ``c_w = w W + (W - 1) / 2`` and
    ``r_i = i - (W - 1) / 2``; zero scale and offset give ``w W + i``.
    """
    n_win = scale.shape[-1]
    half_span = (window - 1) / 2
    centres = torch.arange(n_win, device=scale.device, dtype=scale.dtype) * window + half_span
    rel = torch.arange(window, device=scale.device, dtype=scale.dtype) - half_span
    pos = ((centres + offset * (window / 2))[..., None]
           + (1.0 + scale)[..., None] * rel)                     # [B, H, N_w, W]
    return pos.flatten(-2)


def interp_linear(x: Tensor, pos: Tensor) -> Tensor:
    """Linear interpolation along time with zeros outside the sequence.

    ``x``: ``[..., T, C]``, ``pos``: ``[..., P]`` (same leading dims, positions in
    steps). Returns ``[..., P, C]`` with ``out[p] = sum_t x[t] max(0, 1 - |pos - t|)``,
    i.e. ``grid_sample(align_corners=True, padding_mode="zeros")``. Differentiable
    in ``x`` and ``pos``.
    """
    length = x.shape[-2]
    left = torch.floor(pos)
    frac = (pos - left)[..., None]          # carries the gradient w.r.t. pos
    left = left.long()

    def tap(idx: Tensor) -> Tensor:
        inside = ((idx >= 0) & (idx < length))[..., None].to(x.dtype)
        safe = idx.clamp(0, length - 1)[..., None].expand(*idx.shape, x.shape[-1])
        return torch.gather(x, -2, safe) * inside

    return tap(left) * (1.0 - frac) + tap(left + 1) * frac


class WindowAdaptation(nn.Module):
    """Eq. 9: ``s, o = Conv1x1(LeakyReLU(AvgPool_W(K)))`` per base window and head.

    ``forward(k [B, D, N_w * W], valid [B, 1, N_w * W] bool)`` returns
    ``(scale, offset)``, each ``[B, H, N_w]``. The pooling averages the valid
    steps of each window only (a window with none pools to 0). Both convs
    start at zero (weights and biases), so the target windows start as the
    base windows.
    """

    def __init__(self, n_embd: int, n_head: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.act = nn.LeakyReLU(0.01)
        self.scale = nn.Conv1d(n_embd, n_head, 1)
        self.offset = nn.Conv1d(n_embd, n_head, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for conv in (self.scale, self.offset):
            conv.weight.zero_()
            conv.bias.zero_()

    def forward(self, k: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        batch, channels, slots = k.shape
        m = valid.to(k.dtype)
        summed = (k * m).view(batch, channels, -1, self.window).sum(-1)
        count = m.view(batch, 1, -1, self.window).sum(-1).clamp(min=1.0)
        hidden = self.act(summed / count)
        return self.scale(hidden), self.offset(hidden)


class CDPAttention(MaskedMHCA):
    """Window-adapted cross-modal attention (Eq. 7-10); drop-in for :class:`MaskedMHCA`.

    ``forward(x_kv [B, D, T], x_q [B, D, T], mask [B, 1, T] bool)`` returns
    ``([B, D, T / stride], query mask [B, 1, T / stride])`` like MaskedMHCA.

    ``window``: base window W (in steps of this layer's output level).
    ``mode``: ``"sliding"`` (band ``|t - j| <= W // 2`` over the sampled slots) or
    ``"window"`` (each slot attends to its own target window's W samples).
    ``adaptive``: True is CDP (Window Adaptation + re-sampling); False is the
    "fixed" variant (base windows, no WA parameters).
    """

    def __init__(self, n_embd: int, n_head: int, qx_stride: int = 1, kv_stride: int = 1,
                 window: int = 8, mode: str = "sliding", adaptive: bool = True) -> None:
        super().__init__(n_embd, n_head, qx_stride, kv_stride)
        if mode not in MODES:
            raise ValueError(f"CDP mode must be one of {MODES}, got {mode!r}")
        if window < 1:
            raise ValueError(f"CDP window must be positive, got {window}")
        self.window, self.mode, self.adaptive = window, mode, adaptive
        self.wa = WindowAdaptation(n_embd, n_head, window) if adaptive else None

    def _allowed(self, slots: int, key_valid: Tensor) -> Tensor:
        """``[B, H or 1, slots, slots]`` bool: which sampled key each query slot may use."""
        if self.mode == "sliding":
            local = band_mask(slots, self.window // 2, key_valid.device)
        else:
            win = torch.arange(slots, device=key_valid.device) // self.window
            local = win[:, None] == win[None, :]
        return local & key_valid[..., None, :]

    def forward(self, x_kv: Tensor, x_q: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if mask.dim() != 3:
            raise ValueError("CDPAttention needs a sequence mask [B, 1, T]")
        q, q_mask = self.query_conv(x_q, mask)
        k, kv_mask = self.key_conv(x_kv, mask)
        v, _ = self.value_conv(x_kv, mask)
        q = self.query(self.query_norm(q))
        k = self.key(self.key_norm(k))
        v = self.value(self.value_norm(v))
        batch, channels, length = k.shape

        # A9: right-pad to whole windows; padded slots are invalid keys
        pad = -length % self.window
        valid = F.pad(kv_mask, (0, pad))                        # [B, 1, T']
        keep = valid.to(k.dtype)
        k = F.pad(k, (0, pad)) * keep
        v = F.pad(v, (0, pad)) * keep
        q = F.pad(q, (0, pad))
        slots = q.shape[-1]
        if self.wa is not None:   # Eq. 9 pools all heads' channels of K together
            scale, offset = self.wa(k, valid)                    # [B, H, N_w] each
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # [B, H, T', D']

        if self.wa is not None:
            pos = sample_positions(scale, offset, self.window)   # [B, H, T']
            k = interp_linear(k, pos)
            v = interp_linear(v, pos)
            m_hat = interp_linear(keep[:, :, :, None].expand(-1, self.n_head, -1, -1), pos)
            key_valid = m_hat[..., 0] > 0                       # [B, H, T']
        else:
            key_valid = valid                                    # [B, 1, T']

        allowed = self._allowed(slots, key_valid)
        att = (q * self.scale) @ k.transpose(-2, -1)
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min).softmax(dim=-1)
        # rows with no allowed key would be uniform: switch them off
        att = att * allowed.to(att.dtype)
        out = (att @ v)[:, :, :length]
        out = out.transpose(2, 3).contiguous().view(batch, channels, length)
        return self.proj(out) * q_mask.to(out.dtype), q_mask


class CDPBlock(TransformerBlock):
    """A :class:`TransformerBlock` whose attention is :class:`CDPAttention` (Eq. 11 = the block).

    Same ``forward(x_kv, x_q, mask)`` and state-dict keys as TransformerBlock,
    plus ``attn.wa.*`` when adaptive.
    """

    def __init__(self, n_embd: int, n_head: int, stride: int = 1, window: int = 8,
                 mode: str = "sliding", adaptive: bool = True, layer_scale: bool = True) -> None:
        super().__init__(n_embd, n_head, stride, layer_scale=layer_scale)
        self.attn = CDPAttention(n_embd, n_head, stride, stride, window, mode, adaptive)


def cdp_blocks(n_embd: int, n_head: int, count: int, stride: int, window: int = 8,
               mode: str = "sliding", adaptive: bool = True,
               layer_scale: bool = True) -> nn.ModuleList:
    """``count`` CDP blocks of one stride (the CDP analogue of ``transformer_blocks``)."""
    return nn.ModuleList(CDPBlock(n_embd, n_head, stride, window, mode, adaptive, layer_scale)
                         for _ in range(count))
