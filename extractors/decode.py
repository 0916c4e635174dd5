"""Video decoding with PyAV: frames resampled to a fixed rate, streamed.

Frame selection is libavfilter's own ``fps`` filter (the one the published
features went through with ``ffmpeg -filter:v fps=fps=25``), so a 30 fps or
variable-rate source gives the frames ffmpeg would, without re-encoding.
Rotation metadata is honoured like ffmpeg's autorotate. Pixels are converted
to RGB by libswscale (PyAV's default), which matches the reference's decoder.
The video stream is the one ffmpeg would pick (never cover art). A file that
breaks off mid-stream keeps what decoded, with a warning saying how much.

The filter is fed the timestamps the ffmpeg CLI gave it when the reference
features were made (FFmpeg 4.3.1; its CLI code is the same in 5.1, against
whose CLI this is checked), where those differ from what the FFmpeg in the
PyAV wheel (8.x) gives a graph driven from Python:

* End of stream. ``fps`` repeats the last frame up to the end-of-stream
  timestamp, rounded onto the output grid. PyAV's buffer source puts it at the
  last frame's ``pts + duration``; the CLI put it at the last frame's
  timestamp plus its *packet* duration or, when the packet had none, plus one
  frame at the decoder's frame rate (the bitstream's, else the stream's
  average). The old mov/mp4 demuxer gave no packet durations to a stream with
  composition offsets (a ``ctts`` table: B-frames), and gave the last sample
  of other streams the stream's duration minus its dts. So on a B-frame mp4
  the CLI did not hold the last frame for its duration (a 19.62 fps YouTube
  video: 451 frames at 25 fps where PyAV's own end of stream gives 452). The
  last decoded frame is held back and given the duration that puts the end
  where the CLI put it.
* Start. The CLI moves every timestamp by minus the container's start time
  (its ``ts_offset``), which changes the rounding onto the output grid. The
  start time is the one FFmpeg 5.1 reports; they differ for Matroska/WebM,
  whose old demuxer started an audio track at its first packet, before the
  encoder delay (Opus pre-skip, AAC priming) that newer ones skip.
* Output sync. The CLI's default vsync for an mp4 (or raw) output is ``cfr``
  when the input has more than one stream (``vscfr`` for a lone video
  stream): the output then starts at 0, the first frame repeated up to its
  own timestamp (a video track starting 80 ms after its audio gets two more
  copies of its first frame at 25 fps).
* AVI stores no presentation timestamps: frames are timed by their decode
  timestamps, as the CLI's best-effort timestamp did.

Checked frame by frame against Debian's ffmpeg 5.1 CLI on synthetic files
(mp4, mov, mkv, webm, flv, ts, avi; B-frames, variable rates, long last
frames, start offsets, with and without audio) at 25 and 16 fps. Known to
differ still: H.264 with B-frames in AVI, and raw elementary streams (no
timestamps at all: no frames come out).
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
    for _, image in _iter_selected(path, fps, max_frames):
        yield image


def _iter_selected(path: str | Path, fps: float, max_frames: int | None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """``(pts, frame)`` pairs: the frames the ffmpeg CLI writes, each with its timestamp in
    ``1/fps`` units (counted from the container's start, as the CLI counts it)."""
    container = open_container(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        clock = _CliClock(container, stream, _cli_start_time(path, container))
        # The CLI's default vsync is "cfr" for an input of several streams ("vscfr" for a
        # lone video stream): its output then starts at 0, the first frame repeated up to
        # its own timestamp.
        lead = 0 if len(container.streams) > 1 else None
        graph = held = broken = None
        produced = 0

        def ready() -> Iterator[tuple[int, np.ndarray]]:
            nonlocal lead
            for pts, image in _drain(graph):
                if lead is not None:
                    for k in range(lead, pts):
                        yield k, image.copy()
                    lead = None
                yield pts, image

        try:
            for packet in container.demux(stream):
                clock.see(packet)
                for frame in packet.decode():
                    if graph is None:
                        graph = _build_graph(stream, frame, fps)
                    clock.shift(frame)
                    if held is not None:  # not the last frame: its duration does not matter
                        graph.push(held)
                        for out in ready():
                            yield out
                            produced += 1
                            if max_frames is not None and produced >= max_frames:
                                return
                    held = frame
        except av.error.FFmpegError as exc:
            # A broken tail after good frames: keep what decoded, like ffmpeg does,
            # unless nothing decoded at all.
            if produced == 0 and graph is None:
                raise InputError(f"{path}: video cannot be decoded ({reason(exc)})") from exc
            broken = reason(exc)
        if graph is None:
            raise InputError(f"{path}: no video frame could be decoded")
        clock.end_with(held, complete=broken is None and clock.read_to_the_end)
        graph.push(held)
        graph.push(None)  # the buffer source puts EOF at the last frame's pts + duration
        for out in ready():
            yield out
            produced += 1
            if max_frames is not None and produced >= max_frames:
                return
        if broken is not None:
            log.warning("%s: video decoding stopped after %.2f s (%d frames at %g fps): %s; "
                        "the rest of the file is left out", path, produced / fps, produced, fps, broken)
    finally:
        container.close()


_AV_TIME_BASE = Fraction(1, 1_000_000)


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """FFmpeg's ``av_rescale_q``: ``value`` in ``src`` units to ``dst`` units, rounded to the
    nearest, halves away from zero."""
    num = value * src.numerator * dst.denominator
    den = src.denominator * dst.numerator
    q, r = divmod(abs(num), den)
    q += 2 * r >= den
    return q if num >= 0 else -q


_START_PACKETS = 1000  # packets read for the streams' first timestamps (FFmpeg's probe reads fewer)


def _cli_start_time(path: str | Path, container: av.container.InputContainer) -> int:
    """The container's start time (microseconds) as FFmpeg 4.3-5.1 reported it.

    Their Matroska/WebM demuxer started an audio stream at its first packet, before the
    encoder delay (Opus pre-skip, AAC priming) that newer ones skip: e.g. -7 ms for a WebM
    with Opus where the FFmpeg in PyAV says 0. Elsewhere the two agree.
    """
    if "matroska" not in (container.format.name or "").split(","):
        return container.start_time or 0
    firsts: dict[int, int] = {}
    with open_container(path) as probe_container:
        wanted = [s for s in probe_container.streams if s.type in ("audio", "video")]
        try:
            for n, packet in enumerate(probe_container.demux(wanted)):
                stream = packet.stream
                if packet.pts is not None and stream.index not in firsts:
                    firsts[stream.index] = _rescale(packet.pts, stream.time_base, _AV_TIME_BASE)
                if len(firsts) == len(wanted) or n >= _START_PACKETS:
                    break
        except av.error.FFmpegError:
            pass  # a damaged file: what was read (the decoder reports the damage)
    return min(firsts.values(), default=container.start_time or 0)


class _CliClock:
    """Frame timestamps as the ffmpeg CLI of FFmpeg 4.3 to 5.1 gave them to its filter graph
    (the module docstring says why).

    :meth:`shift` moves a frame by minus the container's start time (the CLI's ``ts_offset``);
    :meth:`end_with` sets the last frame's ``duration`` so that ``pts + duration`` is the end
    of stream the CLI gave the filter.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 start_time: int):
        self._stream = stream
        self._offset = -start_time  # microseconds
        formats = (container.format.name or "").split(",")
        self._mov = "mov" in formats
        self._avi = "avi" in formats
        self._ctts = False  # composition offsets seen (B-frames: pts != dts)
        self._last_dts = None
        self._packets = 0

    @property
    def read_to_the_end(self) -> bool:
        """Every sample the index lists was read (a cut-off file's index lists more)."""
        return not self._stream.frames or self._packets >= self._stream.frames

    def see(self, packet: av.Packet) -> None:
        if packet.size:
            self._packets += 1
        if packet.dts is not None:
            self._last_dts = packet.dts
            if packet.pts is not None and packet.pts != packet.dts:
                self._ctts = True

    def shift(self, frame: av.VideoFrame) -> None:
        if self._avi and frame.dts is not None:
            frame.pts = frame.dts  # AVI has no pts: FFmpeg 5.1 timed its frames by their dts
        if frame.pts is not None and self._offset:
            frame.pts += _rescale(self._offset, _AV_TIME_BASE, frame.time_base or self._stream.time_base)

    def _packet_duration(self, frame: av.VideoFrame, complete: bool) -> int:
        """The last frame's packet duration as FFmpeg 4.3-5.1 demuxed it (0: none).
        ``complete``: the stream was read to its end (not cut off by damage)."""
        if not self._mov:
            return frame.duration or 0
        if self._ctts:
            return 0  # their mov demuxer set no duration where a ctts table gives the pts
        if not complete:  # a damaged file's last readable sample is not the index's last
            return frame.duration or 0
        # ... and gave the last sample the stream's duration minus its dts
        if self._stream.duration is None or self._last_dts is None:
            return 0
        return max(0, self._stream.duration - self._last_dts)

    def _frame_period_us(self) -> int:
        """One frame at the decoder's frame rate (the stream's average rate unless the
        decoder found one in the bitstream), in microseconds, as the CLI counted it."""
        rate = self._stream.codec_context.framerate or self._stream.average_rate
        if not rate:
            return 0
        return (1_000_000 * rate.denominator) // rate.numerator

    def end_with(self, frame: av.VideoFrame, complete: bool = True) -> None:
        if frame.pts is None:
            return
        tb = frame.time_base or self._stream.time_base
        end = _rescale(frame.pts, tb, _AV_TIME_BASE)
        duration = self._packet_duration(frame, complete)
        end += _rescale(duration, tb, _AV_TIME_BASE) if duration > 0 else self._frame_period_us()
        frame.duration = _rescale(end, _AV_TIME_BASE, tb) - frame.pts


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


def _drain(graph: av.filter.Graph) -> Iterator[tuple[int, np.ndarray]]:
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, BlockingIOError):
            return
        except av.error.EOFError:
            return
        yield frame.pts, frame.to_ndarray(format="rgb24")


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
