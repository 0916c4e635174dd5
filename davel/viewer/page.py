"""`davel view`: one self-contained HTML page to play a video and browse its events.

The page is the template ``assets/page.html`` with ``viewer.css`` and
``viewer.js`` inlined and the results embedded as JSON in a non-executed
``<script type="application/json">``; the script reads it and builds every
element through the DOM, so names from users' files are only ever text. Its
Content-Security-Policy allows no network access and runs only the one inline
script (pinned by hash), so even an injected handler could not run.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from davel.errors import OutputError
from davel.viewer import style
from davel.viewer.errors import VideoError
from davel.viewer.files import check_writable, write_atomic
from davel.viewer.media import BROWSER_CODECS, mime_type, probe_video, resolve_videos
from davel.viewer.results import (
    ResultSource,
    filter_events,
    ground_truth_for,
    lane_key,
    lanes,
    load_annotations,
    load_results,
    video_id,
)

log = logging.getLogger(__name__)

#: Largest total video size ``--embed`` inlines: past it, a page gets slow to open.
EMBED_LIMIT_MB = 50.0
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def asset(name: str) -> str:
    """Text of a file in ``davel/viewer/assets`` (package data)."""
    return resources.files("davel.viewer").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """``data`` as JSON that cannot end its ``<script>`` element or open a comment in it.

    ``<``, ``>`` and ``&`` only occur inside JSON strings, where ``\\u003c``
    etc. mean the same characters to ``JSON.parse``.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _link(video: Path, page_dir: Path) -> str:
    """URL of ``video`` relative to the page's folder, so the pair can move together."""
    try:
        rel = os.path.relpath(video.resolve(), page_dir.resolve())
    except ValueError:  # another drive on Windows: only an absolute URL works
        return video.resolve().as_uri()
    return quote(Path(rel).as_posix(), safe="/")


def _key(key: tuple) -> str:
    return f"{key[0]}:{key[1]}"


def page_data(results: Sequence[Mapping], videos: Sequence[Path], page_dir: Path, *,
              embed: bool = False, truths: Sequence[list | None] | None = None,
              min_score: float = 0.0) -> dict:
    """What the page's script reads: per video its source, lanes, events and ground truth."""
    every_event = [e for r in results for e in r["events"]]
    every_truth = [a for t in truths or [] for a in t or []]
    lane_list = lanes(every_event, every_truth)
    colours = style.label_colours(k for k, _ in lane_list)
    out = []
    for i, (result, video) in enumerate(zip(results, videos)):
        truth = truths[i] if truths is not None else None
        events = filter_events(result["events"])
        own = lanes(events, truth or ())
        index = {k: n for n, (k, _) in enumerate(own)}
        names = dict(lane_list)
        out.append({
            "name": Path(result["video"].replace("\\", "/")).name,
            "path": result["video"],
            "id": video_id(result),
            "model": result["model"],
            "duration": result["duration"],
            "src": None if embed else _link(video, page_dir),
            "embedded": f"davel-video-{i}" if embed else None,
            "lanes": [{"key": _key(k), "label": names[k], "colour": colours[k]} for k, _ in own],
            "events": [{"lane": index[lane_key(e)], "label": names[lane_key(e)], "start": e["start"],
                        "end": e["end"], "score": e["score"]} for e in events],
            "truth": None if truths is None else [
                {"lane": index[lane_key(a)], "label": a["label"], "start": a["start"], "end": a["end"]}
                for a in truth or []],
            "annotated": truth is not None,
        })
    return {"videos": out, "minScore": float(min_score or 0.0)}


def _embedded_media(videos: Sequence[Path], limit_mb: float) -> str:
    total = sum(v.stat().st_size for v in videos)
    if total > limit_mb * 1e6:
        what = str(videos[0]) if len(videos) == 1 else f"the {len(videos)} videos"
        raise VideoError(f"{what}: {total / 1e6:.1f} MB is over the --embed limit of {limit_mb:g} MB "
                         f"(drop --embed to link the video, or raise --embed-limit)")
    parts = []
    for i, v in enumerate(videos):
        b64 = base64.b64encode(v.read_bytes()).decode("ascii")  # [A-Za-z0-9+/=]: cannot close a tag
        parts.append(f'<script type="application/octet-stream" id="davel-video-{i}" '
                     f'data-mime="{html.escape(mime_type(v))}">{b64}</script>')
    return "\n".join(parts)


def _csp(js: str) -> str:
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    return ("default-src 'none'; "
            f"script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "media-src 'self' file: data: blob:; img-src data:; base-uri 'none'; form-action 'none'")


def build_page(results: Sequence[Mapping], videos: Sequence[str | os.PathLike],
               page_path: str | os.PathLike, *, embed: bool = False,
               embed_limit_mb: float = EMBED_LIMIT_MB, truths: Sequence[list | None] | None = None,
               min_score: float = 0.0) -> str:
    """The HTML text of the page for ``results`` (normalised) and their video files.

    ``page_path`` is where the page will be written: linked videos are referred
    to relative to its folder. ``truths``: ground truth per result (None where a
    video is not annotated), or None for no ground-truth lane.
    """
    vids = [Path(v) for v in videos]
    css, js = asset("viewer.css"), asset("viewer.js")
    for name, text, tag in (("viewer.css", css, "</style"), ("viewer.js", js, "</script")):
        if tag in text.lower():  # would end the inline element early: a packaging bug
            raise RuntimeError(f"{name} contains {tag!r}")
    data = page_data(results, vids, Path(page_path).parent, embed=embed, truths=truths,
                     min_score=min_score)
    names = [v["name"] for v in data["videos"]]
    title = names[0] if len(names) == 1 else f"{len(names)} videos"
    fields = {
        "csp": html.escape(_csp(js)).replace("&#x27;", "'"),  # in a "..." attribute: ' is safe
        "title": html.escape(f"{title} \u00b7 davel view"),
        "css": css,
        "js": js,
        "data": script_json(data),
        "media": _embedded_media(vids, embed_limit_mb) if embed else "",
    }
    # One pass: text put in is never searched for placeholders again.
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], asset("page.html"))


def write_page(source: ResultSource, output: str | os.PathLike, *,
               videos: Sequence[str | os.PathLike] = (), embed: bool = False,
               embed_limit_mb: float = EMBED_LIMIT_MB, annotations: Any = None,
               min_score: float | None = None) -> Path:
    """Write the page for every result in ``source`` to ``output``, atomically; returns it.

    ``videos`` (files or folders, as ``--video``) say where each result's video
    is; without them the result's own ``video`` path is used. Each video must
    exist and decode. ``annotations`` (UnAV-100 file or document) adds a
    ground-truth lane; ``min_score`` is where the score slider starts. A video
    whose codec browsers may not play is a warning (the ``davel`` logger).
    """
    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise OutputError(f"{out}: the page needs an .html file name")
    results = load_results(source)
    result_file = source if isinstance(source, (str, os.PathLike)) else None
    truths = None
    if annotations is not None:
        database = load_annotations(annotations)
        truths = [ground_truth_for(database, r) for r in results]
    found = resolve_videos(results, videos, result_file, required=True)
    for v in found:
        codec = probe_video(v).codec
        if codec not in BROWSER_CODECS:
            log.warning("%s: %s video may not play in a browser (H.264, VP8, VP9 and AV1 do)", v, codec)
    check_writable(out)
    text = build_page(results, found, out, embed=embed, embed_limit_mb=embed_limit_mb,
                      truths=truths, min_score=min_score or 0.0)
    return write_atomic(out, lambda f: f.write(text.encode("utf-8")))
