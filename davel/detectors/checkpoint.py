"""Build the detector a checkpoint holds (any registered kind), weights loaded strictly.

Accepts what the official training scripts save (a dict with ``epoch``,
``state_dict``, ``state_dict_ema``, ``optimizer``, ``scheduler``; evaluation
uses ``state_dict_ema``, keys prefixed ``module.``), davel's own checkpoints
(the same plus a ``davel`` entry) or a bare state dict. The kind and every
size the tensors reveal are read from the weights; files are read with
``torch.load(weights_only=True)`` (:func:`weights.store.load_state`);
:func:`check_checkpoint_file` reads one memory-mapped, to check it without
holding its weights.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from davel.detectors.base import PyramidDetector
from davel.detectors.meta import CheckpointMeta
from davel.detectors.registry import detector_class_for
from davel.errors import WeightsError
from weights import store

_INPUT_KEYS = ("backbone.embd_V.0.conv.weight", "backbone.embd_A.0.conv.weight")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file says about itself besides its weights."""

    kind: str
    input_dim_v: int
    input_dim_a: int
    num_classes: int
    max_seq_len: int
    meta: CheckpointMeta  # the ``davel`` entry (every field None for official checkpoints)


def read_checkpoint(path: str | Path) -> tuple[Mapping[str, Any], str]:
    """``(contents, sha256)`` of a checkpoint file, loaded safely; WeightsError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    obj = store.load_state(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} is not a detector checkpoint")
    return obj, store.sha256_of(path)


def state_dict_of(obj: Mapping[str, Any], where: str) -> dict[str, Tensor]:
    """The evaluated weights of a checkpoint (EMA first), without ``module.``."""
    for key in ("state_dict_ema", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if (not obj or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())):
        raise WeightsError(f"{where} is not a detector checkpoint (no state dict of tensors)")
    return store.strip_module_prefix(obj)


def build_detector(obj: Mapping[str, Any], where: str = "the given state dict",
                   expect_dims: tuple[int, int] | None = None
                   ) -> tuple[PyramidDetector, CheckpointInfo]:
    """The detector of checkpoint contents ``obj``, in eval mode.

    ``expect_dims`` = (visual, audio) feature sizes the caller will feed (I3D
    rgb+flow 2048, VGGish 128); ``None`` skips the check. Shape-free
    hyper-parameters come from ``davel.model_config`` for the names the kind
    lists in ``config_hints`` (official checkpoints have none: the published
    config's values apply). Raises :class:`WeightsError` naming ``where``.
    """
    entry = obj.get("davel")
    meta = CheckpointMeta.from_dict(entry if isinstance(entry, Mapping) else {}, where)
    sd = state_dict_of(obj, where)
    cls = detector_class_for(sd, where, meta.kind)
    label = cls.__name__.removesuffix("Detector")
    if not all(k in sd for k in _INPUT_KEYS):
        raise WeightsError(f"{where}: {label} checkpoint lacks its input embedding weights")
    dim_v, dim_a = (int(sd[k].shape[1]) for k in _INPUT_KEYS)
    if expect_dims is not None and (dim_v, dim_a) != tuple(expect_dims):
        raise WeightsError(
            f"{label} weights {where} take {dim_v}-d visual / {dim_a}-d audio features, "
            f"but the features here are {expect_dims[0]}-d / {expect_dims[1]}-d "
            f"(weights trained on other features, e.g. ONE-PEACE, need those features)")
    config = meta.model_config or {}
    hints: dict[str, Any] = {k: config[k] for k in cls.config_hints if k in config}
    try:
        model = cls.from_state_dict(sd, **hints)
    except WeightsError as exc:
        raise WeightsError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: the checkpoint's davel.model_config is unusable "
                           f"({store.first_line(exc)})") from exc
    info = CheckpointInfo(kind=cls.kind, input_dim_v=dim_v, input_dim_a=dim_a,
                          num_classes=int(model.num_classes), max_seq_len=int(model.max_seq_len),
                          meta=meta)
    return model.eval(), info


def load_checkpoint(path: str | Path, expect_dims: tuple[int, int] | None = None
                    ) -> tuple[PyramidDetector, CheckpointInfo, str]:
    """``(model, info, sha256)`` of a checkpoint file."""
    obj, sha = read_checkpoint(path)
    model, info = build_detector(obj, str(path), expect_dims)
    return model, info, sha


def check_checkpoint_file(path: str | Path, expect_dims: tuple[int, int] | None = None) -> CheckpointInfo:
    """What :func:`load_checkpoint` says of a file, checked as it checks it (the same
    one-line WeightsError), without holding the weights: the file is read memory-mapped
    (tensors stay in the file unless read) and the model, built on them to validate the
    layout, is dropped. No sha256 (that would read the whole file)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - refused, broken or an old (non-zip) file: load_state's way and words
        obj = store.load_state(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} is not a detector checkpoint")
    model, info = build_detector(obj, str(path), expect_dims)
    del model, obj  # the mapped tensors go with them
    return info
