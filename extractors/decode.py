"""Video decoding with PyAV: frames resampled to a fixed rate, streamed.

Frame selection is libavfilter's own ``fps`` filter (the one the published
features went through with ``ffmpeg -filter:v fps=fps=25``), so a 30 fps or
variable-rate source gives the frames ffmpeg would, without re-encoding.
Rotation metadata is honoured like ffmpeg's autorotate. Pixels are converted
to RGB by libswscale (PyAV's default), which matches the reference's decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from davel.errors import InputError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, before decoding it."""

    path: str
    width: int
    height: int
    source_fps: float
    duration: float  # seconds, container estimate
    has_audio: bool


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a video")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InputError(f"{p}: cannot be opened as a video ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def probe(path: str | Path) -> VideoInfo:
    """Read stream facts without decoding; raises InputError for unusable files."""
    with _open(path) as container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None or stream.codec_context.width == 0:
            raise InputError(f"{path}: the video stream cannot be decoded (unknown codec or no size)")
        rate = stream.average_rate or stream.guessed_rate or 0
        if container.duration:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = 0.0
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
    container = _open(path)
    try:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        graph = None
        produced = 0
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
                raise InputError(f"{path}: video cannot be decoded ({_reason(exc)})") from None
        if graph is None:
            raise InputError(f"{path}: no video frame could be decoded")
        graph.push(None)
        for out in _drain(graph, eof=True):
            yield out
            produced += 1
            if max_frames is not None and produced >= max_frames:
                return
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


def num_frames_estimate(info: VideoInfo, fps: float = 25.0) -> int:
    return max(0, math.floor(info.duration * fps + 0.5))
