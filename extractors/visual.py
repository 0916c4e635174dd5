"""The visual stream: 25 fps frames -> I3D RGB and flow features, one row per 8 frames.

Window ``k`` uses frames ``[8k, 8k + 25)``: RGB takes the first 24, the flow
stream the 24 RAFT fields between consecutive frames. Windows overlap by two
thirds, so each flow field is computed once and kept (quantised and cropped,
which is all I3D needs) until the last window that uses it has run. At most
``window + 1 + stride * windows_per_batch`` frames are held at a time: memory
does not grow with the video's length.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
import torch

from extractors import memory
from extractors.decode import resize_short_side
from extractors.flow_transform import crop_offset, quantise_flow
from extractors.i3d import I3D, flow_to_i3d_input, rgb_to_i3d_input
from extractors.raft import FlowEstimator, pad_frames
from extractors.timebase import I3D_VGGISH, TimeBase


class VisualFeatureExtractor:
    """Frames in, ``(rgb [T, 1024], flow [T, 1024])`` float32 out.

    With ``flow=None`` RAFT and the flow I3D are skipped and the flow rows are
    zeros (the fast non-standard ``--no-flow`` mode).
    """

    def __init__(self, flow: FlowEstimator | None, i3d_rgb: I3D, i3d_flow: I3D | None,
                 device: torch.device | str = "cpu", timebase: TimeBase = I3D_VGGISH,
                 windows_per_batch: int = 2, short_side: int = 256, crop: int = 224):
        self.flow = flow
        self.i3d_rgb = i3d_rgb
        self.i3d_flow = i3d_flow
        self.device = torch.device(device)
        self.stride = timebase.stride
        self.window = timebase.window
        self.windows_per_batch = max(1, windows_per_batch)
        self.short_side = short_side
        self.crop = crop

    def __call__(self, frames: Iterable[np.ndarray],
                 on_window: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        stride, window = self.stride, self.window
        held: deque[np.ndarray] = deque()  # resized frames, held[0] is frame `first`
        first = 0
        fields: dict[int, np.ndarray] = {}  # pair i (frames i, i+1) -> quantised crop [2, 224, 224]
        ready: list[int] = []
        rows_rgb: list[np.ndarray] = []
        rows_flow: list[np.ndarray] = []
        next_window = 0

        def run_ready() -> None:
            nonlocal first
            self._compute_fields(ready, held, first, fields)
            rgb, flw = self._i3d(ready, held, first, fields)
            rows_rgb.append(rgb)
            rows_flow.append(flw)
            if on_window:
                on_window(len(ready))
            # Drop what no later window needs: window k+1 starts at frame 8(k+1).
            keep_from = (ready[-1] + 1) * stride
            while first < keep_from and held:
                held.popleft()
                first += 1
            for i in [i for i in fields if i < keep_from]:
                del fields[i]
            ready.clear()

        for n, frame in enumerate(frames):
            held.append(resize_short_side(frame, self.short_side))
            if n == next_window * stride + window:  # frame 8k + 24 completes window k
                ready.append(next_window)
                next_window += 1
                if len(ready) >= self.windows_per_batch:
                    run_ready()
        if ready:
            run_ready()
        if not rows_rgb:
            return np.zeros((0, 1024), np.float32), np.zeros((0, 1024), np.float32)
        return np.concatenate(rows_rgb), np.concatenate(rows_flow)

    def _compute_fields(self, windows: list[int], held: deque, first: int,
                        fields: dict[int, np.ndarray]) -> None:
        need = sorted({i for k in windows for i in range(k * self.stride, k * self.stride + self.window)}
                      - fields.keys())
        if not need or self.flow is None:
            return
        frames = torch.from_numpy(np.stack([held[i - first] for i in range(need[0], need[-1] + 2)]))
        padded = pad_frames(frames.permute(0, 3, 1, 2).float())
        index = torch.tensor(need) - need[0]
        with memory.network_pass():
            flow = self.flow(padded[index], padded[index + 1])  # [P, 2, Hp, Wp]
        quantised = quantise_flow(flow.cpu(), self.crop).numpy()
        for j, i in enumerate(need):
            fields[i] = quantised[j]

    @torch.inference_mode()
    def _i3d(self, windows: list[int], held: deque, first: int,
             fields: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        h, w = held[0].shape[:2]
        c = self.crop
        y, x = crop_offset((h, w), c)
        rgb = np.stack([np.stack([held[i - first][y:y + c, x:x + c]
                                  for i in range(k * self.stride, k * self.stride + self.window)])
                        for k in windows])  # [B, 24, 224, 224, 3]
        rgb_in = torch.cat([rgb_to_i3d_input(torch.from_numpy(r)) for r in rgb]).to(self.device)
        with memory.network_pass():
            rgb_rows = self.i3d_rgb.features(rgb_in).float().cpu().numpy()
        if self.flow is None:
            return rgb_rows, np.zeros_like(rgb_rows)
        flw = np.stack([np.stack([fields[i] for i in range(k * self.stride, k * self.stride + self.window)])
                        for k in windows])  # [B, 24, 2, crop, crop]
        flow_in = torch.cat([flow_to_i3d_input(torch.from_numpy(f)) for f in flw]).to(self.device)
        with memory.network_pass():
            return rgb_rows, self.i3d_flow.features(flow_in).float().cpu().numpy()
