"""One video in, ONE-PEACE features out: what the released CCNet and the best LoCo /
UniAV results were trained on (1536-d visual and audio rows, 16 fps, 16-frame windows
every 4 frames).

No public code makes these features from a video; davel follows the procedure the
UniAV README and the LoCo paper state, with these choices where they are silent
(/work/shared/ONEPEACE.md's [DECIDE] list; each is also stated where it is made):

* D1 frames at 16 fps from davel's decoder (ffmpeg ``fps`` filter semantics, as the
  25 fps I3D path);
* D2 the Kinetics-400 val transform of the fine-tuned encoder: short side 256,
  centre crop 256, ONE-PEACE's mean/std (:func:`extractors.onepeace_video.preprocess_frames`);
* D3 a visual row is the mean over the window's 16 frames of the per-frame CLS after
  the final LayerNorm, not normalised (:class:`~extractors.onepeace_video.OnePeaceVideoEncoder`);
* D4 audio: the track decoded and mixed to mono as for VGGish, resampled to 16 kHz by
  davel's resampler (resampy's ``kaiser_best``, bit-exact in pieces; librosa, which
  the ONE-PEACE hub uses, would default to soxr: both are band-limited, they differ
  in the last bits), each 1 s window layer-normalised on its own as the hub does per
  clip (:func:`extractors.onepeace_audio.prepare_window`);
* D5 an audio row is ``normalize(audio_proj(CLS))`` (norm 1);
* D6 each stream gets the rows its own windows give (:mod:`extractors.onepeace_windows`);
  a video without audio gets the rows of a silent track as long as the video;
* D7 float32 is the reference; ``precision="bf16"`` (CUDA only) is an option whose
  drift against float32 ``examples/bench_onepeace.py`` measures.

The encoders are big (1.66 B and 1.53 B parameters at the official size): the weights
are memory-mapped from the converted files, and on a CPU :meth:`OnePeaceExtractor.estimate`
says how long a video will take before it starts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from extractors import audio as audio_io
from extractors import decode, onepeace_audio
from extractors.devices import resolve_device, strict_fp32
from extractors.feature_files import Features
from extractors.onepeace_video import OnePeaceVideoEncoder, preprocess_frames
from extractors.onepeace_windows import (
    AUDIO_HOP,
    AUDIO_RATE,
    AUDIO_WINDOW,
    VIDEO_STRIDE,
    VIDEO_WINDOW,
    audio_rows,
    num_rows,
    visual_rows,
)
from extractors.resample import resample_pieces
from extractors.timebase import ONE_PEACE, TimeBase
from weights import store
from weights.errors import InputError

log = logging.getLogger(__name__)

FEATURE_SET = "one-peace"
FEATURE_VERSION = 1  # bump when a change alters the numbers written
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class OnePeaceSettings:
    """How ONE-PEACE features are made: the time base is fixed (16 fps, 16 frames every 4);
    only the arithmetic precision is a choice (D7)."""

    precision: str = "fp32"
    feature_set: ClassVar[str] = FEATURE_SET

    @property
    def timebase(self) -> TimeBase:
        return ONE_PEACE

    def check(self, device: torch.device) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision != "fp32" and device.type != "cuda":
            raise InputError(f"precision {self.precision} needs a CUDA device (the reference is fp32)")

    def record(self) -> dict[str, Any]:
        """What a sidecar and a checkpoint store: the feature set, the settings, the time base."""
        return {"feature_set": FEATURE_SET, "precision": self.precision, **self.timebase.as_dict()}


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _load(path: Path) -> dict:
    # memory-mapped: a 6 GB file is not read into memory before the model takes it over
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


class OnePeaceExtractor:
    """Loads the ONE-PEACE video and audio encoders once; ``extract(path)`` per video.

    The same interface as :class:`extractors.extract.FeatureExtractor`: ``settings_key``
    says whether earlier outputs were made the same way; ``extract`` returns
    :class:`Features` whose ``rgb`` holds the visual rows ``[T, 1536]``, ``flow`` is
    empty (``[T, 0]``) and ``vggish`` holds the audio rows ``[T_a, 1536]``.
    """

    feature_set = FEATURE_SET

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: OnePeaceSettings | None = None, windows_per_batch: int | None = None,
                 tune_allocator: bool = False) -> None:
        self.settings = settings or OnePeaceSettings()
        self.device = resolve_device(device)
        self.settings.check(self.device)
        self.files = {role: store.locate_role(role, weights_dir) for role in ("onepeace_video", "onepeace_audio")}
        self.windows_per_batch = windows_per_batch or (8 if self.device.type == "cuda" else 1)
        self.tune_allocator = tune_allocator  # nothing to tune here: accepted for the common interface
        self.settings_key = self._settings_key()
        self._networks: tuple[OnePeaceVideoEncoder, onepeace_audio.OnePeaceAudio] | None = None
        self._window_seconds: tuple[float, float] | None = None

    def _settings_key(self) -> str:
        desc = {"version": FEATURE_VERSION, **self.settings.record(),
                "weights": {role: store.sha256_of(p) for role, p in sorted(self.files.items())}}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def load_networks(self) -> tuple[OnePeaceVideoEncoder, onepeace_audio.OnePeaceAudio]:
        """``(video, audio)`` encoders on the device, loaded once."""
        if self._networks is None:
            dtype = PRECISIONS[self.settings.precision]
            video = OnePeaceVideoEncoder.from_state_dict(_load(self.files["onepeace_video"]))
            audio = onepeace_audio.from_state_dict(_load(self.files["onepeace_audio"]),
                                                   str(self.files["onepeace_audio"]))
            self._networks = (video.to(self.device, dtype), audio.to(self.device, dtype))
        return self._networks

    # ---------------------------------------------------------------- estimates

    def window_seconds(self) -> tuple[float, float]:
        """Seconds one visual and one audio window take on this device, measured once: the
        stem and one layer of each encoder on a dummy window, the layer times the depth."""
        if self._window_seconds is None:
            video, audio = self.load_networks()
            dtype = PRECISIONS[self.settings.precision]
            with torch.inference_mode(), strict_fp32():
                clip = torch.zeros(VIDEO_WINDOW, 3, video.image_size, video.image_size, device=self.device,
                                   dtype=dtype)
                t0 = time.perf_counter()
                tokens = video.image_adapter(clip)
                bias = video.image_adapter.rel_pos_bias()
                t1 = time.perf_counter()
                video.encoder.layers[0](tokens, bias)
                t2 = time.perf_counter()
                wave = torch.zeros(1, AUDIO_WINDOW, device=self.device, dtype=dtype)
                x, abias = audio.encoder_wrapper.audio_adapter(wave)
                t3 = time.perf_counter()
                audio.encoder_wrapper.fusion_model.layers[0](x, abias)
                t4 = time.perf_counter()
            self._window_seconds = ((t1 - t0) + (t2 - t1) * len(video.encoder.layers),
                                    (t3 - t2) + (t4 - t3) * len(audio.encoder_wrapper.fusion_model.layers))
        return self._window_seconds

    def estimate(self, path: str | Path) -> tuple[int, float]:
        """``(windows, seconds)``: the visual + audio windows of a video (from its container
        duration) and how long the encoders will take on them here."""
        info = decode.probe(path)
        duration = info.duration or 0.0
        frames = int(duration * ONE_PEACE.fps)
        v_rows = num_rows(frames, VIDEO_WINDOW, VIDEO_STRIDE)
        a_rows = num_rows(int(duration * AUDIO_RATE), AUDIO_WINDOW, AUDIO_HOP)
        per_v, per_a = self.window_seconds()
        return v_rows + a_rows, v_rows * per_v + a_rows * per_a

    def estimate_line(self, paths: list[str | Path]) -> str:
        """One line for a CPU user, before a batch starts: the window times measured here and
        what they make for these videos (a video whose duration is unknown counts as none)."""
        windows, seconds = 0, 0.0
        for path in paths:
            try:
                w, s = self.estimate(path)
            except InputError:  # the batch reports a bad file itself
                continue
            windows, seconds = windows + w, seconds + s
        per_v, per_a = self.window_seconds()
        self._networks = None  # measured; the batch's worker loads its own
        return (f"ONE-PEACE on the {self.device.type.upper()}: {per_v:.1f} s per visual and {per_a:.1f} s "
                f"per audio window measured here; {len(paths)} video(s), {windows} windows: about "
                f"{_span(seconds)} (a GPU takes a fraction of a second per window)")

    # ---------------------------------------------------------------- extraction

    def extract(self, path: str | Path, on_window: Callable[[int], None] | None = None) -> Features:
        """Features of one video; raises InputError (one line) for unusable input."""
        info = decode.probe(path)
        video, audio = self.load_networks()
        dtype = PRECISIONS[self.settings.precision]
        tb = self.settings.timebase
        count = [0]

        def frames():
            for frame in decode.iter_frames(path, fps=tb.fps):
                count[0] += 1
                yield frame

        def transform(frame: np.ndarray) -> torch.Tensor:
            return preprocess_frames(frame[None])[0].to(self.device, dtype)

        def encode_clips(x: torch.Tensor) -> torch.Tensor:
            return video(x)

        def encode_audio(x: torch.Tensor) -> torch.Tensor:
            return audio(x.to(self.device, dtype))

        # one rule for the duration and the sidecar, whatever the feature set
        from extractors.extract import decoded_duration, video_feature_meta

        with strict_fp32():
            visual = visual_rows(frames(), transform, encode_clips, per_batch=self.windows_per_batch,
                                 on_window=on_window)
            if len(visual) == 0:
                raise InputError(f"{path}: too short: a ONE-PEACE row needs {VIDEO_WINDOW} frames at "
                                 f"{tb.fps:g} fps ({VIDEO_WINDOW / tb.fps:.2f} s)")
            duration = decoded_duration(info.duration, count[0], tb.fps, str(path))
            reader = audio_io.open_audio(path)
            if reader is None:
                log.warning("%s: no audio track; the audio stream is treated as silence", path)
                track = audio_io.silence(duration, AUDIO_RATE)
                pieces, audio_seconds = [track.samples], None
                aud = audio_rows(pieces, onepeace_audio.prepare_window, encode_audio, per_batch=8)
            else:
                with reader:
                    aud = audio_rows(resample_pieces(reader.pieces(), reader.sample_rate),
                                     onepeace_audio.prepare_window, encode_audio, per_batch=8)
                audio_seconds = reader.duration
            if len(aud) == 0:
                raise InputError(f"{path}: less than 1 s of audio decodes: a ONE-PEACE audio row "
                                 f"needs 1 s")
        meta = video_feature_meta(self, path, info, steps=len(visual), audio_steps=len(aud), duration=duration,
                                  audio_seconds=audio_seconds, frames=count[0])
        return Features(rgb=visual.astype(np.float32), flow=np.zeros((len(visual), 0), np.float32),
                        vggish=aud.astype(np.float32), meta=meta)
