"""One video in, UnAV-100 features out: the two streams behind one object.

``FeatureExtractor`` loads the four networks once (from the weights
directory, checked against the registry) and then extracts any number of
videos. The result carries the settings key that ``davel extract`` and the
feature cache use to know whether earlier outputs were made the same way.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from davel.errors import InputError
from davel.timebase import I3D_VGGISH
from extractors import audio as audio_io
from extractors import decode
from extractors.devices import resolve_device
from extractors.feature_files import Features
from extractors.i3d import load_i3d
from extractors.raft import FlowEstimator, load_raft
from extractors.vggish import load_pca, load_vggish, vggish_features
from extractors.visual import VisualFeatureExtractor
from weights import store

FEATURE_VERSION = 1  # bump when a change alters the numbers written


@dataclass
class ExtractionSettings:
    """How features are made. The defaults are the published UnAV-100 procedure;
    other sizes or iteration counts make faster, NON-standard features (fine for
    experiments and training your own detector, not for the published checkpoints)."""

    vggish_pca: bool = False
    flow: bool = True
    raft_iterations: int = 20
    short_side: int = 256
    crop: int = 224
    fps: float = I3D_VGGISH.fps
    stride: int = I3D_VGGISH.stride
    window: int = I3D_VGGISH.window

    def is_standard(self) -> bool:
        return (self.flow, self.raft_iterations, self.short_side, self.crop) == (True, 20, 256, 224)


class FeatureExtractor:
    """Loads RAFT, I3D (rgb, flow) and VGGish once; ``extract(path)`` per video."""

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: ExtractionSettings | None = None, windows_per_batch: int | None = None):
        self.settings = settings or ExtractionSettings()
        self.device = resolve_device(device)
        roles = ["i3d_rgb", "vggish"] + (["raft", "i3d_flow"] if self.settings.flow else [])
        files = {role: store.locate_role(role, weights_dir) for role in roles}
        if self.settings.vggish_pca:
            files["vggish_pca"] = store.locate_role("vggish_pca", weights_dir)
        self.files = files
        self.windows_per_batch = windows_per_batch
        self.settings_key = self._settings_key()
        self._networks: tuple | None = None  # loaded on first use: a cache hit needs none

    def _load_networks(self) -> tuple:
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
            visual = VisualFeatureExtractor(flow, i3d_rgb, i3d_flow, device=dev, windows_per_batch=per_batch,
                                            short_side=self.settings.short_side, crop=self.settings.crop)
            vggish = load_vggish(files["vggish"]).to(dev)
            pca = load_pca(files["vggish_pca"]) if self.settings.vggish_pca else None
            self._networks = (visual, vggish, pca)
        return self._networks

    def _settings_key(self) -> str:
        desc = {"version": FEATURE_VERSION, **self.settings.__dict__,
                "weights": {role: store.sha256_of(p) for role, p in sorted(self.files.items())}}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def extract(self, path: str | Path, on_window: Callable[[int], None] | None = None,
                warn: Callable[[str], None] | None = None) -> Features:
        """Features of one video; raises InputError (one line) for unusable input."""
        info = decode.probe(path)
        visual, vggish, pca = self._load_networks()
        frames = decode.iter_frames(path, fps=self.settings.fps)
        rgb, flow = visual(frames, on_window=on_window)
        if len(rgb) == 0:
            raise InputError(f"{path}: too short: a feature row needs "
                             f"{self.settings.window + 1} frames at {self.settings.fps:g} fps "
                             f"({(self.settings.window + 1) / self.settings.fps:.2f} s)")
        track = audio_io.decode_audio(path)
        if track is None:
            if warn:
                warn(f"{path}: no audio track; the audio stream is treated as silence")
            seconds = max(info.duration, len(rgb) * self.settings.stride / self.settings.fps + 1.0)
            track = audio_io.silence(seconds)
        emb = vggish_features(track, vggish, pca=pca, device=self.device)
        meta = {"video": str(path), "settings_key": self.settings_key, "settings": self.settings.__dict__,
                "weights": {role: p.name for role, p in self.files.items()},
                "T": int(len(rgb)), "T_audio": int(len(emb)), "duration": info.duration,
                "source_fps": info.source_fps, "size": [info.width, info.height],
                "device": str(self.device)}
        return Features(rgb=rgb.astype(np.float32), flow=flow.astype(np.float32),
                        vggish=emb.astype(np.float32), meta=meta)
