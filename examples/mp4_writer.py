"""The H.264 + AAC mp4 the benchmark scripts write their synthetic videos into (PyAV,
no ffmpeg binary)."""
from __future__ import annotations

from pathlib import Path

import av


def open_h264_aac(path: Path, width: int, height: int, fps: int, sample_rate: int,
                  layout: str = "mono", crf: int = 18):
    """An mp4 open for writing with a libx264 (ultrafast, ``crf``) and an AAC stream:
    ``(container, video stream, audio stream)``. The caller encodes, flushes and closes."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"crf": str(crf), "preset": "ultrafast"}
    audio = container.add_stream("aac", rate=sample_rate)
    audio.layout = layout
    return container, video, audio
