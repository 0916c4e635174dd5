"""Video decoding with PyAV: frames resampled to a fixed rate, streamed.

Frame selection is libavfilter's own ``fps`` filter (the one the published
features went through with ``ffmpeg -filter:v fps=fps=25``), so a 30 fps or
variable-rate source gives the frames ffmpeg would, without re-encoding.
Rotation metadata is honoured like ffmpeg's autorotate. Pixels are converted
to RGB by libswscale (PyAV's default), which matches the reference's decoder.
The video stream is the one ffmpeg would pick (never cover art). A file that
breaks off mid-stream keeps what decoded, with a warning saying how much.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from extractors.media import open_container, pick_video_stream, reason
from weights.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, before decoding it."""

    path: str
    width: int
    height: int
    source_fps: float
    duration: float | None  # seconds, the container's estimate; None when it has none
    has_audio: bool


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    stream = pick_video_stream(container.streams.video)
    if stream is None and not len(container.streams):
        # a damaged index (moov) hides every stream, not only the video
        raise InputError(f"{path}: no stream can be read (damaged or unsupported file)")
    if stream is None:
        raise InputError(f"{path}: has no video stream")
    return stream


def probe(path: str | Path) -> VideoInfo:
    """Read stream facts without decoding; raises InputError for unusable files."""
    with open_container(path) as container:
        stream = _video_stream(container, path)
        if stream.codec_context is None or stream.codec_context.width == 0:
            raise InputError(f"{path}: the video stream cannot be decoded (unknown codec or no size)")
        rate = stream.average_rate or stream.guessed_rate or 0
        duration = None
        if container.duration and container.duration > 0:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base and stream.duration > 0:
            duration = float(stream.duration * stream.time_base)
        return VideoInfo(path=str(path), width=stream.codec_context.width,
                         height=stream.codec_context.height, source_fps=float(rate),
                         duration=duration,
                         has_audio=bool(container.streams.audio))


def _autorotate_filters(rotation: float) -> list[tuple[str, str | None]]:
    """The filters ffmpeg's autorotate inserts for a display-matrix rotation."""
    theta = (-int(round(rotation))) % 360  # ffmpeg's get_rotation() sign convention
    if abs(theta - 90) < 1:
        return [("transpose", "clock")]
    if abs(theta - 180) < 1:
        return [("hflip", None), ("vflip", None)]
    if abs(theta - 270) < 1:
        return [("transpose", "cclock")]
    return []


def iter_frames(path: str | Path, fps: float = 25.0, max_frames: int | None = None
                ) -> Iterator[np.ndarray]:
    """Yield RGB frames ``uint8 [H, W, 3]`` at ``fps`` (ffmpeg ``fps`` filter semantics).

    Streams: memory does not grow with the video's length.
    """
    container = open_container(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        graph = None
        produced = 0
        broken = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if graph is None:
                        graph = _build_graph(stream, frame, fps)
                    graph.push(frame)
                    for out in _drain(graph):
                        yield out
                        produced += 1
                        if max_frames is not None and produced >= max_frames:
                            return
        except av.error.FFmpegError as exc:
            # A broken tail after good frames: keep what decoded, like ffmpeg does,
            # unless nothing decoded at all.
            if produced == 0 and graph is None:
                raise InputError(f"{path}: video cannot be decoded ({reason(exc)})") from exc
            broken = reason(exc)
        if graph is None:
            raise InputError(f"{path}: no video frame could be decoded")
        graph.push(None)
        for out in _drain(graph, eof=True):
            yield out
            produced += 1
            if max_frames is not None and produced >= max_frames:
                return
        if broken is not None:
            log.warning("%s: video decoding stopped after %.2f s (%d frames at %g fps): %s; "
                        "the rest of the file is left out", path, produced / fps, produced, fps, broken)
    finally:
        container.close()


def _build_graph(stream, first_frame: av.VideoFrame, fps: float) -> av.filter.Graph:
    graph = av.filter.Graph()
    time_base = first_frame.time_base or stream.time_base
    src = graph.add_buffer(width=first_frame.width, height=first_frame.height,
                           format=first_frame.format.name, time_base=time_base)
    chain = [src]
    rotation = getattr(first_frame, "rotation", 0) or 0
    for name, args in _autorotate_filters(rotation):
        chain.append(graph.add(name, args))
    rate = Fraction(fps).limit_denominator(1001)
    chain.append(graph.add("fps", f"fps={rate.numerator}/{rate.denominator}"))
    chain.append(graph.add("buffersink"))
    for a, b in zip(chain, chain[1:]):
        a.link_to(b)
    graph.configure()
    return graph


def _drain(graph: av.filter.Graph, eof: bool = False) -> Iterator[np.ndarray]:
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, BlockingIOError):
            return
        except av.error.EOFError:
            return
        yield frame.to_ndarray(format="rgb24")


def resize_short_side(frame: np.ndarray, short: int = 256) -> np.ndarray:
    """PIL bilinear resize so the shorter side is ``short`` and the longer side
    ``int(short * long / short_side)`` (truncated), as the reference does."""
    from PIL import Image

    h, w = frame.shape[:2]
    if h <= w:
        size = (int(short * w / h), short)
    else:
        size = (short, int(short * h / w))
    if (w, h) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def num_frames_estimate(info: VideoInfo, fps: float = 25.0) -> int | None:
    """Frames ``iter_frames`` will give, from the container's duration (None when unknown)."""
    if info.duration is None:
        return None
    return max(0, math.floor(info.duration * fps + 0.5))
