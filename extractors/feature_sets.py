"""The feature sets davel makes from a video, in one table.

A detector is trained on one feature set and takes its widths: I3D + VGGish
(2048-d visual, 128-d audio, 25 fps, a row every 8 frames over 24) for the UnAV-100
checkpoints, ONE-PEACE (1536-d and 1536-d, 16 fps, a row every 4 frames over 16)
for the released CCNet and the best LoCo / UniAV results. This module says, for
each, its widths, its time base, how many rows a video gives, and which extractor
makes it; :func:`for_dims` tells the set of a checkpoint by its input widths.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractors.timebase import I3D_VGGISH, ONE_PEACE, TimeBase
from weights.errors import InputError


@dataclass(frozen=True)
class FeatureSet:
    """One kind of features: ``dims`` = (visual, audio) widths, ``timebase``, and
    ``window_frames``: the frames a row needs (I3D's flow needs one more than its window)."""

    name: str
    dims: tuple[int, int]
    timebase: TimeBase
    window_frames: int
    description: str

    def num_rows(self, frames: int) -> int:
        """Rows a video of ``frames`` frames (at the set's rate) gives."""
        tb = self.timebase
        return 0 if frames < self.window_frames else (frames - self.window_frames) // tb.stride + 1

    def settings(self, record: Mapping[str, Any] | None = None) -> Any:
        """The set's extraction settings, from a stored record (None: the standard ones)."""
        if self.name == ONE_PEACE_SET.name:
            from extractors.onepeace import OnePeaceSettings

            return OnePeaceSettings(**{k: v for k, v in (record or {}).items() if k == "precision"})
        from extractors.extract import ExtractionSettings

        return ExtractionSettings.from_record(record)

    def extractor(self, weights_dir: str | Path | None = None, device: str = "auto", settings: Any = None,
                  tune_allocator: bool = False) -> Any:
        """The extractor that makes this set (loads its networks on first use)."""
        if self.name == ONE_PEACE_SET.name:
            from extractors.onepeace import OnePeaceExtractor

            return OnePeaceExtractor(weights_dir, device, settings, tune_allocator=tune_allocator)
        from extractors.extract import FeatureExtractor

        return FeatureExtractor(weights_dir, device, settings, tune_allocator=tune_allocator)


I3D_VGGISH_SET = FeatureSet("i3d-vggish", (2048, 128), I3D_VGGISH, I3D_VGGISH.window + 1,
                            "I3D rgb + flow (RAFT) and VGGish, as the UnAV-100 features")
ONE_PEACE_SET = FeatureSet("one-peace", (1536, 1536), ONE_PEACE, ONE_PEACE.window,
                           "ONE-PEACE video (K400 fine-tune) and audio encoders, as the released CCNet's")
FEATURE_SETS: dict[str, FeatureSet] = {s.name: s for s in (I3D_VGGISH_SET, ONE_PEACE_SET)}
DEFAULT = I3D_VGGISH_SET.name


def feature_set(name: str) -> FeatureSet:
    """The set called ``name``; InputError (one line) naming the known ones."""
    try:
        return FEATURE_SETS[name]
    except KeyError as exc:
        raise InputError(f"unknown feature set '{name}' (known: {', '.join(FEATURE_SETS)})") from exc


def for_dims(dims: tuple[int, int]) -> FeatureSet | None:
    """The set whose widths are ``dims`` (visual, audio), or None."""
    return next((s for s in FEATURE_SETS.values() if s.dims == tuple(dims)), None)


def describe_dims(dims: tuple[int, int]) -> str:
    """One line on what features of these widths are, for errors."""
    known = "; ".join(f"{s.dims[0]}/{s.dims[1]}: {s.name}" for s in FEATURE_SETS.values())
    return f"{dims[0]}-d visual / {dims[1]}-d audio features are not a set davel makes ({known})"

