"""Reading a detector checkpoint's state dict: sizes from tensor shapes, strict loading.

Official checkpoints carry no config, so every size a model needs is read from
the shapes of its tensors; these helpers are shared by every detector kind.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from davel.errors import WeightsError


def count_indexed(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """Number of ModuleList entries ``<prefix>.<i>.`` present in the keys."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in state_dict if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def head_hparams(state_dict: Mapping[str, Tensor]) -> dict:
    """Head hyper-parameters read from tensor shapes (keys without ``module.``).

    Returns ``input_dim, feat_dim, num_classes, num_layers, kernel_size,
    with_ln, class_aware, fpn_levels``.
    """
    first = state_dict["cls_head.head.0.conv.weight"]
    cls_w = state_dict["cls_head.cls_head.conv.weight"]
    num_classes = cls_w.shape[0]
    n_offsets = state_dict["reg_head.offset_head.conv.weight"].shape[0]
    return {
        "input_dim": first.shape[1],
        "feat_dim": first.shape[0],
        "num_classes": num_classes,
        "num_layers": count_indexed(state_dict, "cls_head.head") + 1,
        "kernel_size": cls_w.shape[-1],
        "with_ln": "cls_head.norm.0.weight" in state_dict,
        "class_aware": n_offsets == 2 * num_classes,
        "fpn_levels": count_indexed(state_dict, "reg_head.scale"),
    }


def stem_head_kwargs(state_dict: Mapping[str, Tensor], cross_prefix: str) -> dict:
    """The constructor arguments every kind reads the same way (keys without ``module.``):
    feature sizes, embedding, the heads, ``layer_scale``, ``backbone_arch`` =
    (embedding convs, unimodal blocks, strided cross-modal blocks ``<cross_prefix>.<i>``)
    and the pyramid's ``scale_factor`` (a stride-s block's query conv has kernel s + 1),
    plus ``fpn_levels`` (the regression head's scales, to check against the levels).
    KeyError when a key every kind has is missing."""
    heads = head_hparams(state_dict)
    embd_w = state_dict["backbone.embd_V.0.conv.weight"]
    n_cross = count_indexed(state_dict, cross_prefix)
    return {
        "input_dim_v": embd_w.shape[1],
        "input_dim_a": state_dict["backbone.embd_A.0.conv.weight"].shape[1],
        "embd_dim": embd_w.shape[0], "num_classes": heads["num_classes"],
        "embd_kernel_size": embd_w.shape[-1],
        "embd_with_ln": "backbone.embd_norm_V.0.weight" in state_dict,
        "head_dim": heads["feat_dim"], "head_num_layers": heads["num_layers"],
        "head_kernel_size": heads["kernel_size"], "head_with_ln": heads["with_ln"],
        "class_aware": heads["class_aware"],
        # every block of a model has the layer-scale parameters or none has
        "layer_scale": any(k.startswith("backbone.") and k.endswith(".drop_path_attn.scale")
                           for k in state_dict),
        "backbone_arch": (count_indexed(state_dict, "backbone.embd_V"),
                          count_indexed(state_dict, "backbone.self_att_V"), n_cross),
        "scale_factor": (state_dict[f"{cross_prefix}.0.attn.query_conv.conv.weight"].shape[-1] - 1
                         if n_cross else 2),
        "fpn_levels": heads["fpn_levels"],
    }


def checkpoint_regression_range(label: str, levels: int, head_levels: int,
                                regression_range: Sequence[Sequence[float]] | None
                                ) -> Sequence[Sequence[float]]:
    """The regression ranges for a checkpoint with ``levels`` pyramid levels (``None``: not
    known for that many levels); WeightsError when unknown or when heads and levels disagree."""
    if regression_range is None:
        raise WeightsError(f"{label} checkpoint has {levels} pyramid levels; "
                           f"regression ranges are not known for that many")
    if head_levels != levels:
        raise WeightsError(f"{label} checkpoint: {head_levels} head scales for {levels} levels")
    return regression_range


def load_strictly(model: nn.Module, state_dict: Mapping[str, Tensor], label: str,
                  assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with torch's multi-line complaint cut to one line."""
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).strip().splitlines()[1:3])
        if len(detail) > 300:
            detail = detail[:297] + "..."
        raise WeightsError(f"{label} checkpoint does not match the model layout: {detail}") from err


def assign_checkpoint(model: nn.Module, state_dict: Mapping[str, Tensor], label: str,
                      device: torch.device) -> nn.Module:
    """Load a checkpoint into a model built on the meta device (its tensors are taken over,
    not copied), then compute on ``device`` the buffers checkpoints do not store: every
    block that has such buffers has ``reset_buffers(device)``. Returns the model in eval mode."""
    load_strictly(model, state_dict, label, assign=True)
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers(device)
    return model.eval()
