"""Videos longer than a detector's input: overlapping windows merged by Soft-NMS.

CCNet's MTGC block has Linear layers over the time axis sized by
``max_seq_len``, so the official model only runs inputs of exactly that many
steps (224 = 71.7 s for I3D features). The UnAV baseline runs longer inputs
by interpolating its positional embedding, but attention cost grows with the
square of the length and the model never saw such lengths in training.

Method: windows of ``max_seq_len`` steps with a hop of half a window, the
last one aligned to the end of the video, so every step lies inside at least
one window and away from a window border in at least one of them. Each window
is run exactly like a short video; its candidates (grid units, before NMS)
are shifted to the global grid and pooled; one multi-class Soft-NMS over the
pool merges the duplicates that the overlap produces. The event cap grows with
the number of windows (100 per window by default) so an hour of video is not
limited to the 100 events the official code keeps for a ~1 minute clip.
"""
from __future__ import annotations

import numpy as np


def window_starts(num_steps: int, length: int, hop: int | None = None) -> list[int]:
    """Start steps of the windows covering ``[0, num_steps)``."""
    if num_steps <= length:
        return [0]
    hop = hop or max(1, length // 2)
    starts = list(range(0, num_steps - length + 1, hop))
    if starts[-1] + length < num_steps:
        starts.append(num_steps - length)
    return starts


def shift_candidates(segments: np.ndarray, start: int) -> np.ndarray:
    """Window-local grid units -> global grid units."""
    return segments + np.float32(start)
