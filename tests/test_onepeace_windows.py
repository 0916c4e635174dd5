"""ONE-PEACE window bookkeeping, exact, with fake encoders that report what they were given.

Every frame carries its index as its pixel value and every sample its index as its
value, so each row says which frames / samples made it: exact integer comparisons.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.onepeace_windows import (
    AUDIO_HOP,
    AUDIO_WINDOW,
    VIDEO_STRIDE,
    VIDEO_WINDOW,
    audio_rows,
    num_rows,
    visual_rows,
)
from extractors.timebase import ONE_PEACE


def _frames(n: int):
    return (np.full((6, 8, 3), i, np.uint8) for i in range(n))


def _transform(frame: np.ndarray) -> torch.Tensor:
    return torch.full((3, 2, 2), float(frame[0, 0, 0]))


def _first_last_frame(x: torch.Tensor) -> torch.Tensor:  # [B, 3, 16, S, S] -> [B, 2]
    return torch.stack([x[:, 0, 0, 0, 0], x[:, 0, -1, 0, 0]], dim=1)


@pytest.mark.parametrize("per_batch", [1, 3, 8])
def test_a_10_s_video_gives_37_rows_each_16_frames_every_4(per_batch):
    told = []
    rows = visual_rows(_frames(160), _transform, _first_last_frame, per_batch=per_batch,
                       on_window=told.append)
    assert rows.shape == (37, 2) and rows.dtype == np.float32
    assert rows.tolist() == [[4 * i, 4 * i + 15] for i in range(37)]
    assert sum(told) == 37
    assert num_rows(160, VIDEO_WINDOW, VIDEO_STRIDE) == 37
    # the time base agrees: row i is centred on (4 i + 8) / 16 s, the last one ends at 10 s
    assert ONE_PEACE.grid_to_seconds(0) == 0.5 and ONE_PEACE.covered_seconds(37) == 10.0


def test_frames_that_fill_no_window_give_no_row():
    assert visual_rows(_frames(15), _transform, _first_last_frame).shape[0] == 0
    assert visual_rows(_frames(16), _transform, _first_last_frame).tolist() == [[0, 15]]
    assert visual_rows(_frames(19), _transform, _first_last_frame).shape[0] == 1
    assert visual_rows(_frames(20), _transform, _first_last_frame).shape[0] == 2


def test_each_frame_is_transformed_once():
    calls = []

    def counting(frame):
        calls.append(int(frame[0, 0, 0]))
        return _transform(frame)

    visual_rows(_frames(40), counting, _first_last_frame)
    assert calls == list(range(40))


def _prepare(window: np.ndarray) -> torch.Tensor:
    assert window.shape == (AUDIO_WINDOW,)
    return torch.from_numpy(window.copy())


def _first_last_sample(x: torch.Tensor) -> torch.Tensor:  # [B, 16000] -> [B, 2]
    return torch.stack([x[:, 0], x[:, -1]], dim=1)


def _pieces(total: int, sizes: list[int]):
    start, k = 0, 0
    while start < total:
        size = sizes[k % len(sizes)]
        yield np.arange(start, min(start + size, total), dtype=np.float64)
        start += size
        k += 1


@pytest.mark.parametrize("sizes", [[160000], [1024], [1, 4000, 77777], [3999, 4001, 16001]])
def test_10_s_of_audio_gives_37_rows_of_1_s_every_quarter_second(sizes):
    rows = audio_rows(_pieces(160000, sizes), _prepare, _first_last_sample, per_batch=5)
    assert rows.shape == (37, 2)
    assert rows.tolist() == [[AUDIO_HOP * i, AUDIO_HOP * i + AUDIO_WINDOW - 1] for i in range(37)]


def test_audio_shorter_than_a_window_gives_no_row():
    assert audio_rows(_pieces(15999, [1000]), _prepare, _first_last_sample).shape[0] == 0
    assert audio_rows(_pieces(16000, [1000]), _prepare, _first_last_sample).shape[0] == 1
    assert audio_rows(_pieces(20000, [7]), _prepare, _first_last_sample).shape[0] == 2
