"""Everything that decides the trained weights, in one frozen record (defaults: the papers' recipe)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from davel.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run. A resumed run must have the same ones.

    ``model`` is a registered detector kind; ``model_options`` holds the
    options only that kind has (e.g. LoCo's ``attention``), passed to its
    constructor as they are.
    """

    model: str = "ccnet"
    epochs: int = 40            # cosine epochs after the warm-up (official meaning)
    warmup_epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    max_seq_len: int = 224
    embd_dim: int = 512
    head_dim: int = 512
    n_head: int = 4
    dependency_dim: int = 128   # per-class hidden size of UnAV's TDM / CCNet's MTGC
    droppath: float = 0.1
    ema_decay: float = 0.999
    clip_grad_norm: float = 1.0
    cls_prior_prob: float = 0.01
    init_loss_norm: float = 250.0
    loss_weight: float = 1.0
    crop_ratio: tuple[float, float] | None = (0.9, 1.0)
    trunc_thresh: float = 0.5
    seed: int = 1234567891
    eta_min: float = 1e-8
    standardize_features: bool = False  # see davel.feature_norm
    model_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.warmup_epochs

    def check(self) -> None:
        """Raise InputError for values no run can use."""
        from davel.detectors.registry import detector_names, get_detector_class

        if self.model not in detector_names():
            raise InputError(f"unknown model '{self.model}' (choose {' or '.join(detector_names())})")
        try:
            get_detector_class(self.model).check_options(self.model_options)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if self.max_seq_len <= 0 or self.max_seq_len % 32:
            raise InputError(f"--max-seq-len must be a positive multiple of 32 "
                             f"(6 pyramid levels), got {self.max_seq_len}")
        if self.embd_dim <= 0 or self.embd_dim % self.n_head or self.head_dim <= 0:
            raise InputError(f"--embd-dim must be a positive multiple of {self.n_head} "
                             f"(attention heads), got {self.embd_dim}")
        if self.epochs < 0 or self.warmup_epochs < 0 or self.total_epochs == 0:
            raise InputError("need at least one epoch (--epochs + --warmup-epochs > 0)")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise InputError("--batch-size must be >= 1, --lr > 0, --weight-decay >= 0")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.droppath < 1.0:
            raise InputError("--ema-decay and drop-path must lie in [0, 1)")
        if self.loss_weight <= 0:
            raise InputError("the regression loss weight must be positive")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop_ratio"] = list(self.crop_ratio) if self.crop_ratio is not None else None
        d["model_options"] = dict(self.model_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("crop_ratio") is not None:
            kw["crop_ratio"] = tuple(kw["crop_ratio"])
        kw["model_options"] = dict(kw.get("model_options") or {})
        return cls(**kw)
