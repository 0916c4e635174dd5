"""One video in, UnAV-100 features out: the two streams behind one object.

``FeatureExtractor`` loads the four networks once (from the weights
directory, checked against the registry) and then extracts any number of
videos. The result carries the settings key that ``davel extract`` and the
feature cache use to know whether earlier outputs were made the same way.
Warnings (no audio track, a damaged stream, a container duration that the
decoded video contradicts) go to the ``extractors`` logger.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from extractors import audio as audio_io
from extractors import decode, memory
from extractors.devices import resolve_device, strict_fp32
from extractors.feature_files import FeatureMeta, Features
from extractors.i3d import load_i3d
from extractors.raft import FlowEstimator, load_raft
from extractors.settings import ExtractionSettings  # noqa: F401 - re-exported: its home before 0.3
from extractors.vggish import load_pca, load_vggish, stream_features, vggish_features
from extractors.visual import VisualFeatureExtractor
from weights import store
from weights.errors import InputError

log = logging.getLogger(__name__)

FEATURE_VERSION = 1  # bump when a change alters the numbers written


def _counted(frames: Iterator[np.ndarray], count: list[int]) -> Iterator[np.ndarray]:
    for frame in frames:
        count[0] += 1
        yield frame


def decoded_duration(container_duration: float | None, frames: int, fps: float, path: str) -> float:
    """The video's duration: the container's, unless it has none or the decoded frames
    contradict it by more than a second (and 10 %); then the decoded span."""
    span = frames / fps
    if container_duration is None:
        return span
    if abs(container_duration - span) > max(1.0, 0.1 * span):
        log.warning("%s: the container says %.2f s but %.2f s of video decode; using %.2f s",
                    path, container_duration, span, span)
        return span
    return container_duration


def video_feature_meta(extractor: Any, path: str | Path, info: decode.VideoInfo, *, steps: int,
                       audio_steps: int, duration: float, audio_seconds: float | None,
                       frames: int) -> FeatureMeta:
    """The sidecar of one extracted video, for any feature set's extractor (its
    ``settings_key``, ``settings``, ``files``, ``device``, ``feature_set``); warns first
    when much less audio decoded than the container says."""
    short = info.duration and info.duration - max(1.0, 0.1 * info.duration)
    if audio_seconds is not None and short and audio_seconds < short:
        log.warning("%s: only %.2f s of audio decode (the container says %.2f s)",
                    path, audio_seconds, info.duration)
    return FeatureMeta(video=str(path), settings_key=extractor.settings_key, settings=extractor.settings.record(),
                       weights={role: p.name for role, p in extractor.files.items()},
                       steps=int(steps), audio_steps=int(audio_steps), duration=duration,
                       container_duration=info.duration, frames=frames,
                       source_fps=info.source_fps, size=(info.width, info.height),
                       device=str(extractor.device), feature_set=extractor.feature_set,
                       nulls=frozenset({"container_duration"}))  # null: the container says nothing


class FeatureExtractor:
    """Loads RAFT, I3D (rgb, flow) and VGGish once; ``extract(path)`` per video.

    ``tune_allocator``: keep a long run's memory at what it holds by tuning glibc's
    allocator (:mod:`extractors.memory`: fixed mmap/trim thresholds, set on the first
    video, and the heap trimmed after each). The thresholds are process-wide and stay
    set, so a library user asks for it; the default leaves the process alone. The
    ``davel`` command line and :class:`extractors.cache.FeatureCache` turn it on (a
    10-minute video then peaks near a 10 s one instead of growing to many GB).
    ``DAVEL_MALLOC_TUNING=0`` in the environment overrides it to off.
    """

    feature_set = "i3d-vggish"  # extractors.feature_sets

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: ExtractionSettings | None = None, windows_per_batch: int | None = None,
                 tune_allocator: bool = False):
        self.settings = settings or ExtractionSettings()
        self.settings.check()
        self.device = resolve_device(device)
        roles = ["i3d_rgb", "vggish"] + (["raft", "i3d_flow"] if self.settings.flow else [])
        files = {role: store.locate_role(role, weights_dir) for role in roles}
        if self.settings.vggish_pca:
            files["vggish_pca"] = store.locate_role("vggish_pca", weights_dir)
        self.files = files
        self.windows_per_batch = windows_per_batch
        self.tune_allocator = tune_allocator
        self.settings_key = self._settings_key()
        self._networks: tuple | None = None  # loaded on first use: a cache hit needs none

    def load_networks(self) -> tuple[VisualFeatureExtractor, Any, Any]:
        """``(visual, vggish, pca or None)``, loaded once (``extract`` does this itself)."""
        if self._networks is None:
            dev, files = self.device, self.files
            flow = i3d_flow = None
            if self.settings.flow:
                flow = FlowEstimator(load_raft(files["raft"]).to(dev), device=dev,
                                     num_flow_updates=self.settings.raft_iterations)
                i3d_flow = load_i3d(files["i3d_flow"], "flow").to(dev)
            i3d_rgb = load_i3d(files["i3d_rgb"], "rgb").to(dev)
            per_batch = self.windows_per_batch
            if per_batch is None:
                per_batch = 8 if dev.type == "cuda" or not self.settings.flow else 1
            visual = VisualFeatureExtractor(flow, i3d_rgb, i3d_flow, device=dev,
                                            timebase=self.settings.timebase,
                                            windows_per_batch=per_batch,
                                            short_side=self.settings.short_side, crop=self.settings.crop)
            vggish = load_vggish(files["vggish"]).to(dev)
            pca = load_pca(files["vggish_pca"]) if self.settings.vggish_pca else None
            self._networks = (visual, vggish, pca)
        return self._networks

    def _audio(self, path: str | Path, duration: float, rows: int, vggish,
               pca) -> tuple[np.ndarray, float | None]:
        """VGGish rows of the video's audio, read in pieces (memory does not grow with the
        track's length), and the seconds of audio decoded (None: no audio track)."""
        reader = audio_io.open_audio(path)
        if reader is None:
            log.warning("%s: no audio track; the audio stream is treated as silence", path)
            tb = self.settings.timebase
            track = audio_io.silence(max(duration, rows * tb.stride / tb.fps + 1.0))
            return vggish_features(track, vggish, pca=pca, device=self.device), None
        with reader:
            emb = stream_features(reader.pieces(), reader.sample_rate, vggish, pca=pca, device=self.device)
        return emb, reader.duration

    def _settings_key(self) -> str:
        # the time base stays in the key so keys made before it stopped being a setting still match
        desc = {"version": FEATURE_VERSION, **self.settings.record(),
                "weights": {role: store.sha256_of(p) for role, p in sorted(self.files.items())}}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def extract(self, path: str | Path, on_window: Callable[[int], None] | None = None) -> Features:
        """Features of one video; raises InputError (one line) for unusable input."""
        info = decode.probe(path)
        if not self.tune_allocator:
            return self._extract(path, info, on_window)
        memory.configure_allocator()
        try:
            return self._extract(path, info, on_window)
        finally:
            memory.release_free_memory()

    def _extract(self, path: str | Path, info: decode.VideoInfo,
                 on_window: Callable[[int], None] | None) -> Features:
        visual, vggish, pca = self.load_networks()
        tb = self.settings.timebase
        count = [0]
        frames = _counted(decode.iter_frames(path, fps=tb.fps), count)
        with strict_fp32():
            rgb, flow = visual(frames, on_window=on_window)
            if len(rgb) == 0:
                raise InputError(f"{path}: too short: a feature row needs {tb.window + 1} frames at "
                                 f"{tb.fps:g} fps ({(tb.window + 1) / tb.fps:.2f} s)")
            duration = decoded_duration(info.duration, count[0], tb.fps, str(path))
            if self.tune_allocator:
                memory.release_free_memory()  # what the visual pass freed, before the audio is read
            emb, audio_seconds = self._audio(path, duration, len(rgb), vggish, pca)
        meta = video_feature_meta(self, path, info, steps=len(rgb), audio_steps=len(emb), duration=duration,
                                  audio_seconds=audio_seconds, frames=count[0])
        return Features(rgb=rgb.astype(np.float32), flow=flow.astype(np.float32),
                        vggish=emb.astype(np.float32), meta=meta)
