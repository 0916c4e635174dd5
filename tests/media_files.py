"""Small synthetic media files for tests, written with PyAV (no ffmpeg binary)."""
from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H = 320, 240


def index_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """An RGB frame whose 8 top blocks spell ``i`` in binary (robust to lossy coding)."""
    img = np.full((h, w, 3), 64, np.uint8)
    bw = w // 8
    for b in range(8):
        if (i >> b) & 1:
            img[: h // 3, b * bw:(b + 1) * bw] = 255
        else:
            img[: h // 3, b * bw:(b + 1) * bw] = 0
    img[h // 2:, :, 1] = (i * 5) % 256
    return img


def read_index(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    bw = w // 8
    return sum(1 << b for b in range(8) if frame[: h // 3, b * bw:(b + 1) * bw].mean() > 127)


def encode_frames(container, stream, frames: Iterable[np.ndarray]) -> None:
    """Encode RGB ``frames`` into ``stream`` and flush it (every packet muxed)."""
    for img in frames:
        for p in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def encode_silence(container, stream, blocks: int) -> None:
    """``blocks`` frames of 1024 silent mono samples at 44.1 kHz, then a flush."""
    for k in range(blocks):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 1024 * k
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def write_with_cover_art(path: Path, art: tuple[int, int] = (64, 64), audio_blocks: int = 20,
                         video_frames: int = 0, size: tuple[int, int] = (W, H)) -> Path:
    """An mp4/m4a whose first "video" stream is an attached picture (cover art, ``art`` = w, h),
    with ``audio_blocks`` of silence (none: no audio stream) and, when ``video_frames`` > 0, a
    real video stream of index frames as well."""
    c = av.open(str(path), "w", format="mp4")
    pic = c.add_stream("mjpeg", rate=1)
    pic.width, pic.height, pic.pix_fmt = *art, "yuvj420p"
    pic.disposition = av.stream.Disposition.attached_pic
    v = None
    if video_frames:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = *size, "yuv420p"
    a = c.add_stream("aac", rate=44100) if audio_blocks else None
    encode_frames(c, pic, [np.full((art[1], art[0], 3), 200, np.uint8)])
    if v is not None:
        encode_frames(c, v, (index_frame(i, *size) for i in range(video_frames)))
    if a is not None:
        encode_silence(c, a, audio_blocks)
    c.close()
    return Path(path)


def write_video(path: Path, n: int, fps: float = 25, durations_ms: list[int] | None = None,
                audio: str | None = "aac", seconds_audio: float | None = None,
                size: tuple[int, int] = (W, H), codec: str = "libx264", pix_fmt: str = "yuv420p",
                audio_rate: int | None = None, layout: str = "stereo", fmt: str | None = None,
                options: dict | None = None) -> Path:
    """``n`` index frames at ``fps`` (or variable: per-frame durations in ms cycling),
    with an optional audio track (a tone) in ``audio`` codec, at ``audio_rate`` Hz
    (default 44.1 kHz, 48 kHz for Opus) in channel ``layout``; ``n=0``: audio only.
    ``fmt`` and ``options`` go to the muxer (e.g. ``{"movflags": "faststart"}``)."""
    c = av.open(str(path), "w", format=fmt, options=options or {})
    s = None
    if n:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height = size
        s.pix_fmt = pix_fmt
    if s is not None and codec == "libx264":
        s.options = {"crf": "12", "preset": "ultrafast"}
    if s is not None and durations_ms:
        s.codec_context.time_base = Fraction(1, 1000)
    a = None
    if audio:
        a = c.add_stream(audio, rate=audio_rate or (44100 if audio != "libopus" else 48000))
        a.layout = layout
    t = 0
    for i in range(n):
        f = av.VideoFrame.from_ndarray(index_frame(i, *size), format="rgb24")
        if durations_ms:
            f.pts, f.time_base = t, Fraction(1, 1000)
            t += durations_ms[i % len(durations_ms)]
        for p in s.encode(f):
            c.mux(p)
    if s is not None:
        for p in s.encode():
            c.mux(p)
    if a is not None:
        sr = a.rate
        total = int(sr * (seconds_audio if seconds_audio is not None else n / fps))
        tt = np.arange(total) / sr
        wave = (0.3 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)
        sample_fmt = a.codec_context.format.name if a.codec_context.format else "fltp"
        channels = a.codec_context.layout.nb_channels
        step = a.codec_context.frame_size or 1024
        pts = 0
        for k in range(0, total, step):
            chunk = np.stack([wave[k:k + step]] * channels)
            if sample_fmt.startswith("s16"):
                chunk = (chunk * 32767).astype(np.int16)
            elif sample_fmt.startswith("s32"):
                chunk = (chunk * 2147483647).astype(np.int32)
            packed = chunk.T.reshape(1, -1).copy()
            frame = av.AudioFrame.from_ndarray(chunk if sample_fmt.endswith("p") else packed,
                                               format=sample_fmt, layout=layout)
            frame.sample_rate, frame.pts = sr, pts
            pts += chunk.shape[1]
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()
    return Path(path)


def write_timed_video(path: Path, durations: list[int], time_base: Fraction = Fraction(1, 1000),
                      start: int = 0, bframes: int = 0, audio: bool = False,
                      size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    """Index frames (H.264) whose timestamps start at ``start`` and whose packets carry the
    given ``durations`` (both in ``time_base`` units), so the last frame can be long;
    ``bframes`` > 0 gives composition offsets (an mp4 ``ctts`` table); ``audio``: a silent AAC
    track starting at 0 (a second stream)."""
    c = av.open(str(path), "w", format=fmt)
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = *size, "yuv420p"
    s.options = {"crf": "12", "preset": "ultrafast", "bf": str(bframes)}
    s.codec_context.time_base = time_base
    a = None
    if audio:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
    pts = [start + sum(durations[:i]) for i in range(len(durations))]
    duration_of = dict(zip(pts, durations))

    def mux(packets):
        for p in packets:
            p.duration = duration_of[p.pts]
            c.mux(p)

    for i, t in enumerate(pts):
        frame = av.VideoFrame.from_ndarray(index_frame(i, *size), format="rgb24")
        frame.pts, frame.time_base = t, time_base
        mux(s.encode(frame))
    mux(s.encode())
    if a is not None:
        end = float((pts[-1] + durations[-1]) * time_base)
        encode_silence(c, a, int(end * 44100) // 1024)
    c.close()
    return Path(path)
