"""UnAV-100 baseline detector (Geng et al., CVPR 2023; ttgeng233/UnAV "LocPointTransformer").

Conv embedding + unimodal transformers -> cross-modal pyramid (audio/visual
cross-attention at every level, strides 1..32) -> temporal dependency module
(per-class temporal and co-occurrence attention) -> shared class-aware heads.
Module names follow the official checkpoint so its ``state_dict_ema`` loads
strictly once the ``module.`` prefix is dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from davel.detectors.base import DEFAULT_REGRESSION_RANGE, PyramidDetector
from davel.detectors.dependency import dependency_branches
from davel.detectors.layers import MaskedConv1D, TransformerBlock, transformer_blocks
from davel.detectors.output import DetectorOutput
from davel.detectors.state_dict import count_indexed
from davel.detectors.stem import TwoStreamStem


class CrossModalPyramid(TwoStreamStem):
    """UnAV backbone ("convTransformer").

    Inputs ``x_v [B, Cv, L]``, ``x_a [B, Ca, L]``, ``mask [B, 1, L]`` bool.
    Returns per level ``i`` (``num_cross + 1`` levels): visual and audio
    features ``[B, D, L / s^i]`` and masks ``[B, 1, L / s^i]``.
    """

    def __init__(self, in_v: int, in_a: int, n_embd: int, n_head: int, kernel_size: int,
                 max_len: int, arch: Sequence[int] = (2, 3, 5), scale_factor: int = 2,
                 with_ln: bool = True, use_abs_pe: bool = True, layer_scale: bool = True) -> None:
        n_embd_layers, n_stem, n_cross = arch
        # arch[1] counts the full-resolution cross-attention as the last stem layer
        super().__init__(in_v, in_a, n_embd, n_head, kernel_size, n_embd_layers, n_stem - 1,
                         with_ln, layer_scale, max_len, use_abs_pe)
        self.ori_cross_att_Va = TransformerBlock(n_embd, n_head, 1, layer_scale=layer_scale)
        self.ori_cross_att_Av = TransformerBlock(n_embd, n_head, 1, layer_scale=layer_scale)
        self.cross_att_Va = transformer_blocks(n_embd, n_head, n_cross, scale_factor, layer_scale)
        self.cross_att_Av = transformer_blocks(n_embd, n_head, n_cross, scale_factor, layer_scale)

    def forward(self, x_v: Tensor, x_a: Tensor, mask: Tensor
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        x_v, x_a = self.encode(x_v, x_a, mask)

        # Naming follows the checkpoint: "Va" keeps the visual stream (keys,
        # values and skip) and queries it with audio; "Av" the reverse.
        feats_v, feats_a, masks = [], [], []
        x_va, _ = self.ori_cross_att_Va(x_v, x_a, mask)
        x_av, _ = self.ori_cross_att_Av(x_a, x_v, mask)
        feats_v.append(x_va)
        feats_a.append(x_av)
        masks.append(mask)
        for block_va, block_av in zip(self.cross_att_Va, self.cross_att_Av):
            prev_v, prev_a = feats_v[-1], feats_a[-1]
            x_v, mask = block_va(prev_v, prev_a, mask)
            x_a, _ = block_av(prev_a, prev_v, masks[-1])
            feats_v.append(x_v)
            feats_a.append(x_a)
            masks.append(mask)
        return feats_v, feats_a, masks


class DependencyBlock(nn.Module):
    """Temporal dependency module (TDM), shared across levels.

    Each level's ``[B, D, T]`` features are expanded to ``H`` channels per class
    (``[B, C, H, T]``); a temporal branch attends along time within each class
    and a co-occurrence branch attends across classes at each time step; their
    sum is squeezed back to ``[B, D, T]``. Masks pass through unchanged.
    """

    def __init__(self, in_channel: int, n_embd: int, kernel_size: int, num_classes: int,
                 n_head: int = 1, layer_scale: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_expand = MaskedConv1D(in_channel, n_embd * num_classes, kernel_size, bias=False)
        self.cooccur_branch = TransformerBlock(n_embd, n_head, n_hidden=n_embd, layer_scale=layer_scale)
        self.temporal_branch = TransformerBlock(n_embd, n_head, n_hidden=n_embd, layer_scale=layer_scale)
        self.feature_squeeze = MaskedConv1D(n_embd * num_classes, in_channel, kernel_size, bias=False)

    def _level(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, _, length = x.shape
        expanded, mask = self.feature_expand(x, mask)
        expanded = expanded.relu().view(batch, self.num_classes, -1, length)
        fused = dependency_branches(self.temporal_branch, self.cooccur_branch, expanded, mask)
        out, _ = self.feature_squeeze(fused, mask)
        return out

    def forward(self, feats: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
        return [self._level(x, m) for x, m in zip(feats, masks)]


class UnAVDetector(PyramidDetector):
    """UnAV-100 baseline ("LocPointTransformer", convTransformer backbone, TDM, class-aware heads).

    ``forward(feats_v [B, Cv, L], feats_a [B, Ca, L], mask [B, L] bool)`` with
    ``L = padded_length(T)`` -> :class:`DetectorOutput` on ``len(backbone levels)`` levels.
    Build from a checkpoint with :meth:`from_state_dict`.
    """

    kind: ClassVar[str] = "unav"
    # UnAV's max_seq_len only sizes the positional table: the weights cannot show it
    config_hints: ClassVar[tuple[str, ...]] = ("n_head", "max_seq_len", "use_abs_pe")
    state_dict_markers: ClassVar[tuple[str, ...]] = ("dependency_block.", "backbone.ori_cross_att_Va.")
    cross_prefix: ClassVar[str] = "backbone.cross_att_Va"

    def __init__(self, input_dim_v: int = 2048, input_dim_a: int = 128, embd_dim: int = 512,
                 n_head: int = 4, num_classes: int = 100, max_seq_len: int = 224,
                 backbone_arch: Sequence[int] = (2, 3, 5), scale_factor: int = 2,
                 embd_kernel_size: int = 3, embd_with_ln: bool = True, head_dim: int = 512,
                 head_num_layers: int = 3, head_kernel_size: int = 3, head_with_ln: bool = True,
                 class_aware: bool = True, use_dependency: bool = True, dependency_dim: int = 128,
                 dependency_kernel_size: int = 3, use_abs_pe: bool = True,
                 layer_scale: bool = True, cls_prior_prob: float = 0.01,
                 regression_range: Sequence[Sequence[float]] = DEFAULT_REGRESSION_RANGE) -> None:
        super().__init__(input_dim_v, input_dim_a, num_classes, max_seq_len, backbone_arch,
                         regression_range, scale_factor)

        self.backbone = CrossModalPyramid(
            input_dim_v, input_dim_a, embd_dim, n_head, embd_kernel_size, max_seq_len,
            backbone_arch, scale_factor, embd_with_ln, use_abs_pe, layer_scale)
        self.dependency_block = (
            DependencyBlock(2 * embd_dim, dependency_dim, dependency_kernel_size, num_classes,
                            layer_scale=layer_scale) if use_dependency else None)
        self.build_heads(2 * embd_dim, head_dim, head_num_layers, head_kernel_size, head_with_ln,
                         class_aware)
        self.init_biases(cls_prior_prob)

    @classmethod
    def training_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().training_kwargs(options), "dependency_dim": options["dependency_dim"]}

    def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
        length = self.check_inputs(feats_v, feats_a, mask)
        feats_vis, feats_aud, masks = self.backbone(feats_v, feats_a, mask[:, None, :])
        feats = [torch.cat((v, a), dim=1) for v, a in zip(feats_vis, feats_aud)]
        if self.dependency_block is not None:
            feats = self.dependency_block(feats, masks)
        return self.run_heads(feats, masks, length)

    @classmethod
    def kwargs_from_state_dict(cls, state_dict: Mapping[str, Tensor],
                               hints: Mapping[str, Any]) -> dict[str, Any]:
        """UnAV's own sizes: the dependency block's. What shapes cannot tell (number of
        heads, ``max_seq_len`` and the absolute positional table, which is not saved)
        comes from the hints, else the published UnAV-100 config."""
        sd = state_dict
        kwargs: dict[str, Any] = {"backbone_arch": pyramid_arch(sd, cls.cross_prefix),
                                  "use_dependency": "dependency_block.feature_expand.conv.weight" in sd}
        if kwargs["use_dependency"]:
            kwargs["dependency_dim"] = sd["dependency_block.cooccur_branch.ln11.weight"].shape[1]
            kwargs["dependency_kernel_size"] = sd["dependency_block.feature_expand.conv.weight"].shape[-1]
        return kwargs


def pyramid_arch(state_dict: Mapping[str, Tensor], cross_prefix: str) -> tuple[int, int, int]:
    """``backbone_arch`` of a UnAV-style backbone: (embedding convs, unimodal blocks + 1,
    strided cross-modal blocks); its arch[1] counts the full-resolution cross block."""
    return (count_indexed(state_dict, "backbone.embd_V"),
            count_indexed(state_dict, "backbone.self_att_V") + 1,
            count_indexed(state_dict, cross_prefix))
