"""Parameter and multiply-accumulate counts in the thop convention (LoCo Table VII).

The convention (LOCO.md §3.6) is what ``thop.profile`` reports for these
detectors: only ``nn.Conv1d`` and ``nn.Linear`` layers count, with

* parameters: their weights and biases (the custom ChannelLayerNorm,
  AffineDropPath, ``Scale`` and bare parameters such as LCC's tau and sigma
  are not counted);
* MACs: per call, ``output elements x (in_channels / groups) x kernel`` for a
  convolution and ``output elements x in_features`` for a linear layer, bias
  adds not counted. Attention matmuls, pooling, interpolation and
  normalisation are not counted. A layer called several times (a head or
  decoder shared across pyramid levels) counts every call.

Counting runs the model on whatever device its tensors are on; the meta
device works (only shapes are needed), so 100M-parameter models can be
counted without allocating their weights.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

_COUNTED = (nn.Conv1d, nn.Linear)


def _macs(module: nn.Module, out: Tensor) -> int:
    if isinstance(module, nn.Conv1d):
        return out.numel() * (module.in_channels // module.groups) * module.kernel_size[0]
    return out.numel() * module.in_features


def count_params(model: nn.Module) -> int:
    """Weights and biases of every Conv1d / Linear layer of ``model`` (each layer once)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, _COUNTED)
               for p in m.parameters(recurse=False))


def count_macs(model: nn.Module, run: Callable[[], object]) -> int:
    """MACs of the Conv1d / Linear calls made while ``run()`` executes (no autograd)."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, out: Tensor) -> None:
        nonlocal total
        total += _macs(module, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def count_params_macs(model: nn.Module, feats_v: Tensor, feats_a: Tensor,
                      mask: Tensor) -> tuple[int, int]:
    """``(params, macs)`` of one forward of a detector on ``feats_v [B, Cv, L]``,
    ``feats_a [B, Ca, L]``, ``mask [B, L]``.

    A model with ``forward_train`` (LoCo) is run through it, so training-only
    heads that the paper's table includes (the LCC projections) are counted;
    other models through ``forward``.
    """
    forward = getattr(model, "forward_train", None) or model
    return count_params(model), count_macs(model, lambda: forward(feats_v, feats_a, mask))
