"""CCNet detector (Zhou et al., AAAI 2025; zzhhfut/CCNet-AAAI2025 "CCNet_base_TCG_Transformer").

Conv embedding + unimodal transformers -> CMCC pyramid (cross-modal
interaction + temporal-consistency gates, strides 1..32) -> MTGC block
(coarse-to-fine, per-class dependency branches, fine-to-coarse) -> shared
class-aware heads. Module names follow the official checkpoint, so its
``state_dict_ema`` loads strictly once the ``module.`` prefix is dropped.

The MTGC block has Linear layers over time sized from ``max_seq_len``: the
model runs exactly ``max_seq_len`` steps (shorter videos are padded, longer
ones must be windowed by the caller).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from davel.detectors.base import DEFAULT_REGRESSION_RANGE, PyramidDetector
from davel.detectors.cmcc import cmcc_layer, gate_list
from davel.detectors.layers import TransformerBlock, transformer_blocks
from davel.detectors.mtgc import MTGCBlock
from davel.detectors.output import DetectorOutput
from davel.detectors.state_dict import count_indexed
from davel.detectors.stem import TwoStreamStem
from davel.errors import InputError

# The MTGC block halves the length between levels whatever the config says.
SCALE_FACTOR = 2


class SequenceLengthError(InputError, ValueError):
    """The input does not have the one length a CCNet model can run."""


class CCNetBackbone(TwoStreamStem):
    """Embedding, unimodal transformers and the CMCC pyramid (official backbone naming).

    ``forward(x_v [B, Cv, L], x_a [B, Ca, L], mask [B, 1, L] bool)`` returns,
    per level ``k`` (``arch[2] + 1`` levels), visual and audio features
    ``[B, D, L / 2^k]`` and masks ``[B, 1, L / 2^k]``.
    ``arch`` = (embedding convs, unimodal blocks, strided CMCC layers).
    """

    def __init__(self, in_v: int, in_a: int, n_embd: int, n_head: int, kernel_size: int,
                 max_len: int, arch: Sequence[int] = (2, 2, 5), with_ln: bool = True,
                 layer_scale: bool = True) -> None:
        n_embd_layers, n_unimodal, n_cross = arch
        super().__init__(in_v, in_a, n_embd, n_head, kernel_size, n_embd_layers, n_unimodal,
                         with_ln, layer_scale, max_len)
        # CMCC layer 0 at full resolution, then one strided layer per level.
        # "CMI_Visual" keeps the visual stream and queries it with audio.
        self.ori_CMI_Visual = TransformerBlock(n_embd, n_head, 1, layer_scale=layer_scale)
        self.ori_CMI_Audio = TransformerBlock(n_embd, n_head, 1, layer_scale=layer_scale)
        self.CMI_Visual = transformer_blocks(n_embd, n_head, n_cross, SCALE_FACTOR, layer_scale)
        self.CMI_Audio = transformer_blocks(n_embd, n_head, n_cross, SCALE_FACTOR, layer_scale)
        # visual_TCG gates the audio stream, audio_TCG the visual one
        self.visual_TCG = gate_list(n_embd, n_head, n_cross + 1, SCALE_FACTOR)
        self.audio_TCG = gate_list(n_embd, n_head, n_cross + 1, SCALE_FACTOR)

    def forward(self, x_v: Tensor, x_a: Tensor, mask: Tensor
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        x_v, x_a = self.encode(x_v, x_a, mask)
        cmi_v = [self.ori_CMI_Visual, *self.CMI_Visual]
        cmi_a = [self.ori_CMI_Audio, *self.CMI_Audio]
        feats_v, feats_a, masks = [], [], []
        for level in range(len(cmi_v)):
            x_v, x_a, mask = cmcc_layer(cmi_v[level], cmi_a[level], self.audio_TCG[level],
                                        self.visual_TCG[level], x_v, x_a, mask)
            feats_v.append(x_v)
            feats_a.append(x_a)
            masks.append(mask)
        return feats_v, feats_a, masks


class CCNetDetector(PyramidDetector):
    """CCNet (CMCC backbone, MTGC block, class-aware heads).

    ``forward(feats_v [B, Cv, L], feats_a [B, Ca, L], mask [B, L] bool)`` with
    ``L = max_seq_len`` -> :class:`DetectorOutput` with ``arch[2] + 1`` levels;
    ``points`` always have ``max_seq_len / 2^k`` rows. Other lengths raise
    :class:`SequenceLengthError` (an :class:`InputError` and a ``ValueError``).
    Build from a checkpoint with :meth:`from_state_dict`.
    """

    kind: ClassVar[str] = "ccnet"
    state_dict_markers: ClassVar[tuple[str, ...]] = (
        "MTGC_block.", "backbone.ori_CMI_Visual.", "backbone.visual_TCG.")
    cross_prefix: ClassVar[str] = "backbone.CMI_Visual"

    def __init__(self, input_dim_v: int = 2048, input_dim_a: int = 128, embd_dim: int = 512,
                 n_head: int = 4, num_classes: int = 100, max_seq_len: int = 224,
                 backbone_arch: Sequence[int] = (2, 2, 5), embd_kernel_size: int = 3,
                 embd_with_ln: bool = True, head_dim: int = 512, head_num_layers: int = 3,
                 head_kernel_size: int = 3, head_with_ln: bool = True, class_aware: bool = True,
                 mtgc_dim: int = 128, mtgc_kernel_size: int = 3, use_channel_att: bool = True,
                 layer_scale: bool = True, cls_prior_prob: float = 0.01,
                 regression_range: Sequence[Sequence[float]] = DEFAULT_REGRESSION_RANGE,
                 scale_factor: int = SCALE_FACTOR) -> None:
        if scale_factor != SCALE_FACTOR:
            raise ValueError(f"the MTGC block only supports a pyramid stride of {SCALE_FACTOR}, "
                             f"got {scale_factor}")
        super().__init__(input_dim_v, input_dim_a, num_classes, max_seq_len, backbone_arch,
                         regression_range, SCALE_FACTOR)
        num_levels = self.num_levels

        self.backbone = CCNetBackbone(input_dim_v, input_dim_a, embd_dim, n_head, embd_kernel_size,
                                      max_seq_len, backbone_arch, embd_with_ln, layer_scale)
        self.MTGC_block = MTGCBlock(2 * embd_dim, mtgc_dim, mtgc_kernel_size, max_seq_len,
                                    num_classes, num_levels, use_channel_att=use_channel_att,
                                    layer_scale=layer_scale)
        self.build_heads(2 * embd_dim, head_dim, head_num_layers, head_kernel_size, head_with_ln,
                         class_aware)
        self.init_biases(cls_prior_prob)

    def padded_length(self, num_steps: int) -> int:
        """Length the model runs at: always ``max_seq_len``; longer inputs must be windowed."""
        if num_steps > self.max_seq_len:
            raise SequenceLengthError(
                f"CCNet runs at most {self.max_seq_len} feature steps per pass, got {num_steps}: "
                f"split longer inputs into windows")
        return self.max_seq_len

    def max_single_pass(self) -> int:
        return self.max_seq_len

    @classmethod
    def training_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().training_kwargs(options), "mtgc_dim": options["dependency_dim"]}

    def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
        length = feats_v.shape[-1]
        if length != self.max_seq_len or feats_a.shape[-1] != length or mask.shape[-1] != length:
            raise SequenceLengthError(
                f"CCNet inputs must be padded to exactly {self.max_seq_len} steps, got "
                f"{feats_v.shape[-1]}/{feats_a.shape[-1]}/{mask.shape[-1]}")
        feats_vis, feats_aud, masks = self.backbone(feats_v, feats_a, mask[:, None, :])
        feats = [torch.cat((v, a), dim=1) for v, a in zip(feats_vis, feats_aud)]
        feats = self.MTGC_block(feats, masks)
        return self.run_heads(feats, masks, self.max_seq_len)

    @classmethod
    def kwargs_from_state_dict(cls, state_dict: Mapping[str, Tensor],
                               hints: Mapping[str, Any]) -> dict[str, Any]:
        """CCNet's own sizes: the MTGC block's, and ``max_seq_len``, which its Linear
        layers over time reveal. The number of backbone attention heads (not visible in
        the weights) comes from the hints, else the published config's 4."""
        sd = state_dict
        return {
            "max_seq_len": (sd["MTGC_block.C2F_linear.0.weight"].shape[0]
                            if count_indexed(sd, cls.cross_prefix)
                            else sd["MTGC_block.feature_tem_block.0.weight"].shape[1]),
            "mtgc_dim": sd["MTGC_block.cooccur_branch.ln11.weight"].shape[1],
            "mtgc_kernel_size": sd["MTGC_block.feature_expand.conv.weight"].shape[-1],
            "use_channel_att": "MTGC_block.feature_tem_press.conv.weight" in sd,
        }
