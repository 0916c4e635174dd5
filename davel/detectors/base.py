"""The base class of every detector kind: its inputs, its temporal pyramid, how a
checkpoint of the kind is recognised and built, the options it takes, and the
properties the rest of davel asks a detector for instead of switching on its name.

A kind is one module with a :class:`PyramidDetector` subclass and one line in
:data:`davel.detectors.registry.DETECTORS`; everything kind-specific that the rest
of davel needs (checkpoint recognition, the sizes only its tensors reveal, training
options with their choices) is declared on the class.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from davel.detectors.heads import ClsHead, RegHead, to_detector_output
from davel.detectors.output import DetectorOutput
from davel.detectors.state_dict import assign_checkpoint, checkpoint_regression_range, stem_head_kwargs
from davel.errors import WeightsError
from weights.store import strip_module_prefix

# Regression ranges of the 6-level pyramid (grid units); only used for the
# ``points`` rows (training targets), but they are part of the output format.
DEFAULT_REGRESSION_RANGE: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000))

# Longest input the official UnAV code runs in one pass (pad to a multiple of the
# total stride, interpolated positional embedding); longer inputs are windowed.
SINGLE_PASS_MAX = 2048


@dataclass(frozen=True)
class ModelOption:
    """A constructor argument of one detector kind that training may set.

    Declared on the kind's class (:attr:`PyramidDetector.options`); ``davel train``
    builds its command-line flag, help line and checks from it, and the value is
    recorded in the checkpoint's ``davel.model_config`` so the model is rebuilt
    the same way. ``choices`` limits a text option, ``minimum`` a number;
    ``flag`` is the command-line spelling (default ``--name-with-dashes``; a
    boolean may give ``"--on/--off"``).
    """

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    flag: str | None = None

    @property
    def flags(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def value_type(self) -> type:
        return type(self.default)

    @property
    def cli_name(self) -> str:
        """The flag a user types to set the option (the first of an on/off pair)."""
        return self.flags.split("/")[0]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be used (``"must be one of a, b"``), or None."""
        if self.value_type is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        if self.value_type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.value_type is int and not isinstance(value, int)):
                return f"must be {'an integer' if self.value_type is int else 'a number'}"
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum:g}"
        return None


class _ContractChecked(abc.ABCMeta):
    """Checks a detector's contract once its constructor has run (as torchvision's
    RAFT checks its blocks): the rest of davel relies on these attributes."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        model = super().__call__(*args, **kwargs)
        for name in ("backbone", "cls_head", "reg_head"):
            if not isinstance(getattr(model, name, None), nn.Module):
                raise TypeError(f"{cls.__name__} must set self.{name} (call build_heads for the heads)")
        if not callable(getattr(model.backbone, "encode", None)):
            raise TypeError(f"{cls.__name__}.backbone must have encode(x_v, x_a, mask) "
                            f"(subclass davel.detectors.stem.TwoStreamStem)")
        return model


class PyramidDetector(nn.Module, metaclass=_ContractChecked):
    """What every detector kind shares: its inputs, its temporal pyramid, and the
    properties the rest of davel asks a detector for instead of switching on its name.

    A subclass builds its layers in ``__init__`` (a ``backbone`` with ``encode``,
    then :meth:`build_heads`; checked once the constructor returns), implements
    :meth:`forward` and :meth:`kwargs_from_state_dict`, and sets:

    * ``kind``: the registry name (``"unav"``, ``"ccnet"``, ...);
    * ``state_dict_markers``: key prefixes (without ``module.``) only this kind has;
    * ``cross_prefix``: the key prefix of its strided cross-modal blocks
      (``backbone.<name>.<i>.``), from which the pyramid depth and stride are read;
    * ``options``: its own :class:`ModelOption` s (training flags, recorded in
      checkpoints);
    * ``config_hints``: other constructor arguments the tensors of a checkpoint
      cannot reveal. davel's own checkpoints record hints and options in
      ``davel.model_config``; :meth:`from_state_dict` takes them as keyword arguments.

    The constructor records the feature sizes, classes, ``max_seq_len``, levels
    (strided layers + 1, checked against the regression ranges) and the total
    stride ``max_div_factor``, which must divide ``max_seq_len``.
    """

    kind: ClassVar[str] = ""
    config_hints: ClassVar[tuple[str, ...]] = ("n_head",)
    state_dict_markers: ClassVar[tuple[str, ...]] = ()
    cross_prefix: ClassVar[str] = ""
    options: ClassVar[tuple[ModelOption, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a concrete kind (intermediate bases set none)
            missing = [n for n in ("kind", "state_dict_markers", "cross_prefix") if not getattr(cls, n)]
            if missing:
                raise TypeError(f"{cls.__name__} must set {', '.join(missing)}")
            names = [o.name for o in cls.options]
            if len(set(names)) != len(names):
                raise TypeError(f"{cls.__name__} declares an option twice")
        # options are hints too: a checkpoint's model_config rebuilds the model with them
        cls.config_hints = tuple(dict.fromkeys((*cls.config_hints, *(o.name for o in cls.options))))

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

    @abc.abstractmethod
    def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
        """``feats_v [B, Cv, L]``, ``feats_a [B, Ca, L]``, ``mask [B, L]`` bool with
        ``L = padded_length(T)`` -> the dense predictions on every pyramid level."""

    @property
    def input_dims(self) -> tuple[int, int]:
        """(visual, audio) feature sizes the model takes."""
        return self.input_dim_v, self.input_dim_a

    def padded_length(self, num_steps: int) -> int:
        """Length the model runs ``num_steps`` feature steps at (the official eval padding):
        ``max_seq_len``, or the next multiple of the total stride beyond it."""
        return padded_length(num_steps, self.max_seq_len, self.max_div_factor)

    def max_single_pass(self) -> int:
        """Longest input run in one pass; longer inputs are windowed (davel.windows)."""
        return max(SINGLE_PASS_MAX, self.max_seq_len)

    def check_inputs(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> int:
        """The common length of a forward's inputs; ValueError unless they share one
        the pyramid can halve ``num_levels - 1`` times."""
        length = feats_v.shape[-1]
        if length % self.max_div_factor or feats_a.shape[-1] != length or mask.shape[-1] != length:
            raise ValueError(f"inputs must share a length divisible by {self.max_div_factor}, got "
                             f"{feats_v.shape[-1]}/{feats_a.shape[-1]}/{mask.shape[-1]}")
        return length

    # ---- checkpoints ---------------------------------------------------

    @classmethod
    def label(cls) -> str:
        """The kind's name in messages (``UnAV``, ``CCNet``, ``LoCo``)."""
        return cls.__name__.removesuffix("Detector")

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, Tensor]) -> bool:
        """Whether a checkpoint's state dict (``module.`` prefix optional) is of this kind."""
        return any(k.removeprefix("module.").startswith(cls.state_dict_markers) for k in state_dict)

    @classmethod
    @abc.abstractmethod
    def kwargs_from_state_dict(cls, state_dict: Mapping[str, Tensor],
                               hints: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor arguments only this kind knows how to read from a checkpoint's
        tensors (keys without ``module.``), given the ``hints``; it may check hints against
        the keys (:class:`WeightsError`). A missing key may raise ``KeyError``."""

    @classmethod
    def default_regression_range(cls, levels: int) -> Sequence[Sequence[float]] | None:
        """The regression ranges a checkpoint with ``levels`` levels was trained with when
        nothing says otherwise (None: not known)."""
        return DEFAULT_REGRESSION_RANGE if levels == len(DEFAULT_REGRESSION_RANGE) else None

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], **hints: Any) -> PyramidDetector:
        """Build on the meta device and load strictly (``module.`` prefix optional), eval mode.

        The model's parameters ARE the given tensors (no copy): clone the state dict
        first if it will be modified elsewhere. What every kind shares (embedding,
        unimodal blocks, heads, pyramid depth and stride) is read from tensor shapes
        here, the rest by :meth:`kwargs_from_state_dict`; ``hints`` (names in
        :attr:`config_hints`, plus ``regression_range``) give what shapes cannot
        tell, and default to the published config (the constructor's defaults).
        """
        unknown = sorted(set(hints) - {*cls.config_hints, "regression_range"})
        if unknown:
            raise TypeError(f"{cls.__name__}.from_state_dict() got unexpected hints: {', '.join(unknown)}")
        label = cls.label()
        sd = strip_module_prefix(state_dict)
        article = "an" if label[:1].lower() in "aeiou" else "a"
        try:
            shared = stem_head_kwargs(sd, cls.cross_prefix)
            own = cls.kwargs_from_state_dict(sd, hints)
        except KeyError as err:
            raise WeightsError(f"not {article} {label} detector checkpoint (missing {err.args[0]})") from err
        fpn_levels = shared.pop("fpn_levels")
        kwargs = {**shared, **{k: v for k, v in hints.items() if k != "regression_range"}, **own}
        levels = kwargs["backbone_arch"][2] + 1
        kwargs["regression_range"] = checkpoint_regression_range(
            label, levels, fpn_levels, hints.get("regression_range") or cls.default_regression_range(levels))
        try:
            # Built on the meta device and given the checkpoint's own tensors:
            # no random init of ~100M parameters, no second copy in memory.
            with torch.device("meta"):
                model = cls(**kwargs)
        except ValueError as err:
            raise WeightsError(f"{label} checkpoint with this config cannot be built: {err}") from err
        return assign_checkpoint(model, sd, label, sd["backbone.embd_V.0.conv.weight"].device)

    # ---- training ------------------------------------------------------

    @classmethod
    def option(cls, name: str) -> ModelOption:
        return next(o for o in cls.options if o.name == name)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option of the kind, ``options`` over the defaults; ValueError (one line)
        naming an unknown option or a value it cannot take."""
        known = {o.name: o for o in cls.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.label()} options: {', '.join(unknown)}")
        for name, value in options.items():
            problem = known[name].problem(value)
            if problem:
                raise ValueError(f"{cls.label()} option {name} {problem}")
        return {**{o.name: o.default for o in cls.options}, **options}

    @classmethod
    def training_kwargs(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the generic training options (``embd_dim``,
        ``head_dim``, ``n_head``, ``max_seq_len``, ``droppath``, ``cls_prior_prob``) plus
        every one of the kind's own :attr:`options` (``model_options`` over their
        defaults), so that a checkpoint's ``davel.model_config`` says how it was built."""
        return {"embd_dim": options["embd_dim"], "head_dim": options["head_dim"],
                "n_head": options["n_head"], "max_seq_len": options["max_seq_len"],
                "layer_scale": options["droppath"] > 0, "cls_prior_prob": options["cls_prior_prob"],
                **cls.check_options(options.get("model_options", {}))}

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
