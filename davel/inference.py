"""The whole job for one input: video (or features) -> detector -> events.

``load_detector(name_or_path)`` gives a :class:`Detector` (built from typed
values; :meth:`Detector.from_checkpoint` reads them from a checkpoint's
``davel`` entry); ``detect(video)`` extracts the features the checkpoint
expects (through the feature cache), runs the model in one pass or in
overlapping windows, and returns a typed :class:`DetectionResult`;
:func:`detect_subset` runs it over an annotated split. Nothing here prints:
warnings go to the ``davel`` logger, progress to the callback given.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from davel.annotations import Annotations
from davel.detectors.base import PyramidDetector
from davel.detectors.checkpoint import check_checkpoint_file, load_checkpoint
from davel.detectors.meta import CheckpointMeta
from davel.errors import InputError, WeightsError
from davel.feature_norm import FeatureNorm
from davel.labels import default_labels, label_name
from davel.models import resolve_checkpoint
from davel.postprocess import PostprocessConfig, candidates, nms_to_seconds
from davel.results import DetectionResult, Event  # re-exported: their home in 0.2.0
from davel.windows import shift_candidates, window_starts
from extractors import feature_files, feature_sets
from extractors.devices import resolve_device, strict_fp32
from extractors.feature_files import FeatureMeta, Features
from extractors.settings import ExtractionSettings
from extractors.timebase import I3D_VGGISH, TimeBase

if TYPE_CHECKING:
    from extractors.cache import FeatureCache

log = logging.getLogger(__name__)

# The widths of davel's default feature set (I3D rgb + flow, VGGish).
VIDEO_FEATURE_DIMS = feature_sets.I3D_VGGISH_SET.dims


def prepare_inputs(feats_v: Tensor | np.ndarray, feats_a: Tensor | np.ndarray,
                   length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Batch one video: ``[Cv, T]``, ``[Ca, T']`` -> ``[1, Cv, L]``, ``[1, Ca, L]``, ``[1, L]`` bool.

    Both streams are cut to the shorter length (as both repos do), zero-padded
    on the right to ``length``; the mask is True on the real steps.
    """
    v = torch.as_tensor(np.asarray(feats_v) if not isinstance(feats_v, Tensor) else feats_v,
                        dtype=torch.float32)
    a = torch.as_tensor(np.asarray(feats_a) if not isinstance(feats_a, Tensor) else feats_a,
                        dtype=torch.float32)
    if v.dim() != 2 or a.dim() != 2:
        raise InputError(f"features must be [channels, time], got {tuple(v.shape)} and {tuple(a.shape)}")
    steps = min(v.shape[1], a.shape[1])
    if steps == 0:
        raise InputError("no feature steps: the video is too short for one feature window")
    if steps > length:
        raise InputError(f"{steps} feature steps do not fit the padded length {length}")
    v_out = v.new_zeros(1, v.shape[0], length)
    a_out = a.new_zeros(1, a.shape[0], length)
    v_out[0, :, :steps] = v[:, :steps]
    a_out[0, :, :steps] = a[:, :steps]
    mask = (torch.arange(length) < steps)[None]
    return v_out, a_out, mask


class Detector:
    """A detector ready to run: the model and what goes with it (class names, time base,
    feature statistics, the extractor settings of its training features).

    Built from typed values; :meth:`from_checkpoint` (or :func:`load_detector`)
    reads them from a checkpoint file. ``kind`` is the model's.
    """

    def __init__(self, model: PyramidDetector, *, labels: Sequence[str] | None, timebase: TimeBase,
                 feature_norm: FeatureNorm | None, extraction: ExtractionSettings | None, name: str,
                 sha256: str, device: str | torch.device, weights_dir: str | Path | None = None,
                 postprocess: PostprocessConfig = PostprocessConfig(), feature_set: str | None = None) -> None:
        _check_feature_norm(name, feature_norm, model.input_dims)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.kind = model.kind
        self.name = name
        self.sha256 = sha256
        # no names of its own: a 100-class checkpoint gets the UnAV-100 names (davel/data)
        self.labels = default_labels(model.num_classes) if labels is None else list(labels)
        self.timebase = timebase
        self.feature_norm = feature_norm
        self.extraction = extraction  # None: the checkpoint does not say (official ones)
        # the features it takes: recorded by davel's checkpoints, else told by its input widths
        known = feature_sets.for_dims(model.input_dims)
        self.feature_set = feature_set or (known.name if known is not None else None)
        self.weights_dir = weights_dir
        self.postprocess = postprocess
        self._cache = None  # the feature cache, made on the first video

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        labels: Sequence[str] | None = None, weights_dir: str | Path | None = None,
                        expect_dims: tuple[int, int] | None = None) -> Detector:
        """The detector a checkpoint file holds, with what its ``davel`` entry says
        (``labels`` overrides its class names; official checkpoints: I3D + VGGish time
        base, no statistics, the published extraction). WeightsError (one line)."""
        path = Path(path)
        model, info, sha = load_checkpoint(path, expect_dims=expect_dims)
        meta = info.meta
        if labels is None and meta.labels:
            labels = meta.labels
        feature_set, timebase, extraction = _checkpoint_features(meta, model.input_dims)
        return cls(model, labels=labels, timebase=timebase, feature_norm=meta.feature_norm,
                   extraction=extraction, name=path.name, sha256=sha, device=device,
                   weights_dir=weights_dir, feature_set=feature_set)

    # ---------------------------------------------------------------- settings

    @property
    def extraction_settings(self) -> ExtractionSettings:
        """How to extract features for this detector: the settings its training features
        were made with (davel's own checkpoints), else the published procedure."""
        return self.extraction or ExtractionSettings()

    def settings_mismatch(self, feature_meta: FeatureMeta | Mapping[str, Any] | None) -> str | None:
        """How features' extractor settings differ from the detector's training features
        (one line), or None (the same, or unknown on either side). Only the settings both
        records have are compared."""
        if isinstance(feature_meta, Mapping) and not isinstance(feature_meta, FeatureMeta):
            feature_meta = FeatureMeta.from_dict(feature_meta)  # a sidecar dict, as 0.2.0 took
        theirs = None if feature_meta is None else feature_meta.settings
        if self.extraction is None or theirs is None:
            return None
        diff = [f"{k} {theirs[k]!r} (trained on {v!r})" for k, v in sorted(self.extraction.record().items())
                if k in theirs and theirs[k] != v]
        return ", ".join(diff) or None

    # ---------------------------------------------------------------- detection

    def detect(self, video: str | Path, *, top_k: int | None = None, min_score: float = 0.0,
               on_window: Callable[[int], None] | None = None) -> DetectionResult:
        """Events of a video file: features from the cache or extracted now (with the
        settings the checkpoint expects), then :meth:`detect_features`."""
        self.video_feature_set()
        feats = self.feature_cache().features(Path(video), on_window=on_window)
        return self.detect_features(feats, name=str(video), top_k=top_k, min_score=min_score)

    def video_feature_set(self) -> feature_sets.FeatureSet:
        """The feature set davel extracts from a video for this detector; InputError (one line)
        when its input widths are not a set davel makes."""
        return _video_feature_set(self.name, self.feature_set, self.model.input_dims)

    def feature_cache(self) -> FeatureCache:
        """The cache of the features this detector's videos get (made on first use; its
        ``extractor`` is the feature set's)."""
        if self._cache is None:
            from extractors.cache import FeatureCache

            fs = self.video_feature_set()
            settings = self.extraction_settings if fs.name == feature_sets.DEFAULT else fs.settings()
            if fs.name == feature_sets.DEFAULT and not settings.is_standard():
                log.warning("%s was trained on non-standard features: extracting with its settings "
                            "(short side %d, crop %d, flow %s, RAFT iterations %d)", self.name,
                            settings.short_side, settings.crop, "on" if settings.flow else "off",
                            settings.raft_iterations)
            self._cache = FeatureCache(self.weights_dir, str(self.device), settings)
        return self._cache

    def detect_features(self, feats: Features, *, name: str = "", duration: float | None = None,
                        top_k: int | None = None, min_score: float = 0.0) -> DetectionResult:
        """Events from a video's features (equal to the official code where it runs).

        ``duration`` (seconds) clamps the events; default: the sidecar's duration
        when the features came from ``davel extract``, else the span they cover.
        """
        differs = self.settings_mismatch(feats.meta)
        if differs:
            log.warning("%s: features made with other extractor settings than the detector's "
                        "training features: %s", name or "features", differs)
        v, a = feats.visual(), feats.audio()
        if (v.shape[0], a.shape[0]) != self.model.input_dims:
            raise InputError(f"{name or 'features'}: {v.shape[0]}-d visual / {a.shape[0]}-d audio "
                             f"features, but {self.name} takes {self.model.input_dims[0]}-d / "
                             f"{self.model.input_dims[1]}-d")
        if self.feature_norm is not None:
            v, a = self.feature_norm.apply(v, a)
        steps = v.shape[1]
        if steps == 0:
            raise InputError(f"{name or 'features'}: no feature steps: the video is too short "
                             "for one feature window")
        if duration is None:
            duration = feats.meta.duration or self.timebase.covered_seconds(steps)
        starts = [0] if steps <= self.model.max_single_pass() else window_starts(steps, self.model.max_seq_len)
        segs, scores, labels = self.dense_candidates(v, a, starts)
        cfg = self.postprocess
        cap = top_k if top_k is not None else cfg.max_seg_num * len(starts)
        final = nms_to_seconds(segs, scores, labels, duration, self.timebase, replace(cfg, max_seg_num=cap))
        events = [
            Event(label_name(self.labels, int(lab)), int(lab),
                  # + 0.0: the official clamp leaves -0.0 at the video's start
                  round(float(s[0]), 4) + 0.0, round(float(s[1]), 4), round(float(sc), 6))
            for s, sc, lab in zip(final.segments, final.scores, final.labels) if sc >= min_score
        ]
        return DetectionResult(video=name, duration=round(float(duration), 4), model=self.kind,
                               checkpoint={"name": self.name, "sha256": self.sha256},
                               timebase=self.timebase, num_steps=int(steps), windows=len(starts),
                               events=events)

    def dense_candidates(self, v: np.ndarray, a: np.ndarray, starts: Sequence[int]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NMS candidates (grid units of the whole video) of ``[C, T]`` features run as the
        windows starting at ``starts`` (``[0]``: one pass over everything)."""
        cfg = self.postprocess
        length = None if starts == [0] else self.model.max_seq_len
        parts = []
        for s in starts:
            w = slice(s, None if length is None else s + length)
            vw, aw = v[:, w], a[:, w]
            padded = self.model.padded_length(min(vw.shape[1], aw.shape[1]))
            fv, fa, mask = prepare_inputs(vw, aw, padded)
            with torch.inference_mode(), strict_fp32():
                out = self.model(fv.to(self.device), fa.to(self.device), mask.to(self.device))
            seg, sc, lb = candidates(out, 0, cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.duration_thresh)
            parts.append((shift_candidates(seg, s), sc, lb))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))


def _check_feature_norm(name: str, feature_norm: FeatureNorm | None, dims: tuple[int, int]) -> None:
    if feature_norm is not None and feature_norm.dims != dims:
        dv, da = feature_norm.dims
        raise WeightsError(f"{name}: its feature statistics are {dv}-d / {da}-d but the detector "
                           f"takes {dims[0]}-d / {dims[1]}-d")


def _checkpoint_features(meta: CheckpointMeta, dims: tuple[int, int]
                         ) -> tuple[str | None, TimeBase, ExtractionSettings | None]:
    """``(feature set, time base, extraction settings)`` of a checkpoint: its recorded set,
    else the one its input widths tell; its recorded time base, else its set's (official
    checkpoints); its training features' settings (I3D + VGGish only)."""
    known = feature_sets.for_dims(dims)
    feature_set = meta.feature_set or (known.name if known is not None else None)
    default_tb = feature_sets.feature_set(feature_set).timebase if feature_set in feature_sets.FEATURE_SETS \
        else I3D_VGGISH
    extraction = meta.extraction_settings() if feature_set in (None, feature_sets.DEFAULT) else None
    return feature_set, meta.timebase or default_tb, extraction


def _video_feature_set(name: str, feature_set: str | None, dims: tuple[int, int]) -> feature_sets.FeatureSet:
    fs = feature_sets.FEATURE_SETS.get(feature_set or "")
    if fs is None or fs.dims != dims:
        raise InputError(f"{name} takes {feature_sets.describe_dims(dims)}: pass pre-extracted features")
    return fs


@dataclass(frozen=True)
class CheckpointSummary:
    """What a driver needs to know of a checkpoint before its workers load it
    (:func:`check_checkpoint`): no weights."""

    name: str                      # the file's name, as Detector.name
    kind: str
    input_dims: tuple[int, int]
    feature_set: str | None        # as Detector.feature_set
    has_labels: bool               # class names given, recorded, or the UnAV-100 ones (100 classes)
    device: torch.device           # where a detector loaded with the same ``device`` runs
    weights_dir: str | Path | None = None

    def video_feature_set(self) -> feature_sets.FeatureSet:
        """As :meth:`Detector.video_feature_set` (the same InputError)."""
        return _video_feature_set(self.name, self.feature_set, self.input_dims)

    def extractor(self, tune_allocator: bool = False) -> Any:
        """The extractor of the features a video gets (its networks load on first use), as the
        detector's feature cache would make it (ONE-PEACE: the set's settings)."""
        fs = self.video_feature_set()
        return fs.extractor(self.weights_dir, str(self.device), fs.settings(), tune_allocator=tune_allocator)


def check_checkpoint(name_or_path: str | Path = "ccnet", device: str | torch.device = "auto",
                     labels: Sequence[str] | None = None, weights_dir: str | Path | None = None,
                     expect_dims: tuple[int, int] | None = None) -> CheckpointSummary:
    """Check what :func:`load_detector` would load, with the same one-line errors, without
    keeping the model: the file is read memory-mapped, the model built on its tensors to
    check the layout and dropped (:func:`~davel.detectors.checkpoint.check_checkpoint_file`).
    For a process that only drives workers which load their own detector."""
    path = resolve_checkpoint(name_or_path, weights_dir)
    info = check_checkpoint_file(path, expect_dims)
    meta = info.meta
    dims = (info.input_dim_v, info.input_dim_a)
    name = Path(path).name
    feature_set, _, _ = _checkpoint_features(meta, dims)
    _check_feature_norm(name, meta.feature_norm, dims)
    has_labels = labels is not None or bool(meta.labels) or default_labels(info.num_classes) is not None
    return CheckpointSummary(name=name, kind=info.kind, input_dims=dims, feature_set=feature_set,
                             has_labels=has_labels, device=resolve_device(device), weights_dir=weights_dir)


def load_detector(name_or_path: str | Path = "ccnet", device: str | torch.device = "auto",
                  labels: Sequence[str] | None = None, weights_dir: str | Path | None = None,
                  expect_dims: tuple[int, int] | None = None) -> Detector:
    """A detector by model name (``ccnet``, ``unav``, one stored with ``davel weights
    import``) or checkpoint path, on ``device`` (``auto``: a GPU when there is one).

    ``labels`` overrides the class names the checkpoint carries; ``weights_dir``
    holds the published checkpoints and the extractor weights (default: the
    cache); ``expect_dims`` refuses, in one line, a checkpoint for other features.
    """
    path = resolve_checkpoint(name_or_path, weights_dir)
    return Detector.from_checkpoint(path, device, labels, weights_dir, expect_dims)


def detect_subset(detector: Detector, annotations: Annotations, feature_dir: str | Path, subset: str,
                  on_video: Callable[[], None] | None = None) -> tuple[list[dict], list[str]]:
    """Run ``detector`` on every video of ``subset`` that has features in ``feature_dir``
    (``davel eval --checkpoint``, the trainer's validation).

    Returns ``(predictions, missing_ids)``; predictions are result dicts
    (``video`` = the id), durations from the annotations.
    """
    preds, missing = [], []
    for v in annotations.subset(subset):
        if not feature_files.has_features(Path(feature_dir), v.video_id):
            missing.append(v.video_id)
            continue
        feats = feature_files.read(Path(feature_dir) / v.video_id)
        preds.append(detector.detect_features(feats, name=v.video_id, duration=v.duration).to_dict())
        if on_video is not None:
            on_video()
    return preds, missing
