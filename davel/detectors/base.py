"""The base class of every detector kind: its inputs, its temporal pyramid, how a
checkpoint of the kind is recognised and built, and the properties the rest of davel
asks a detector for instead of switching on its name."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from davel.detectors.heads import ClsHead, RegHead, to_detector_output
from davel.detectors.output import DetectorOutput

# Regression ranges of the 6-level pyramid (grid units); only used for the
# ``points`` rows (training targets), but they are part of the output format.
DEFAULT_REGRESSION_RANGE: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))



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


def padded_length(num_steps: int, max_seq_len: int, max_div_factor: int) -> int:
    """Eval padding: ``max_seq_len`` for short inputs, else the next multiple of ``max_div_factor``."""
    if num_steps <= max_seq_len:
        return max_seq_len
    return -(-num_steps // max_div_factor) * max_div_factor


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
