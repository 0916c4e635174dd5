"""The window assembler's bookkeeping (extractors/visual.py), exactly, with fake networks.

Window k must take RGB frames 8k .. 8k+23 and the flow fields of the pairs
(8k + t, 8k + t + 1), t = 0..23; each field must be computed once and shared by
the (up to three) windows that use it. The whole-file parity test cannot see a
shift of one window or one frame (the stand-in flow I3D maps every clip to
nearly the same vector), so this test makes every frame and every field carry
its own index and reads the indices back from what the fake I3D receives.
Kind (see tests/helpers.py): exact by construction (integer indices through
integer quantisation).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.flow_transform import QUANT_CENTRE, QUANT_SCALE
from extractors.visual import VisualFeatureExtractor

H, W = 128, 160  # already at the short side: the frames are not resized
CROP = 64


class PairIndexFlow:
    """RAFT stand-in: the field of pair (i, j) holds i in channel 0 and j in channel 1,
    as the flow values that quantise to exactly those integers."""

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def __call__(self, frames1: torch.Tensor, frames2: torch.Tensor) -> torch.Tensor:
        first = frames1[:, 0].flatten(1).mean(1).round().long()   # the frames' own index
        second = frames2[:, 0].flatten(1).mean(1).round().long()
        self.pairs += list(zip(first.tolist(), second.tolist()))
        field = torch.empty(len(first), 2, *frames1.shape[-2:])
        field[:, 0] = ((first.float() - QUANT_CENTRE) / QUANT_SCALE)[:, None, None]
        field[:, 1] = ((second.float() - QUANT_CENTRE) / QUANT_SCALE)[:, None, None]
        return field


class InputRecorder:
    """I3D stand-in: keeps every clip it is given ([B, C, T, H, W] in [-1, 1]) as integers."""

    def __init__(self) -> None:
        self.clips: list[np.ndarray] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        values = torch.round((x + 1) * 255 / 2).long()  # undo 2 x / 255 - 1
        self.clips += [c.numpy() for c in values]
        return torch.zeros(x.shape[0], 1024)


def frames(n: int):
    for i in range(n):
        yield np.full((H, W, 3), i, np.uint8)


@pytest.mark.parametrize("per_batch", [1, 2, 8])
@pytest.mark.parametrize("n_frames", [25, 73, 79])
def test_each_window_gets_its_frames_and_fields(per_batch, n_frames):
    flow, rgb_i3d, flow_i3d = PairIndexFlow(), InputRecorder(), InputRecorder()
    visual = VisualFeatureExtractor(flow, rgb_i3d, flow_i3d, windows_per_batch=per_batch,
                                    short_side=H, crop=CROP)
    windows = []
    rgb, flw = visual(frames(n_frames), on_window=windows.append)
    expected = (n_frames - 25) // 8 + 1
    assert rgb.shape == flw.shape == (expected, 1024) and sum(windows) == expected
    assert len(rgb_i3d.clips) == len(flow_i3d.clips) == expected
    for k in range(expected):
        want = np.arange(8 * k, 8 * k + 24)
        clip = rgb_i3d.clips[k]                       # [3, 24, crop, crop]
        assert clip.shape == (3, 24, CROP, CROP)
        np.testing.assert_array_equal(clip[0, :, 0, 0], want)
        assert (clip == clip[:, :, :1, :1]).all()     # a whole frame each, never a mix
        field = flow_i3d.clips[k]                     # [2, 24, crop, crop]
        np.testing.assert_array_equal(field[0, :, 0, 0], want)      # pair (8k + t, ...
        np.testing.assert_array_equal(field[1, :, 0, 0], want + 1)  # ... 8k + t + 1)
    # every field computed exactly once, and only the ones some window needs
    needed = sorted({(i, i + 1) for k in range(expected) for i in range(8 * k, 8 * k + 24)})
    assert sorted(flow.pairs) == needed and len(flow.pairs) == len(set(flow.pairs))


def test_no_flow_mode_keeps_the_rgb_windows():
    rgb_i3d = InputRecorder()
    visual = VisualFeatureExtractor(None, rgb_i3d, None, windows_per_batch=3, short_side=H, crop=CROP)
    rgb, flw = visual(frames(41))
    assert rgb.shape == flw.shape == (3, 1024) and not flw.any()
    assert [c[0, 0, 0, 0] for c in rgb_i3d.clips] == [0, 8, 16]


def test_too_few_frames_give_no_rows():
    rgb, flw = VisualFeatureExtractor(PairIndexFlow(), InputRecorder(), InputRecorder(),
                                      short_side=H, crop=CROP)(frames(24))
    assert rgb.shape == flw.shape == (0, 1024)
