"""Which checkpoint a model name means: the published ones, and those stored by name.

``ccnet`` and ``unav`` are the published UnAV-100 checkpoints (in the weights
registry: downloaded and hash-checked by ``davel weights download``); ``davel
weights import CKPT --name NAME`` stores any other detector checkpoint under
``<cache>/models/NAME.pth`` with its class names and time base.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from davel.detectors.checkpoint import build_detector, read_checkpoint
from davel.errors import WeightsError
from davel.labels import read_labels
from extractors.timebase import I3D_VGGISH
from weights import store
from weights.atomic import atomic_write

# name -> registry file of the published checkpoints
BUILTIN_MODELS = {"ccnet": "ccnet_unav100.pth", "unav": "unav_unav100.pth"}


def models_dir() -> Path:
    return store.cache_dir() / "models"


def available_models() -> list[str]:
    """Names ``load_detector`` / ``--model`` accept: the published ones, then the imported ones."""
    stored = sorted(p.stem for p in models_dir().glob("*.pth")) if models_dir().is_dir() else []
    return [*BUILTIN_MODELS, *(n for n in stored if n not in BUILTIN_MODELS)]


def resolve_checkpoint(name_or_path: str | Path, weights_dir: str | Path | None = None) -> Path:
    """The checkpoint file a model name (or a path to a file) means, checked against its hash."""
    text = str(name_or_path)
    if text in BUILTIN_MODELS:
        return store.locate(BUILTIN_MODELS[text], weights_dir)
    stored = models_dir() / f"{text}.pth"
    if "/" not in text and stored.is_file():
        store.check_file(stored)
        return stored
    path = Path(text).expanduser()
    if path.suffix or "/" in text or path.exists():
        if not path.is_file():
            raise WeightsError(f"checkpoint {path} does not exist")
        return path
    raise WeightsError(f"unknown model '{text}' (known: {', '.join(available_models())}); "
                       f"store a checkpoint with `davel weights import CKPT --name {text}`")


def import_checkpoint(checkpoint: Path, name: str, labels: Path | None = None, origin: str = "") -> Path:
    """Check that ``checkpoint`` loads as a detector, then store it as ``<cache>/models/<name>.pth``
    in davel's format: the official dict plus a ``davel`` entry (labels, time base, origin)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise WeightsError(f"model name '{name}' must be letters, digits, '-' or '_'")
    if name in BUILTIN_MODELS:
        raise WeightsError(f"'{name}' is a built-in model name; choose another")
    obj, sha = read_checkpoint(checkpoint)
    _, info = build_detector(obj, str(checkpoint))
    meta = info.meta
    meta = replace(meta, labels=tuple(read_labels(labels)) if labels is not None else meta.labels,
                   kind=meta.kind or info.kind, timebase=meta.timebase or I3D_VGGISH,
                   origin=origin or meta.origin or str(Path(checkpoint).resolve()), source_sha256=sha)
    out = {"state_dict_ema": obj.get("state_dict_ema", obj.get("state_dict", obj)), "davel": meta.to_dict()}
    d = models_dir()
    dst = d / f"{name}.pth"
    atomic_write(dst, lambda f: torch.save(out, f))
    store.record_in_lock(d, dst.name, origin="import")
    return dst
