"""The model, optimiser, schedule and weight EMA of the repos' recipe.

* model: fresh weights (PyTorch's default init, biases zero, classifier bias at
  prior 0.01, classes without any annotation at prior 1e-6), stochastic depth
  0.1 (its AffineDropPath scales start at 1e-4), dropout 0;
* optimiser: AdamW, lr 1e-4, weight decay 1e-4 on the weights of linear and
  convolution layers only; gradients clipped to L2 norm 1 (in the loop);
* schedule, per iteration: linear warm-up from 0 over ``warmup_epochs`` then
  cosine to 1e-8 over ``epochs`` more (the official ``epochs`` excludes the
  warm-up: 40 + 5 = 45 passes);
* EMA of the weights (decay 0.999, every step, buffers too); the EMA weights
  are what checkpoints' ``state_dict_ema`` holds and what is evaluated.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from davel.detectors.base import PyramidDetector
from davel.detectors.layers import AffineDropPath
from davel.detectors.registry import get_detector_class
from davel.train.config import TrainConfig


def model_config(cfg: TrainConfig, dim_v: int, dim_a: int, num_classes: int) -> dict[str, Any]:
    """Constructor arguments of the detector ``cfg`` describes (kept in the checkpoint)."""
    cls = get_detector_class(cfg.model)
    return {"input_dim_v": dim_v, "input_dim_a": dim_a, "num_classes": num_classes,
            **cls.training_kwargs(cfg.as_dict())}


def build_model(cfg: TrainConfig, dim_v: int, dim_a: int, num_classes: int,
                empty_classes: Sequence[int] = ()) -> PyramidDetector:
    """A freshly initialised detector in train mode, drop-path set (see the module doc)."""
    model = get_detector_class(cfg.model)(**model_config(cfg, dim_v, dim_a, num_classes))
    model.init_biases(cfg.cls_prior_prob, empty_classes)
    set_drop_path(model, cfg.droppath)
    return model.train()


def set_drop_path(model: nn.Module, prob: float) -> None:
    """Stochastic-depth probability of every AffineDropPath (acts in train mode only)."""
    for m in model.modules():
        if isinstance(m, AffineDropPath):
            m.drop_prob = prob


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; weight decay only on the weights of linear / convolution layers
    (not on biases, LayerNorm parameters or the learnable scales)."""
    decay, no_decay = {}, {}
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{name}" if mod_name else name
            target = decay if name == "weight" and isinstance(module, (nn.Linear, nn.Conv1d)) else no_decay
            target[full] = p
    groups = [{"params": [decay[k] for k in sorted(decay)], "weight_decay": weight_decay},
              {"params": [no_decay[k] for k in sorted(no_decay)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


class WarmupCosine:
    """LR factor per iteration: ``k / (w - 1)`` for ``k < w`` (0 at the first step),
    then cosine from 1 to ``eta_min / base_lr`` at ``total`` (the repos' schedule)."""

    def __init__(self, warmup_steps: int, total_steps: int, base_lr: float, eta_min: float = 1e-8):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.floor = eta_min / base_lr

    def __call__(self, step: int) -> float:
        w = self.warmup_steps
        if step < w:
            return step / max(w - 1, 1)
        if self.total_steps <= w:
            return 1.0
        progress = min((step - w) / (self.total_steps - w), 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   eta_min: float = 1e-8) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration linear warm-up + cosine (step it after every optimiser step)."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps,
                                                                     base, eta_min))


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """EMA of weights and buffers, starting from the current weights."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.update_parameters(model)  # first call copies
    ema.module.eval()
    return ema
