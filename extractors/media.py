"""Opening media files with PyAV and choosing their streams (shared by video and audio).

One place decides what "cannot be opened" means and which stream of a
container is the video or the audio, so both decoders agree on a file.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import av

from weights.errors import InputError

# File suffixes taken as videos when a folder is searched, and stripped from a
# file name to get a video id (ids of users' own data may hold other dots).
VIDEO_SUFFIXES = frozenset((".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg",
                            ".flv", ".wmv", ".ts", ".3gp", ".ogv"))


def reason(exc: BaseException) -> str:
    """The first line of an FFmpeg error (its strerror when it has one)."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` for reading; InputError (one line) when it is missing, a folder, not a
    regular file, empty or unreadable."""
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise InputError(f"{p}: broken symbolic link (its target {os.readlink(p)} does not exist)")
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a video")
    if not p.is_file():
        # FFmpeg would wait forever for a writer on a named pipe
        raise InputError(f"{p}: not a regular file (a pipe, socket or device)")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file (0 bytes)")
    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InputError(f"{p}: cannot be opened as a media file ({reason(exc)})") from exc


def _is_attached_picture(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def pick_video_stream(streams: Iterable[av.video.stream.VideoStream]) -> av.video.stream.VideoStream | None:
    """ffmpeg's automatic choice, simplified: never cover art (an attached picture),
    then a default-flagged stream, then the most pixels, then the first."""
    best, best_key = None, None
    for s in streams:
        if _is_attached_picture(s):
            continue
        ctx = s.codec_context
        pixels = (ctx.width or 0) * (ctx.height or 0) if ctx is not None else 0
        key = (bool(s.disposition & av.stream.Disposition.default), pixels)
        if best is None or key > best_key:
            best, best_key = s, key
    return best


def pick_audio_stream(streams: Iterable[av.audio.stream.AudioStream]) -> av.audio.stream.AudioStream | None:
    """ffmpeg's automatic choice, simplified: a default-flagged stream first, then
    the most channels, then the first."""
    best, best_key = None, None
    for s in streams:
        key = (bool(s.disposition & av.stream.Disposition.default), s.codec_context.channels)
        if best is None or key > best_key:
            best, best_key = s, key
    return best
