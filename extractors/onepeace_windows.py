"""The window bookkeeping of ONE-PEACE features: which frames and samples make each row.

The procedure (UniAV's README; the LoCo paper, §IV): frames at 16 fps, a visual row
per window of 16 frames every 4 frames; audio at 16 kHz, an audio row per 1 s window
every 0.25 s. Row ``i`` of either stream covers ``[0.25 i, 0.25 i + 1)`` s, its
centre is ``(4 i + 8) / 16`` s (:data:`extractors.timebase.ONE_PEACE`), and a 10 s
clip gives ``(160 - 16) / 4 + 1 = 37`` rows of each.

The encoders are passed in (``encode``), so this module is exact bookkeeping with
no network in it, and is tested with fake encoders. Memory stays bounded: the last
16 transformed frames and one window of audio are kept, whatever the length.

[DECIDE] D6, what is written when the streams differ: each stream gets the rows its
own windows give (a window is never padded; a track shorter than 1 s gives no audio
row), as the VGGish path does; the detectors cut both to the shorter, as the CCNet
and LoCo loaders do. A video without an audio track gets a silent track as long as
the video (the caller makes it), so its audio rows are the encoder's rows of silence.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

VIDEO_FPS = 16
VIDEO_WINDOW = 16  # frames per visual row
VIDEO_STRIDE = 4  # frames between rows
AUDIO_RATE = 16000
AUDIO_WINDOW = 16000  # samples per audio row (1 s)
AUDIO_HOP = 4000  # samples between rows (0.25 s)


def num_rows(length: int, window: int, stride: int) -> int:
    """Rows of windows ``window`` long every ``stride`` over ``length`` frames or samples."""
    return 0 if length < window else (length - window) // stride + 1


def _run(encode: Callable[[Tensor], Tensor], batch: list[Tensor], rows: list[np.ndarray]) -> None:
    if batch:
        with torch.inference_mode():
            rows.append(encode(torch.stack(batch)).float().cpu().numpy())
        batch.clear()


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


def visual_rows(frames: Iterable[np.ndarray], transform: Callable[[np.ndarray], Tensor],
                encode: Callable[[Tensor], Tensor], *, per_batch: int = 1,
                on_window: Callable[[int], None] | None = None) -> np.ndarray:
    """``[T, D]`` float32 rows of a frame stream (``[H, W, 3]`` uint8 at 16 fps).

    ``transform`` maps one frame to ``[3, S, S]`` (once per frame, although a frame is
    in up to 4 windows); ``encode`` maps ``[B, 3, 16, S, S]`` to ``[B, D]``, run on
    ``per_batch`` windows at a time. ``on_window(n)`` is told after each batch.
    """
    held: deque[Tensor] = deque(maxlen=VIDEO_WINDOW)
    batch: list[Tensor] = []
    rows: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        held.append(transform(frame))
        if index + 1 >= VIDEO_WINDOW and (index + 1 - VIDEO_WINDOW) % VIDEO_STRIDE == 0:
            batch.append(torch.stack(tuple(held), dim=1))  # [3, 16, S, S]
            if len(batch) == per_batch:
                _run(encode, batch, rows)
                if on_window is not None:
                    on_window(per_batch)
    done = len(batch)
    _run(encode, batch, rows)
    if on_window is not None and done:
        on_window(done)
    return _stack(rows)


def audio_rows(pieces: Iterable[np.ndarray], prepare: Callable[[np.ndarray], Tensor],
               encode: Callable[[Tensor], Tensor], *, per_batch: int = 8) -> np.ndarray:
    """``[T_a, D]`` float32 rows of a 16 kHz mono track given in pieces of any length.

    ``prepare`` maps one window's 16000 samples to the encoder's input (ONE-PEACE
    normalises each window on its own, see :mod:`extractors.onepeace_audio`);
    ``encode`` maps ``[B, 16000]`` to ``[B, D]``.
    """
    held = np.zeros(0, np.float64)
    start = 0  # sample index of held[0] in the track
    next_row = 0  # first sample of the next window
    batch: list[Tensor] = []
    rows: list[np.ndarray] = []
    for piece in pieces:
        held = np.concatenate([held, np.asarray(piece, np.float64)])
        while next_row + AUDIO_WINDOW <= start + len(held):
            off = next_row - start
            batch.append(prepare(held[off:off + AUDIO_WINDOW]))
            next_row += AUDIO_HOP
            if len(batch) == per_batch:
                _run(encode, batch, rows)
        drop = min(next_row - start, len(held))  # samples no later window needs
        held, start = held[drop:], start + drop
    _run(encode, batch, rows)
    return _stack(rows)
