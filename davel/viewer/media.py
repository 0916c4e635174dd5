"""The videos behind results: find them, check they decode, take thumbnails (PyAV)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from davel.results import video_id_from_name
from davel.viewer.errors import VideoError
from extractors.media import open_container, pick_video_stream, reason

#: MIME types browsers know for the containers `davel` reads; others play as mp4 or not at all.
MIME_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
              ".webm": "video/webm", ".mkv": "video/x-matroska", ".ogv": "video/ogg",
              ".ogg": "video/ogg"}
#: Codecs a current Chromium / Firefox / Safari can play in a <video> element.
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1", "theora"}


@dataclass(frozen=True)
class VideoProbe:
    """What a decodable video is: size, codec and duration (container estimate)."""

    path: Path
    width: int
    height: int
    codec: str
    duration: float | None


def _open(path: Path):
    """The container and its video stream (the one the extractor would take)."""
    from davel.errors import InputError

    if not path.exists():
        raise VideoError(f"{path}: no such video file")
    try:
        container = open_container(path)
    except InputError as exc:
        raise VideoError(str(exc)) from exc
    stream = pick_video_stream(container.streams.video)
    if stream is None:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container, stream


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Open ``path`` and decode its first frame; :class:`VideoError` if it cannot be."""
    import av

    p = Path(path)
    container, stream = _open(p)
    try:
        try:
            frame = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"{p}: cannot decode video ({reason(exc)})") from exc
        if frame is None:
            raise VideoError(f"{p}: no video frames")
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        codec = stream.codec_context.codec
        return VideoProbe(p, frame.width, frame.height, getattr(codec, "canonical_name", codec.name), duration)
    finally:
        container.close()


def thumbnails(path: str | os.PathLike, times: Sequence[float], height: int = 96) -> list[np.ndarray]:
    """RGB frames (``height`` pixels high) shown at each of ``times`` (seconds, ascending).

    One seek per time, so a long video costs as much as a short one; the frame
    taken is the first whose time is at or past the target (the last one at EOF).
    """
    import av

    p = Path(path)
    container, stream = _open(p)
    out: list[np.ndarray] = []
    try:
        stream.thread_type = "AUTO"
        base = float(stream.time_base) if stream.time_base else 1 / 1_000_000
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for t in times:
            target = start + max(0.0, float(t))
            frame = None
            try:
                container.seek(int(target / base), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time >= target - base:
                        break
            except (av.error.FFmpegError, ValueError) as exc:
                raise VideoError(f"{p}: cannot decode video ({reason(exc)})") from exc
            if frame is None:
                if not out:
                    raise VideoError(f"{p}: no video frames")
                out.append(out[-1])
                continue
            width = max(2, round(frame.width * height / max(1, frame.height) / 2) * 2)
            out.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
    finally:
        container.close()
    return out


def mime_type(path: str | os.PathLike) -> str:
    """The MIME type a ``<video>`` element should be told for ``path``."""
    return MIME_TYPES.get(Path(path).suffix.lower(), "video/mp4")


def _candidates(given: Sequence[Path], name: str) -> list[Path]:
    vid = video_id_from_name(name)
    base = Path(name.replace("\\", "/")).name
    found = []
    for g in given:
        if g.is_dir():
            found += [g / base] if (g / base).is_file() else [
                f for f in sorted(g.iterdir()) if f.is_file() and video_id_from_name(f.name) == vid]
        elif video_id_from_name(g.name) == vid:
            found.append(g)
    return found


def resolve_videos(results: Sequence[Mapping], given: Sequence[str | os.PathLike] = (),
                   result_file: str | os.PathLike | None = None,
                   required: bool = False) -> list[Path | None]:
    """The video file of each result.

    ``given`` (``--video``, repeatable) holds files or folders: a result takes the
    file with its video's id, or the one file given when there is one result.
    Without ``given`` a result's own ``video`` path is tried as is, then next to
    ``result_file``. A result with no file found gets None, or a
    :class:`VideoError` when ``required``.
    """
    paths = [Path(g) for g in given]
    for p in paths:
        if not p.exists():
            raise VideoError(f"{p}: no such video file or folder")
    out: list[Path | None] = []
    for r in results:
        name = r["video"]
        if paths:
            found = _candidates(paths, name)
            if not found and len(results) == 1 and len(paths) == 1 and paths[0].is_file():
                found = paths  # one video, one result: the names need not agree
        else:
            own = Path(name)
            found = [own] if own.is_file() else []
            if not found and result_file is not None and not own.is_absolute():
                beside = Path(result_file).parent / own
                found = [beside] if beside.is_file() else []
        if not found and required:
            where = "among the --video paths" if paths else "(pass it with --video)"
            raise VideoError(f"no video file for {name} {where}")
        out.append(found[0] if found else None)
    return out
