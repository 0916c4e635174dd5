"""Feature index <-> seconds: the one place that knows a feature step's length.

Features made by :mod:`extractors` use :data:`I3D_VGGISH`; :data:`ONE_PEACE` is
the time base of the pre-extracted ONE-PEACE features the LoCo paper uses.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimeBase:
    """How feature steps map to video time.

    Feature step ``i`` covers frames ``[stride * i, stride * i + window)`` at
    ``fps``; the detectors' grid unit is one step and a grid position ``g``
    stands for the centre of that window.
    """

    fps: float = 25.0
    stride: int = 8
    window: int = 24

    @property
    def step_seconds(self) -> float:
        return self.stride / self.fps

    def grid_to_seconds(self, g):  # noqa: ANN001 - floats, numpy arrays and tensors alike
        """Grid position(s) -> seconds (window centre); works on floats, arrays and tensors."""
        return (g * self.stride + 0.5 * self.window) / self.fps

    def seconds_to_grid(self, s):  # noqa: ANN001 - as grid_to_seconds
        return (s * self.fps - 0.5 * self.window) / self.stride

    def covered_seconds(self, num_steps: int) -> float:
        """Span of video that ``num_steps`` feature rows cover."""
        if num_steps <= 0:
            return 0.0
        return (self.stride * (num_steps - 1) + self.window) / self.fps

    def num_steps(self, num_frames: int) -> int:
        """Feature rows from ``num_frames`` frames: a row needs ``window + 1`` frames
        (the flow stream needs one frame more than the RGB stream)."""
        need = self.window + 1
        return 0 if num_frames < need else (num_frames - need) // self.stride + 1

    def as_dict(self) -> dict:
        return {"fps": self.fps, "stride": self.stride, "window": self.window}

    @classmethod
    def from_dict(cls, d: dict) -> TimeBase:
        return cls(float(d["fps"]), int(d["stride"]), int(d["window"]))

    @classmethod
    def parse(cls, text: str) -> TimeBase:
        """``i3d-vggish``, ``one-peace``, or ``FPS,STRIDE,WINDOW`` (e.g. ``16,4,16``)."""
        named = {"i3d-vggish": I3D_VGGISH, "one-peace": ONE_PEACE}
        if text.lower() in named:
            return named[text.lower()]
        try:
            fps, stride, window = text.split(",")
            tb = cls(float(fps), int(stride), int(window))
        except ValueError as exc:
            raise ValueError(f"time base {text!r}: use i3d-vggish, one-peace or FPS,STRIDE,WINDOW") from exc
        if tb.fps <= 0 or tb.stride < 1 or tb.window < 1:
            raise ValueError(f"time base {text!r}: fps, stride and window must be positive")
        return tb


I3D_VGGISH = TimeBase(25.0, 8, 24)
ONE_PEACE = TimeBase(16.0, 4, 16)
