"""LoCo detector (Xing, Qu, Yan, Shu, Tang: "Locality-aware Cross-modal Correspondence
Learning for Dense Audio-Visual Events Localization"). No code was released; this
follows the paper and /work/shared/LOCO.md.

Pipeline (Eq. 2): UnAV's two-stream stem (conv embedding, absolute positional
table, 2 unimodal transformer blocks per modality) gives ``F_v, F_a``, on which
the training-only LCC loss acts (:mod:`davel.detectors.lcc`); a 6-level
cross-modal pyramid of CDP blocks (:mod:`davel.detectors.cdp`, wired like
``unav.CrossModalPyramid``: level 1 at stride 1, then 5 stride-2 levels, one
block per direction and level); a fusion decoder shared across levels; UnAV's
shared class-aware Cls / Reg heads. Decoding is UnAV's (Eq. 1).

Choices the paper leaves open (LOCO.md §4):

* A1: the decoder ("comprehensive fusion on Z at each pyramid level through
  transformer blocks") is one module shared by all levels:
  ``ReLU(LN(MaskedConv1D(2D -> 2D, k3, no bias)))`` then 3 x
  ``TransformerBlock(2D, n_head)`` self-attention. It reproduces every row of
  Table VII; UnAV's TDM alone would exceed LoCo's whole budget. The conv
  stem's output is also multiplied by the mask (the blocks mask their own
  outputs), so padded steps hold zeros and nothing depends on the padded
  length. ``decoder="tdm"`` puts ``unav.DependencyBlock`` there instead.
* A7: the "base" ablation is the single-level model: ``num_levels=1`` (or
  ``backbone_arch=(2, 3, 0)``) with ``attention="global"``, regression range
  ``(0, 10000)``. Other attentions are allowed at one level too.
* A10: the absolute positional embedding is on (``use_abs_pe=True``), the
  decoder blocks use ``n_head`` (4) heads.
* A11: regression ranges are UnAV's ``DEFAULT_REGRESSION_RANGE`` (level-0 grid steps).
* ``attention="global"`` uses plain MaskedMHCA blocks with exactly UnAV's
  backbone key names; ``"fixed"`` is CDP without Window Adaptation; both then
  have UnAV's backbone keys, so LoCo checkpoints are told apart by their
  ``decoder.`` / ``lcc.`` keys (:meth:`LoCoDetector.matches_state_dict`).

Padding: the input features are multiplied by the mask before the stem (davel
pads with zeros anyway, so this changes nothing there); with the decoder's
masking above, what a padded step holds never reaches a valid output. How far
a batch is padded does not matter either, as long as every level keeps at
least one padded step after the video (the convolutions' right edges see the
tensor's zero padding otherwise, as in UnAV) and the length stays within
``max_seq_len`` (beyond it the positional table is resampled).

LCC never runs in :meth:`LoCoDetector.forward`; :meth:`LoCoDetector.forward_train`
adds it. LoCo has no layer sized by ``max_seq_len``: like UnAV it runs any
multiple of the total stride in one pass (up to :data:`davel.detectors.base.SINGLE_PASS_MAX`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from davel.detectors.base import DEFAULT_REGRESSION_RANGE, ModelOption, PyramidDetector
from davel.detectors.cdp import MODES, CDPBlock
from davel.detectors.layers import ChannelLayerNorm, MaskedConv1D, TransformerBlock, transformer_blocks
from davel.detectors.lcc import TARGETS, LCCHead, lcc_loss
from davel.detectors.output import DetectorOutput
from davel.detectors.state_dict import count_indexed
from davel.detectors.stem import TwoStreamStem
from davel.detectors.unav import DependencyBlock, pyramid_arch
from davel.errors import WeightsError

ATTENTIONS = ("adaptive", "fixed", "global")
DECODERS = ("fusion", "tdm")
# the single-level "base" model regresses every event size at level 0
SINGLE_LEVEL_RANGE: tuple[tuple[float, float], ...] = ((0, 10000),)
# LoCo's own options with their defaults (the paper's full model)
OPTIONS = (
    ModelOption("attention", "adaptive", "cross-modal attention: adaptive (CDP), fixed (a sliding "
                "window) or global (UnAV's)", choices=ATTENTIONS),
    ModelOption("cdp_window", 8, "base window W of the CDP attention", minimum=1),
    ModelOption("cdp_mode", "sliding", "CDP windows: sliding (one per step) or window (fixed blocks)",
                choices=MODES),
    ModelOption("decoder", "fusion", "multimodal decoder: fusion (A1) or tdm (UnAV's dependency block)",
                choices=DECODERS),
    ModelOption("use_lcc", True, "train with the LCC loss (Eq. 12)", flag="--lcc/--no-lcc"),
    ModelOption("lcc_weight", 0.1, "weight of the LCC loss (Eq. 12)", minimum=0),
    ModelOption("lcc_target", "gaussian", "LCC target correspondence", choices=TARGETS),
    ModelOption("lcc_mask_padding", True, "leave padded steps out of the LCC loss",
                flag="--lcc-mask-padding/--lcc-keep-padding"),
    ModelOption("tau_init", 0.07, "initial LCC temperature tau", minimum=0),
    ModelOption("sigma_init", 1.0, "initial LCC Gaussian width sigma", minimum=0),
)


def cross_block(n_embd: int, n_head: int, stride: int, attention: str, window: int, mode: str,
                layer_scale: bool) -> TransformerBlock:
    """One cross-modal pyramid block: global (UnAV), fixed-window or adaptive (CDP)."""
    if attention == "global":
        return TransformerBlock(n_embd, n_head, stride, layer_scale=layer_scale)
    return CDPBlock(n_embd, n_head, stride, window, mode, attention == "adaptive", layer_scale)


class LoCoBackbone(TwoStreamStem):
    """Stem + cross-modal CDP pyramid (UnAV backbone naming, plus ``attn.wa.*`` when adaptive).

    ``forward(x_v [B, Cv, L], x_a [B, Ca, L], mask [B, 1, L] bool)`` returns
    ``(feats_v, feats_a, masks, (f_v, f_a))``: per level ``i`` (``arch[2] + 1``
    levels) ``[B, D, L / s^i]`` features and ``[B, 1, L / s^i]`` masks, and the
    unimodal encoder outputs ``f_v, f_a [B, D, L]`` that LCC uses.
    ``arch`` = (embedding convs, unimodal blocks + 1, strided levels), as UnAV's.
    """

    def __init__(self, in_v: int, in_a: int, n_embd: int, n_head: int, kernel_size: int,
                 max_len: int, arch: Sequence[int] = (2, 3, 5), scale_factor: int = 2,
                 with_ln: bool = True, use_abs_pe: bool = True, layer_scale: bool = True,
                 attention: str = "adaptive", window: int = 8, mode: str = "sliding") -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if mode not in MODES:
            raise ValueError(f"cdp_mode must be one of {MODES}, got {mode!r}")
        n_embd_layers, n_stem, n_cross = arch
        # as in UnAV, arch[1] counts the full-resolution cross block as the last stem layer
        super().__init__(in_v, in_a, n_embd, n_head, kernel_size, n_embd_layers, n_stem - 1,
                         with_ln, layer_scale, max_len, use_abs_pe)

        def block(stride: int) -> TransformerBlock:
            return cross_block(n_embd, n_head, stride, attention, window, mode, layer_scale)

        # "Va" keeps the visual stream (keys, values, skip) and queries it with audio
        self.ori_cross_att_Va = block(1)
        self.ori_cross_att_Av = block(1)
        self.cross_att_Va = nn.ModuleList(block(scale_factor) for _ in range(n_cross))
        self.cross_att_Av = nn.ModuleList(block(scale_factor) for _ in range(n_cross))

    def forward(self, x_v: Tensor, x_a: Tensor, mask: Tensor
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor], tuple[Tensor, Tensor]]:
        f_v, f_a = self.encode(x_v, x_a, mask)
        x_v, _ = self.ori_cross_att_Va(f_v, f_a, mask)
        x_a, _ = self.ori_cross_att_Av(f_a, f_v, mask)
        feats_v, feats_a, masks = [x_v], [x_a], [mask]
        for block_va, block_av in zip(self.cross_att_Va, self.cross_att_Av):
            prev_v, prev_a, prev_mask = feats_v[-1], feats_a[-1], masks[-1]
            x_v, mask = block_va(prev_v, prev_a, prev_mask)
            x_a, _ = block_av(prev_a, prev_v, prev_mask)
            feats_v.append(x_v)
            feats_a.append(x_a)
            masks.append(mask)
        return feats_v, feats_a, masks, (f_v, f_a)


class FusionDecoder(nn.Module):
    """A1: the multimodal decoder, shared across levels.

    Per level ``[B, C, T_i] -> [B, C, T_i]``: ``ReLU(LN(conv_k(x))) * mask``, then
    ``n_blocks`` pre-LN self-attention TransformerBlocks. Masks pass through.
    """

    def __init__(self, dim: int, n_head: int = 4, n_blocks: int = 3, kernel_size: int = 3,
                 layer_scale: bool = True) -> None:
        super().__init__()
        self.proj = MaskedConv1D(dim, dim, kernel_size, bias=False)
        self.norm = ChannelLayerNorm(dim)
        self.blocks = transformer_blocks(dim, n_head, n_blocks, 1, layer_scale)

    def _level(self, x: Tensor, mask: Tensor) -> Tensor:
        x, _ = self.proj(x, mask)
        x = torch.relu(self.norm(x)) * mask.to(x.dtype)
        for blk in self.blocks:
            x, _ = blk(x, x, mask)
        return x

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        return [self._level(x, m) for x, m in zip(feats, masks)]


def _level_ranges(levels: int, regression_range: Sequence[Sequence[float]]
                  ) -> Sequence[Sequence[float]]:
    # the default 6-level ranges stand for "the published ones": one level regresses all sizes
    if levels == 1 and tuple(map(tuple, regression_range)) == DEFAULT_REGRESSION_RANGE:
        return SINGLE_LEVEL_RANGE
    return regression_range


def _scalar(x: Tensor) -> float:
    # meta tensors (parameter counting) have no value
    return float("nan") if x.device.type == "meta" else float(x)


class LoCoDetector(PyramidDetector):
    """LoCo: stem (+ LCC in training), CDP pyramid, shared fusion decoder, class-aware heads.

    ``forward(feats_v [B, Cv, L], feats_a [B, Ca, L], mask [B, L] bool)`` with
    ``L = padded_length(T)`` -> :class:`DetectorOutput` with ``num_levels``
    levels (``[B, L / 2^i, C]`` logits, ``[B, L / 2^i, C, 2]`` offsets).
    :meth:`forward_train` also returns the weighted LCC loss. Build from a
    checkpoint with :meth:`from_state_dict`.

    ``attention``: ``"adaptive"`` (CDP), ``"fixed"`` (sliding window of
    ``cdp_window``), ``"global"`` (UnAV cross-attention). ``cdp_mode``:
    ``"sliding"`` or ``"window"`` (see :class:`CDPAttention`). ``decoder``:
    ``"fusion"`` (A1) or ``"tdm"`` (UnAV's dependency block, ``dependency_dim``
    wide). ``use_lcc`` adds the LCC head (``lcc.*`` keys); ``lcc_target`` is one
    of ``diagonal, softened, fixed_gaussian, gaussian``. ``num_levels`` (if
    given) overrides ``backbone_arch[2] + 1``.
    """

    kind: ClassVar[str] = "loco"
    # whatever its attention: UnAV has dependency_block., CCNet MTGC_block.
    state_dict_markers: ClassVar[tuple[str, ...]] = ("decoder.", "lcc.")
    cross_prefix: ClassVar[str] = "backbone.cross_att_Va"
    options: ClassVar[tuple[ModelOption, ...]] = OPTIONS
    # with the options: what a checkpoint's tensors cannot reveal (davel.model_config)
    config_hints: ClassVar[tuple[str, ...]] = ("n_head", "max_seq_len", "use_abs_pe")

    def __init__(self, input_dim_v: int = 2048, input_dim_a: int = 128, embd_dim: int = 512,
                 n_head: int = 4, num_classes: int = 100, max_seq_len: int = 224,
                 backbone_arch: Sequence[int] = (2, 3, 5), num_levels: int | None = None,
                 scale_factor: int = 2, embd_kernel_size: int = 3, embd_with_ln: bool = True,
                 head_dim: int = 512, head_num_layers: int = 3, head_kernel_size: int = 3,
                 head_with_ln: bool = True, class_aware: bool = True, use_abs_pe: bool = True,
                 attention: str = "adaptive", cdp_window: int = 8, cdp_mode: str = "sliding",
                 decoder: str = "fusion", decoder_blocks: int = 3, dependency_dim: int = 128,
                 use_lcc: bool = True, lcc_weight: float = 0.1, lcc_target: str = "gaussian",
                 lcc_mask_padding: bool = True, lcc_dim: int | None = None,
                 lcc_hidden: int | None = None, tau_init: float = 0.07, sigma_init: float = 1.0,
                 cls_prior_prob: float = 0.01, layer_scale: bool = True,
                 regression_range: Sequence[Sequence[float]] = DEFAULT_REGRESSION_RANGE) -> None:
        if num_levels is not None:
            backbone_arch = (backbone_arch[0], backbone_arch[1], num_levels - 1)
        backbone_arch = tuple(backbone_arch)
        regression_range = _level_ranges(backbone_arch[2] + 1, regression_range)
        super().__init__(input_dim_v, input_dim_a, num_classes, max_seq_len, backbone_arch,
                         regression_range, scale_factor)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if lcc_target not in TARGETS:
            raise ValueError(f"lcc_target must be one of {TARGETS}, got {lcc_target!r}")
        self.attention, self.decoder_kind = attention, decoder
        self.use_lcc, self.lcc_weight, self.lcc_mask_padding = use_lcc, lcc_weight, lcc_mask_padding

        self.backbone = LoCoBackbone(
            input_dim_v, input_dim_a, embd_dim, n_head, embd_kernel_size, max_seq_len,
            backbone_arch, scale_factor, embd_with_ln, use_abs_pe, layer_scale, attention,
            cdp_window, cdp_mode)
        fused = 2 * embd_dim
        self.decoder: nn.Module = (
            FusionDecoder(fused, n_head, decoder_blocks, 3, layer_scale) if decoder == "fusion"
            else DependencyBlock(fused, dependency_dim, 3, num_classes, layer_scale=layer_scale))
        self.build_heads(fused, head_dim, head_num_layers, head_kernel_size, head_with_ln,
                         class_aware)
        self.lcc = (LCCHead(embd_dim, lcc_dim or embd_dim // 2, lcc_hidden or embd_dim,
                            lcc_target, tau_init, sigma_init) if use_lcc else None)
        self.init_biases(cls_prior_prob)  # the WA convs stay all-zero: they have no bias to prior

    @classmethod
    def training_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The generic options, every LoCo option (:data:`OPTIONS`) and ``dependency_dim``
        (the ``tdm`` decoder's width)."""
        return {**super().training_kwargs(options), "dependency_dim": options["dependency_dim"]}

    def _run(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor
             ) -> tuple[DetectorOutput, tuple[Tensor, Tensor, Tensor]]:
        length = self.check_inputs(feats_v, feats_a, mask)
        mask3 = mask[:, None, :]
        keep = mask3.to(feats_v.dtype)
        feats_vis, feats_aud, masks, (f_v, f_a) = self.backbone(feats_v * keep, feats_a * keep,
                                                                mask3)
        feats = [torch.cat((v, a), dim=1) for v, a in zip(feats_vis, feats_aud)]
        feats = self.decoder(feats, masks)
        out = self.run_heads(feats, masks, length)
        return out, (f_v, f_a, mask3)

    def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
        return self._run(feats_v, feats_a, mask)[0]

    def forward_train(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor
                      ) -> tuple[DetectorOutput, dict[str, Tensor], dict[str, float]]:
        """Forward plus LCC (in either mode): ``(output, extra losses, logged scalars)``.

        The extra losses are already weighted (``{"lcc_loss": lcc_weight * L_LCC}``),
        ready to add to the detection loss; the logged scalars are the unweighted
        ``lcc_loss``, ``sigma`` and ``tau``. Both dicts are empty without LCC.
        """
        out, (f_v, f_a, mask3) = self._run(feats_v, feats_a, mask)
        if self.lcc is None:
            return out, {}, {}
        loss, diag = lcc_loss(f_v, f_a, mask3, self.lcc, self.lcc_mask_padding)
        logs = {"lcc_loss": _scalar(loss.detach()), "sigma": _scalar(diag["sigma"]),
                "tau": _scalar(diag["tau"])}
        return out, {"lcc_loss": self.lcc_weight * loss}, logs

    # ---- checkpoints ---------------------------------------------------

    @classmethod
    def default_regression_range(cls, levels: int) -> Sequence[Sequence[float]] | None:
        return SINGLE_LEVEL_RANGE if levels == 1 else super().default_regression_range(levels)

    @classmethod
    def kwargs_from_state_dict(cls, state_dict: Mapping[str, Tensor],
                               hints: Mapping[str, Any]) -> dict[str, Any]:
        """The decoder kind, LCC's presence and whether the attention is adaptive come
        from the keys, and are checked against the hints; without an ``attention`` hint a
        checkpoint without Window Adaptation keys is read as ``"global"`` (``"fixed"``
        has the same keys)."""
        sd = state_dict
        if not cls.matches_state_dict(sd):
            raise WeightsError("not a LoCo detector checkpoint (no decoder. or lcc. keys)")
        has_wa = any(k.startswith("backbone.") and ".attn.wa." in k for k in sd)
        decoder = "tdm" if "decoder.feature_expand.conv.weight" in sd else "fusion"
        has_lcc = any(k.startswith("lcc.") for k in sd)
        kwargs: dict[str, Any] = {"backbone_arch": pyramid_arch(sd, cls.cross_prefix),
                                  "decoder": decoder, "use_lcc": has_lcc}
        if decoder == "tdm":
            kwargs["dependency_dim"] = sd["decoder.cooccur_branch.ln11.weight"].shape[1]
        else:
            if "decoder.proj.conv.weight" not in sd:
                raise KeyError("decoder.proj.conv.weight")
            kwargs["decoder_blocks"] = count_indexed(sd, "decoder.blocks")
        if has_lcc:
            kwargs["lcc_hidden"] = sd["lcc.proj_V.0.weight"].shape[0]
            kwargs["lcc_dim"] = sd["lcc.proj_V.2.weight"].shape[0]

        attention = hints.get("attention") or ("adaptive" if has_wa else "global")
        if (attention == "adaptive") != has_wa:
            raise WeightsError(f"LoCo checkpoint {'has' if has_wa else 'lacks'} Window Adaptation "
                               f"weights, but its config says attention={attention!r}")
        if hints.get("decoder") not in (None, decoder):
            raise WeightsError(f"LoCo checkpoint has a {decoder!r} decoder, "
                               f"but its config says {hints['decoder']!r}")
        if hints.get("use_lcc") is not None and bool(hints["use_lcc"]) != has_lcc:
            raise WeightsError(f"LoCo checkpoint {'has' if has_lcc else 'lacks'} LCC weights, "
                               f"but its config says use_lcc={hints['use_lcc']}")
        return {**kwargs, "attention": attention}
