"""Per-channel feature standardisation learnt at training time and kept in the checkpoint.

The papers feed raw I3D / VGGish features and the official checkpoints carry
no statistics, so for them this is the identity. ``davel train
--standardize-features`` measures each channel's mean and standard deviation
on the training videos, trains on ``(x - mean) / std`` and stores the
statistics in the checkpoint, so that ``davel detect`` / ``davel eval`` apply
the same transform to new videos. It helps features whose information sits in
small deviations around a large common vector (e.g. features from untrained or
foreign extractors), which the detectors' input LayerNorm would otherwise
flatten.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Channels that (nearly) never vary, e.g. the all-zero flow of `extract --no-flow`, are only centred.
MIN_STD = 1e-6


@dataclass(frozen=True)
class FeatureNorm:
    """``visual_mean/std [Cv]`` and ``audio_mean/std [Ca]`` float32."""

    visual_mean: np.ndarray
    visual_std: np.ndarray
    audio_mean: np.ndarray
    audio_std: np.ndarray

    @classmethod
    def fit(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> FeatureNorm:
        """Statistics over every time step of ``(visual [Cv, T], audio [Ca, T])`` pairs
        (float64 sums: an hour of training video is millions of steps)."""
        sums: list[list[np.ndarray]] = []
        counts = [0, 0]
        for pair in pairs:
            for k, x in enumerate(pair):
                x = np.asarray(x, np.float64)
                if len(sums) <= k:
                    sums.append([np.zeros(x.shape[0]), np.zeros(x.shape[0])])
                sums[k][0] += x.sum(1)
                sums[k][1] += (x * x).sum(1)
                counts[k] += x.shape[1]
        if len(sums) < 2 or min(counts) == 0:
            raise ValueError("no feature steps to measure")
        stats = []
        for (s, sq), n in zip(sums, counts):
            mean = s / n
            std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
            stats += [mean.astype(np.float32), np.where(std > MIN_STD, std, 1.0).astype(np.float32)]
        return cls(*stats)

    def apply(self, visual: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[Cv, T], [Ca, T]`` -> standardised float32 copies."""
        v = (visual - self.visual_mean[:, None]) / self.visual_std[:, None]
        a = (audio - self.audio_mean[:, None]) / self.audio_std[:, None]
        return v.astype(np.float32), a.astype(np.float32)

    @property
    def dims(self) -> tuple[int, int]:
        return int(self.visual_mean.shape[0]), int(self.audio_mean.shape[0])

    def to_meta(self) -> dict[str, torch.Tensor]:
        """For the checkpoint's ``davel`` entry (tensors load under ``weights_only``)."""
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
                for k in ("visual_mean", "visual_std", "audio_mean", "audio_std")}

    @classmethod
    def from_meta(cls, meta: Any) -> FeatureNorm | None:
        """The statistics a checkpoint holds, or None (official checkpoints, untransformed runs)."""
        if not isinstance(meta, dict):
            return None
        arrays = [np.asarray(torch.as_tensor(meta[k]), np.float32)
                  for k in ("visual_mean", "visual_std", "audio_mean", "audio_std")]
        return cls(*arrays)
