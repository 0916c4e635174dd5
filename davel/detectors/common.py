"""Building blocks shared by the ActionFormer-style detectors (UnAV baseline, CCNet, LoCo).

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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from davel.detectors.output import DetectorOutput
from davel.errors import InputError

# Regression ranges of the 6-level pyramid (grid units); only used for the
# ``points`` rows (training targets), but they are part of the output format.
DEFAULT_REGRESSION_RANGE: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))


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


def embed(x: Tensor, mask: Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> Tensor:
    """Embedding stem: ``ReLU(norm(masked conv(x)))`` per layer; ``[B, C, T] -> [B, D, T]``."""
    for conv, norm in zip(convs, norms):
        x, _ = conv(x, mask)
        x = F.relu(norm(x))
    return x


def transformer_blocks(n_embd: int, n_head: int, count: int, stride: int,
                       layer_scale: bool = True) -> nn.ModuleList:
    return nn.ModuleList(TransformerBlock(n_embd, n_head, stride, layer_scale=layer_scale)
                         for _ in range(count))


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


class PyramidDetector(nn.Module):
    """What every detector kind shares: its inputs, its temporal pyramid, and the
    properties the rest of davel asks a detector for instead of switching on its name.

    Subclasses build the layers and set the class attributes:

    * ``kind``: the registry name (``"unav"``, ``"ccnet"``, ...);
    * ``config_hints``: constructor arguments the tensors of a checkpoint cannot
      reveal; davel's own checkpoints record them in ``davel.model_config`` and
      :meth:`from_state_dict` takes them as keyword arguments;
    * ``state_dict_markers``: key prefixes (without ``module.``) only this kind has.

    The constructor records the feature sizes, classes, ``max_seq_len``, levels
    (strided layers + 1, checked against the regression ranges) and the total
    stride ``max_div_factor``, which must divide ``max_seq_len``.
    """

    kind: ClassVar[str] = ""
    config_hints: ClassVar[tuple[str, ...]] = ("n_head",)
    state_dict_markers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, input_dim_v: int, input_dim_a: int, num_classes: int, max_seq_len: int,
                 backbone_arch: Sequence[int], regression_range: Sequence[Sequence[float]],
                 scale_factor: int = 2) -> None:
        super().__init__()
        num_levels = backbone_arch[-1] + 1
        if len(regression_range) != num_levels:
            raise ValueError(f"{len(regression_range)} regression ranges for {num_levels} levels")
        if max_seq_len % scale_factor ** (num_levels - 1):
            raise ValueError(f"max_seq_len {max_seq_len} is not divisible by "
                             f"{scale_factor ** (num_levels - 1)}")
        self.input_dim_v, self.input_dim_a = input_dim_v, input_dim_a
        self.num_classes = num_classes
        self.max_seq_len = max_seq_len
        self.scale_factor = scale_factor
        self.num_levels = num_levels
        self.max_div_factor = scale_factor ** (num_levels - 1)
        self.regression_range = tuple(tuple(r) for r in regression_range)

    @property
    def input_dims(self) -> tuple[int, int]:
        """(visual, audio) feature sizes the model takes."""
        return self.input_dim_v, self.input_dim_a

    def padded_length(self, num_steps: int) -> int:
        """Length the model runs ``num_steps`` feature steps at (the official eval padding)."""
        raise NotImplementedError

    def max_single_pass(self) -> int:
        """Longest input run in one pass; longer inputs are windowed (davel.windows)."""
        return self.max_seq_len

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, Tensor]) -> bool:
        """Whether a checkpoint's state dict (keys without ``module.``) is of this kind."""
        return any(k.startswith(cls.state_dict_markers) for k in state_dict)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], **hints) -> PyramidDetector:
        """Build and strictly load from a checkpoint state dict (``module.`` prefix optional)."""
        raise NotImplementedError

    @classmethod
    def training_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the generic training options (``embd_dim``,
        ``head_dim``, ``n_head``, ``max_seq_len``, ``dependency_dim``, ``droppath``,
        ``cls_prior_prob``) plus the kind's own ``model_options``."""
        return {"embd_dim": options["embd_dim"], "head_dim": options["head_dim"],
                "n_head": options["n_head"], "max_seq_len": options["max_seq_len"],
                "layer_scale": options["droppath"] > 0, **options.get("model_options", {})}

    def build_heads(self, feat_dim: int, head_dim: int, num_layers: int, kernel_size: int,
                    with_ln: bool, class_aware: bool) -> None:
        """The classification and regression heads on the fused pyramid ``[B, feat_dim, T_i]``
        (``cls_head``, ``reg_head``: the checkpoints' names)."""
        self.cls_head = ClsHead(feat_dim, head_dim, self.num_classes, num_layers, kernel_size,
                                with_ln)
        self.reg_head = RegHead(feat_dim, head_dim, self.num_classes, self.num_levels, num_layers,
                                kernel_size, with_ln, class_aware)

    def run_heads(self, feats: Sequence[Tensor], masks: Sequence[Tensor],
                  length: int) -> DetectorOutput:
        """Both heads on the fused pyramid of an input ``length`` steps long, flattened over
        levels with each point's position, stride and regression range."""
        points = level_points(length, self.num_levels, self.scale_factor, self.regression_range)
        return to_detector_output(self.cls_head(feats, masks), self.reg_head(feats, masks),
                                  masks, points)

    @torch.no_grad()
    def init_biases(self, prior_prob: float = 0.01, empty_classes: Sequence[int] = ()) -> None:
        """Fresh-model initialisation of the official code (what training starts from):
        zero biases, the classifier bias at ``prior_prob``, and at 1e-6 for classes that
        have no annotation (the repos' ``head_empty_cls``). Loading weights overrides it."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d)) and module.bias is not None:
                module.bias.zero_()
        bias = self.cls_head.cls_head.conv.bias
        bias.fill_(-math.log((1 - prior_prob) / prior_prob))
        for c in empty_classes:
            bias[c] = -math.log((1 - 1e-6) / 1e-6)

    def unimodal_features(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The stem's outputs ``F_v, F_a [B, D, L]`` (embedding, positional table, unimodal
        blocks) for inputs shaped as :meth:`forward`'s: what LoCo's LCC acts on."""
        mask3 = mask[:, None, :]
        keep = mask3.to(feats_v.dtype)
        return self.backbone.encode(feats_v * keep, feats_a * keep, mask3)

    def forward_train(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor
                      ) -> tuple[DetectorOutput, dict[str, Tensor], dict[str, float]]:
        """Training forward: the output, extra loss terms (already weighted, added to the
        detection loss) and scalars to log. Plain detectors have neither."""
        return self(feats_v, feats_a, mask), {}, {}


def level_points(length: int, num_levels: int, scale_factor: int = 2,
                 regression_range: Sequence[Sequence[float]] = DEFAULT_REGRESSION_RANGE
                 ) -> list[Tensor]:
    """Point rows per level for a padded length: ``[length / s_i, 4]`` float32
    ``(t = j * s_i, reg_lo, reg_hi, s_i)`` with ``s_i = scale_factor ** i`` (no half-stride offset)."""
    if len(regression_range) != num_levels:
        raise ValueError(f"{len(regression_range)} regression ranges for {num_levels} levels")
    points = []
    for level, (lo, hi) in enumerate(regression_range):
        stride = scale_factor ** level
        t = torch.arange(0, length, stride, dtype=torch.float32)[:, None]
        rest = torch.tensor([[lo, hi, stride]], dtype=torch.float32).expand(t.shape[0], 3)
        points.append(torch.cat((t, rest), dim=1))
    return points


def padded_length(num_steps: int, max_seq_len: int, max_div_factor: int) -> int:
    """Eval padding: ``max_seq_len`` for short inputs, else the next multiple of ``max_div_factor``."""
    if num_steps <= max_seq_len:
        return max_seq_len
    return -(-num_steps // max_div_factor) * max_div_factor


def prepare_inputs(feats_v: Tensor | np.ndarray, feats_a: Tensor | np.ndarray,
                   length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Batch one video: ``[Cv, T]``, ``[Ca, T']`` -> ``[1, Cv, L]``, ``[1, Ca, L]``, ``[1, L]`` bool.

    Both streams are cut to the shorter length (as both repos do), zero-padded
    on the right to ``length``; the mask is True on the real steps.
    """
    v = torch.as_tensor(np.asarray(feats_v) if not isinstance(feats_v, Tensor) else feats_v,
                        dtype=torch.float32)
    a = torch.as_tensor(np.asarray(feats_a) if not isinstance(feats_a, Tensor) else feats_a,
                        dtype=torch.float32)
    if v.dim() != 2 or a.dim() != 2:
        raise InputError(f"features must be [channels, time], got {tuple(v.shape)} and {tuple(a.shape)}")
    steps = min(v.shape[1], a.shape[1])
    if steps == 0:
        raise InputError("no feature steps: the video is too short for one feature window")
    if steps > length:
        raise InputError(f"{steps} feature steps do not fit the padded length {length}")
    v_out = v.new_zeros(1, v.shape[0], length)
    a_out = a.new_zeros(1, a.shape[0], length)
    v_out[0, :, :steps] = v[:, :steps]
    a_out[0, :, :steps] = a[:, :steps]
    mask = (torch.arange(length) < steps)[None]
    return v_out, a_out, mask


def to_detector_output(cls_logits: Sequence[Tensor], offsets: Sequence[Tensor],
                       masks: Sequence[Tensor], points: Sequence[Tensor]) -> DetectorOutput:
    """Head outputs (``[B, C, T_i]``, ``[B, 2C or 2, T_i]``, masks ``[B, 1, T_i]``) -> DetectorOutput.

    Offsets become ``[B, T_i, C, 2]`` (class-agnostic: ``[B, T_i, 1, 2]``).
    """
    logits = [x.permute(0, 2, 1) for x in cls_logits]
    offs = [x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], -1, 2) for x in offsets]
    return DetectorOutput(cls_logits=logits, offsets=offs,
                          masks=[m.squeeze(1) for m in masks], points=list(points))
