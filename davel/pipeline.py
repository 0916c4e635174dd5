"""The whole job: video (or features) -> detector -> events, as plain functions.

The CLI only parses arguments and calls these; nothing here prints except
through the callbacks it is given.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from davel.detectors.checkpoint import load_detector
from davel.detectors.common import prepare_inputs
from davel.errors import DavelError, InputError, WeightsError
from davel.feature_norm import FeatureNorm
from davel.labels import label_name
from davel.postprocess import PostprocessConfig, candidates, nms_to_seconds
from davel.timebase import I3D_VGGISH, TimeBase
from davel.windows import shift_candidates, window_starts
from extractors.feature_files import Features
from weights import store

if TYPE_CHECKING:  # extractors.extract imports torchvision's models: only when extracting
    from extractors.extract import ExtractionSettings

# Longest input the UnAV baseline runs in one pass (its official long-video
# path: pad to a multiple of 32, interpolated positional embedding); longer
# inputs are windowed like CCNet's.
UNAV_SINGLE_PASS_MAX = 2048
BUILTIN_MODELS = {"ccnet": "ccnet_unav100.pth", "unav": "unav_unav100.pth"}


@dataclass
class LoadedDetector:
    model: torch.nn.Module
    kind: str  # "ccnet" | "unav"
    name: str  # file name shown in results
    sha256: str
    labels: list[str] | None
    timebase: TimeBase
    max_seq_len: int
    device: torch.device
    feature_norm: FeatureNorm | None = None  # from `davel train --standardize-features`
    extraction: dict | None = None  # the extractor settings of the training features (davel runs)


def models_dir() -> Path:
    return store.cache_dir() / "models"


def resolve_checkpoint(model: str, checkpoint: str | None, weights_dir: str | None) -> Path:
    """Which checkpoint file ``--model``/``--checkpoint`` mean."""
    if checkpoint:
        p = Path(checkpoint).expanduser()
        if not p.is_file():
            raise WeightsError(f"checkpoint {p} does not exist")
        return p
    if model in BUILTIN_MODELS:
        return store.locate(BUILTIN_MODELS[model], weights_dir)
    p = models_dir() / f"{model}.pth"
    if p.is_file():
        store.check_file(p)
        return p
    known = sorted([*BUILTIN_MODELS, *(q.stem for q in models_dir().glob("*.pth"))])
    raise WeightsError(f"unknown model '{model}' (known: {', '.join(known)}); "
                       f"store a checkpoint with `davel weights import CKPT --name {model}`")


def load(checkpoint: Path, device: torch.device, labels: list[str] | None = None,
         expect_dims: tuple[int, int] = (2048, 128)) -> LoadedDetector:
    """Load a detector checkpoint (official layout or davel's own) with its metadata."""
    obj = store.load_state(checkpoint)
    if not isinstance(obj, dict):
        raise WeightsError(f"{checkpoint} is not a detector checkpoint")
    meta = obj.get("davel") if isinstance(obj.get("davel"), dict) else {}
    try:
        model, info = load_detector(obj, expect_dims=expect_dims,
                                    model_config=meta.get("model_config"))
    except WeightsError as exc:  # name the file rather than "the given dict"
        raise WeightsError(str(exc).replace("the given dict", str(checkpoint))) from None
    tb = TimeBase(**meta["timebase"]) if "timebase" in meta else I3D_VGGISH
    try:
        norm = FeatureNorm.from_meta(meta.get("feature_norm"))
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise WeightsError(f"{checkpoint}: unreadable feature statistics (davel.feature_norm)") from None
    if norm is not None and norm.dims != (info["input_dim_v"], info["input_dim_a"]):
        raise WeightsError(f"{checkpoint}: its feature statistics are {norm.dims[0]}-d / {norm.dims[1]}-d "
                           f"but the detector takes {info['input_dim_v']}-d / {info['input_dim_a']}-d")
    names = labels if labels is not None else meta.get("labels")
    return LoadedDetector(model=model.to(device), kind=info["model"], name=checkpoint.name,
                          sha256=store.sha256_of(checkpoint), labels=names, timebase=tb,
                          max_seq_len=int(info["max_seq_len"]), device=device, feature_norm=norm,
                          extraction=(meta.get("extractor") or {}).get("settings"))


def extraction_settings(det: LoadedDetector) -> ExtractionSettings:
    """How to extract features for ``det``: the settings its training features were
    made with (davel's own checkpoints), else the published procedure."""
    from extractors.extract import ExtractionSettings

    known = {f.name for f in fields(ExtractionSettings)}
    saved = det.extraction if isinstance(det.extraction, dict) else {}
    try:
        return ExtractionSettings(**{k: v for k, v in saved.items() if k in known})
    except TypeError:
        return ExtractionSettings()


def settings_mismatch(det: LoadedDetector, feature_meta: dict | None) -> str | None:
    """A one-line description of how features' extractor settings differ from the
    detector's training features, or None (same, or unknown on either side)."""
    if not isinstance(det.extraction, dict) or not isinstance(feature_meta, dict):
        return None
    theirs = feature_meta.get("settings")
    if not isinstance(theirs, dict):
        return None
    diff = [f"{k} {theirs.get(k)!r} (trained on {v!r})" for k, v in sorted(det.extraction.items())
            if k in theirs and theirs[k] != v]
    return ", ".join(diff) or None


def _dense(det: LoadedDetector, v: np.ndarray, a: np.ndarray, cfg: PostprocessConfig):
    """One forward pass on ``[C, t]`` features -> grid-unit candidates."""
    t = min(v.shape[1], a.shape[1])
    length = det.model.padded_length(t)
    fv, fa, mask = prepare_inputs(v, a, length)
    with torch.inference_mode():
        out = det.model(fv.to(det.device), fa.to(det.device), mask.to(det.device))
    return candidates(out, 0, cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.duration_thresh)


def detect_features(det: LoadedDetector, feats: Features, duration: float | None = None,
                    cfg: PostprocessConfig = PostprocessConfig(), top_k: int | None = None,
                    min_score: float = 0.0) -> dict[str, Any]:
    """Events of one video from its features (equal to the official code where it runs)."""
    v, a = feats.visual(), feats.audio()
    if det.feature_norm is not None:
        v, a = det.feature_norm.apply(v, a)
    steps = v.shape[1]
    if steps == 0:
        raise InputError("no feature steps: the video is too short for one feature window")
    if duration is None:
        duration = det.timebase.covered_seconds(steps)
    single = steps <= det.max_seq_len or (det.kind == "unav" and steps <= UNAV_SINGLE_PASS_MAX)
    if single:
        segs, scores, labels = _dense(det, v, a, cfg)
        starts = [0]
    else:
        starts = window_starts(steps, det.max_seq_len)
        parts = []
        for s in starts:
            w = slice(s, s + det.max_seq_len)
            seg, sc, lb = _dense(det, v[:, w], a[:, w], cfg)
            parts.append((shift_candidates(seg, s), sc, lb))
        segs = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
    cap = top_k if top_k is not None else cfg.max_seg_num * len(starts)
    final = nms_to_seconds(segs, scores, labels, duration, det.timebase, replace(cfg, max_seg_num=cap))
    events = [
        {"label": label_name(det.labels, int(l)), "label_id": int(l),
         # + 0.0: the official clamp leaves -0.0 at the video's start
         "start": round(float(s[0]), 4) + 0.0, "end": round(float(s[1]), 4), "score": round(float(sc), 6)}
        for s, sc, l in zip(final.segments, final.scores, final.labels) if sc >= min_score
    ]
    return {"duration": round(float(duration), 4), "model": det.kind,
            "checkpoint": {"name": det.name, "sha256": det.sha256},
            "timebase": det.timebase.as_dict(), "num_steps": int(steps),
            "windows": len(starts), "events": events}
