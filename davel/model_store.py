"""Detector checkpoints stored in the cache under a name, with their class names."""
from __future__ import annotations

from pathlib import Path

import torch

from davel.errors import WeightsError
from davel.labels import read_labels
from davel.pipeline import load, models_dir
from weights import store


def import_checkpoint(checkpoint: Path, name: str, labels: Path | None = None, origin: str = "") -> Path:
    """Check that ``checkpoint`` loads as a detector, then store it as ``<cache>/models/<name>.pth``
    in davel's format: the official dict plus a ``davel`` entry (labels, time base, origin)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise WeightsError(f"model name '{name}' must be letters, digits, '-' or '_'")
    if name in ("ccnet", "unav"):
        raise WeightsError(f"'{name}' is a built-in model name; choose another")
    det = load(Path(checkpoint), torch.device("cpu"), expect_dims=None)
    obj = store.load_state(Path(checkpoint))
    meta = dict(obj.get("davel", {}))
    if labels is not None:
        meta["labels"] = read_labels(labels)
    meta.setdefault("timebase", det.timebase.as_dict())
    meta["origin"] = origin or meta.get("origin") or str(Path(checkpoint).resolve())
    meta["source_sha256"] = det.sha256
    out = {"state_dict_ema": obj.get("state_dict_ema", obj.get("state_dict", obj)), "davel": meta}
    d = models_dir()
    dst = d / f"{name}.pth"
    store.atomic_write(dst, lambda f: torch.save(out, f))
    store.record_in_lock(d, dst.name, origin="import")
    return dst
