"""Load a detector checkpoint (UnAV baseline or CCNet) into the matching model.

Accepts what the official training scripts save (a dict with ``epoch``,
``state_dict``, ``state_dict_ema``, ``optimizer``, ``scheduler``; evaluation
uses ``state_dict_ema``, keys prefixed ``module.``) or a bare state dict.
The model kind and every size the tensors reveal are read from the weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from davel.detectors.common import strip_module_prefix
from davel.errors import WeightsError

# Keys that only one of the two architectures has (prefix-free).
_CCNET_MARKERS = ("MTGC_block.", "backbone.ori_CMI_Visual.", "backbone.visual_TCG.")
_UNAV_MARKERS = ("dependency_block.", "backbone.ori_cross_att_Va.")
_LABELS = {"unav": "UnAV", "ccnet": "CCNet"}
_INPUT_KEYS = ("backbone.embd_V.0.conv.weight", "backbone.embd_A.0.conv.weight")


@contextlib.contextmanager
def skip_weight_init():
    """Build modules without random initialisation: every weight is about to be
    overwritten by the checkpoint, and initialising a 100M+ parameter detector on
    CPU costs seconds. (The same trick as transformers' ``no_init_weights``.)"""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def _read(path: Path) -> tuple[Any, str]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WeightsError(f"cannot read detector weights {path}: {err.strerror or err}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-checkpoints
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[0][:100]}" if lines else type(err).__name__
        raise WeightsError(f"{path} is not a torch checkpoint that loads safely ({reason})") from None
    return obj, digest


def _state_dict_of(obj: Any, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (not isinstance(obj, Mapping) or not obj
            or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())):
        raise WeightsError(f"{where} is not a detector checkpoint (no state dict of tensors)")
    return strip_module_prefix(obj)


def _kind(sd: Mapping[str, Tensor], where: str) -> str:
    if any(k.startswith(_CCNET_MARKERS) for k in sd):
        return "ccnet"
    if any(k.startswith(_UNAV_MARKERS) for k in sd):
        return "unav"
    raise WeightsError(f"{where} is not a UnAV or CCNet detector checkpoint")


def _shape_free_hparams(kind: str, model_config: Mapping[str, Any] | None) -> dict[str, int]:
    if not isinstance(model_config, Mapping):
        return {}
    names = ("n_head", "max_seq_len") if kind == "unav" else ("n_head",)
    try:
        return {k: int(model_config[k]) for k in names if k in model_config}
    except (TypeError, ValueError):
        raise WeightsError("the checkpoint's davel.model_config is unreadable") from None


def load_detector(path_or_dict: str | Path | Mapping[str, Any],
                  expect_dims: tuple[int, int] | None = (2048, 128),
                  model_config: Mapping[str, Any] | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the detector a checkpoint holds, in eval mode, with its weights loaded strictly.

    ``expect_dims`` = (visual, audio) feature sizes the caller will feed
    (I3D rgb+flow 2048, VGGish 128); ``None`` skips the check.
    ``model_config``: the constructor arguments davel's own checkpoints record
    (``davel.model_config``); of these only what the tensors cannot reveal is
    used (``n_head``, and UnAV's ``max_seq_len``). Official checkpoints have
    none: the published config's values apply.
    Returns ``(model, info)`` with info keys ``model, input_dim_v, input_dim_a,
    num_classes, max_seq_len, sha256`` (sha256 is None for an in-memory dict).
    Raises :class:`WeightsError` for unreadable files, non-detector contents
    and feature-size mismatches.
    """
    if isinstance(path_or_dict, Mapping):
        where, obj, digest = "the given state dict", path_or_dict, None
    else:
        where = str(path_or_dict)
        obj, digest = _read(Path(path_or_dict))
    sd = _state_dict_of(obj, where)
    kind = _kind(sd, where)
    if not all(k in sd for k in _INPUT_KEYS):
        raise WeightsError(f"{where}: {_LABELS[kind]} checkpoint lacks its input embedding weights")
    dim_v, dim_a = (int(sd[k].shape[1]) for k in _INPUT_KEYS)
    if expect_dims is not None and (dim_v, dim_a) != tuple(expect_dims):
        named = f" {where}" if digest is not None else ""
        raise WeightsError(
            f"{_LABELS[kind]} weights{named} take {dim_v}-d visual / {dim_a}-d audio features, "
            f"but the features here are {expect_dims[0]}-d / {expect_dims[1]}-d "
            f"(weights trained on other features, e.g. ONE-PEACE, need those features)")

    hints = _shape_free_hparams(kind, model_config)
    if kind == "unav":
        from davel.detectors.unav import UnAVDetector
        with skip_weight_init():
            model = UnAVDetector.from_state_dict(sd, **hints)
    else:
        try:
            from davel.detectors.ccnet import CCNetDetector
        except ModuleNotFoundError as err:
            if err.name != "davel.detectors.ccnet":
                raise
            raise WeightsError("CCNet checkpoints are not supported by this davel build") from None
        with skip_weight_init():
            model = CCNetDetector.from_state_dict(sd, **hints)

    info = {
        "model": kind,
        "input_dim_v": dim_v,
        "input_dim_a": dim_a,
        "num_classes": int(sd["cls_head.cls_head.conv.weight"].shape[0]),
        "max_seq_len": getattr(model, "max_seq_len", None),
        "sha256": digest,
    }
    return model.eval(), info
