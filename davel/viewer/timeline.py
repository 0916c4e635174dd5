"""The timeline figure of one result (matplotlib), saved atomically as PNG, SVG or PDF.

Layout, top to bottom: title, an optional strip of video thumbnails, an optional
ground-truth lane, then one lane per label with a bar per event (colour per
label, fill opacity by score). All panels share the time axis, 0 to the
result's duration, ticked in m:ss.

The figure is a bare :class:`matplotlib.figure.Figure` drawn by the Agg canvas,
never pyplot: no global backend switch, no figure registry, safe in threads and
in programs that use another backend.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from davel.errors import OutputError
from davel.viewer import style
from davel.viewer.files import check_writable, write_atomic
from davel.viewer.media import probe_video, resolve_videos, thumbnails
from davel.viewer.results import (
    ResultSource,
    filter_events,
    ground_truth_for,
    lane_key,
    lanes,
    load_annotations,
    load_results,
    normalise_result,
    video_id,
)

FORMATS = ("png", "svg", "pdf")

# Sizes in inches; the figure is laid out by hand so that thumbnails keep their
# aspect ratio and every lane has the same height whatever the number of lanes.
_LANE_H, _TRUTH_ROW_H, _TITLE_H, _AXIS_H, _GAP = 0.34, 0.26, 0.72, 0.5, 0.1
_MAX_SUBROWS = 3  # overlapping events of one label share a lane in at most this many rows
_LABEL_CHARS = 28  # longer label names are cut with an ellipsis
_FONT = "DejaVu Sans"  # ships with matplotlib: same look everywhere, nothing fetched


def _plain(text: str) -> str:
    """``text`` for matplotlib, shown literally: a ``$`` would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _pack(items: Sequence[Mapping], max_rows: int) -> list[int]:
    """A row per item (sorted by start) so that items in a row do not overlap; past
    ``max_rows`` an item joins the row that frees up first."""
    ends: list[float] = []
    rows = []
    for it in items:
        free = [r for r, e in enumerate(ends) if e <= it["start"] + 1e-9]
        if free:
            r = free[0]
        elif len(ends) < max_rows:
            r = len(ends)
            ends.append(0.0)
        else:
            r = min(range(len(ends)), key=ends.__getitem__)
        ends[r] = max(ends[r], it["end"])
        rows.append(r)
    return rows


def _truth(annotations: Any, result: Mapping) -> list[dict] | None:
    """Ground truth of ``result`` from a path, an UnAV document, :class:`Annotations` or an
    already picked list."""
    if isinstance(annotations, list):
        return annotations
    return ground_truth_for(load_annotations(annotations), result)


def _luminance(rgb: Sequence[float]) -> float:
    r, g, b = rgb[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def timeline_figure(result: Mapping | Any, *, min_score: float | None = None,
                    top_k: int | None = None, video: str | os.PathLike | None = None,
                    annotations: Any = None, colours: Mapping | None = None,
                    num_thumbnails: int | None = None, width: float = 10.0,
                    dpi: float = 100):
    """The timeline :class:`~matplotlib.figure.Figure` of one result.

    ``result``: a result dict (or object with ``to_dict()``); ``min_score`` /
    ``top_k`` choose the events drawn; ``video`` adds a thumbnail strip;
    ``annotations`` (UnAV-100 file, its parsed document, or a list of segments)
    adds a ground-truth lane; ``colours`` maps lane keys to colours (to keep
    colours across several figures). Axes are labelled ``"thumbnails"``,
    ``"truth"`` and ``"events"``; each lane's bars are one container labelled
    with the lane name.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    result = normalise_result(result)
    duration = result["duration"]
    events = filter_events(result["events"], min_score, top_k)
    truth = _truth(annotations, result) if annotations is not None else None
    lane_list = lanes(events, truth or ())
    colours = dict(colours or {})
    for key, _ in lane_list:
        colours.setdefault(key, style.colour(len(colours)))

    names = [style.shorten(n, _LABEL_CHARS) for _, n in lane_list]
    label_chars = max([len(n) for n in names] + [len("ground truth") + 1])
    left = 0.3 + 0.068 * label_chars
    right = 0.35
    aw = width - left - right
    n_lanes = max(1, len(lane_list))

    frames = []
    thumb_h = 0.0
    if video is not None:
        n = num_thumbnails or max(4, min(12, round(aw / 1.15)))
        times = [(i + 0.5) * duration / n for i in range(n)]
        frames = thumbnails(video, times)
        h0, w0 = frames[0].shape[:2]
        thumb_h = min(1.4, aw / n * h0 / w0)
    truth_rows = _pack(truth, 4) if truth else []
    n_truth_rows = max(truth_rows, default=0) + 1
    truth_h = n_truth_rows * _TRUTH_ROW_H + 0.12 if annotations is not None else 0.0

    heights = [_TITLE_H, thumb_h, truth_h, n_lanes * _LANE_H, _AXIS_H]
    gaps = _GAP * (bool(thumb_h) + bool(truth_h))
    total_h = sum(heights) + gaps
    fig = Figure(figsize=(width, total_h), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")

    def axes(bottom: float, height: float, label: str, share=None):
        return fig.add_axes((left / width, bottom / total_h, aw / width, height / total_h),
                            label=label, sharex=share)

    px_per_s = aw * dpi / duration
    step = style.tick_step(duration, max(3, int(aw / 0.9)))

    # --- events: one lane per label, top lane = first label
    y0 = _AXIS_H
    ax = axes(y0, n_lanes * _LANE_H, "events")
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.5, n_lanes - 0.5)
    for i in range(n_lanes):
        if i % 2:
            ax.axhspan(n_lanes - 1 - i - 0.5, n_lanes - 1 - i + 0.5, color="#f2f4f7", lw=0, zorder=0)
    for i, (key, name) in enumerate(lane_list):
        y = n_lanes - 1 - i
        mine = [e for e in events if lane_key(e) == key]
        rows = _pack(mine, _MAX_SUBROWS)
        k = max(rows, default=0) + 1
        bar_h = 0.74 / k
        ys = [y + 0.37 - bar_h * (r + 0.5) for r in rows]
        fills = [to_rgba(colours[key], style.score_alpha(e["score"])) for e in mine]
        ax.barh(ys, [e["end"] - e["start"] for e in mine], left=[e["start"] for e in mine],
                height=bar_h * 0.9, color=fills, edgecolor=colours[key], linewidth=0.9,
                label=_plain(name), zorder=2)
        for e, yy, fill in zip(mine, ys, fills):
            if (e["end"] - e["start"]) * px_per_s >= 34 and bar_h * _LANE_H * dpi >= 10:
                ink = "white" if fill[3] > 0.5 and _luminance(fill) < 0.6 else "#1d2733"
                ax.text(e["start"] + 4 / px_per_s, yy, f"{e['score']:.2f}", fontsize=7,
                        color=ink, va="center", ha="left", clip_on=True, zorder=3, family=_FONT)
    ax.set_yticks(range(n_lanes), [_plain(n) for n in reversed(names)] if lane_list else [""])
    if lane_list:
        # A colour swatch by each lane name ties the name to its bars.
        ax.scatter([-9 / px_per_s] * len(lane_list), [n_lanes - 1 - i for i in range(len(lane_list))],
                   marker="s", s=42, c=[colours[k] for k, _ in lane_list], clip_on=False, zorder=4)
    if not events:
        ax.text(0.5, 0.5, "no events" + (" above the score threshold" if result["events"] else ""),
                transform=ax.transAxes, ha="center", va="center", color="#6b7280", fontsize=10,
                style="italic")
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: style.clock(x, step)))
    ax.set_xlabel("time (m:ss)", fontsize=9, color="#374151")
    ax.grid(axis="x", color="#d6dae1", linewidth=0.6, zorder=1)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0, labelsize=9, pad=18)
    ax.tick_params(axis="x", labelsize=8.5, colors="#374151")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color("#9ca3af")
    top = y0 + n_lanes * _LANE_H

    # --- ground truth: one lane, overlapping segments stacked
    if annotations is not None:
        top += _GAP
        gx = axes(top, truth_h, "truth", share=ax)
        gx.set_ylim(0, n_truth_rows * _TRUTH_ROW_H + 0.12)
        gx.set_facecolor("#eef1f6")
        segs = truth or []
        ys = [0.06 + (n_truth_rows - 1 - r + 0.5) * _TRUTH_ROW_H for r in truth_rows]
        segs_colours = [colours[lane_key(s)] for s in segs]
        gx.barh(ys, [s["end"] - s["start"] for s in segs], left=[s["start"] for s in segs],
                height=_TRUTH_ROW_H * 0.78, color=segs_colours, edgecolor="white", linewidth=0.8,
                label="ground truth", zorder=2)
        for s, yy in zip(segs, ys):
            text = _plain(s["label"])
            if (s["end"] - s["start"]) * px_per_s >= 5.2 * len(s["label"]) + 8:
                gx.text(s["start"] + 4 / px_per_s, yy, text, fontsize=7, color="white", va="center",
                        ha="left", clip_on=True, zorder=3, family=_FONT)
        if truth is None:
            gx.text(0.5, 0.5, _plain(f"{video_id(result)} is not in the annotations"),
                    transform=gx.transAxes, ha="center", va="center", color="#6b7280",
                    fontsize=9, style="italic")
        gx.set_yticks([gx.get_ylim()[1] / 2], ["ground truth"])
        gx.tick_params(axis="y", length=0, labelsize=9, pad=18)
        gx.get_yticklabels()[0].set_fontweight("bold")
        gx.tick_params(axis="x", bottom=False, labelbottom=False)
        for spine in gx.spines.values():
            spine.set_visible(False)
        top += truth_h

    # --- thumbnails at even times, each centred on its own time
    if frames:
        top += _GAP
        tx = axes(top, thumb_h, "thumbnails", share=ax)
        slot = duration / len(frames)
        pad = 2 / px_per_s
        for i, img in enumerate(frames):
            tx.imshow(img, extent=(i * slot + pad, (i + 1) * slot - pad, 0, 1), aspect="auto",
                      interpolation="bilinear", zorder=1)
        tx.set_ylim(0, 1)
        tx.set_axis_off()
        top += thumb_h

    ax.set_xlim(0, duration)  # imshow and sharex may have moved it
    name = style.shorten(Path(result["video"].replace("\\", "/")).name, 70)
    clock = style.clock(duration, 0.1 if duration < 60 else 1)
    fig.text(left / width, 1 - 0.3 / total_h,
             _plain(f"{name}   \u00b7   {result['model']}   \u00b7   {clock}"),
             fontsize=12.5, fontweight="bold", color="#111827", ha="left", va="center", family=_FONT)
    shown = f"{len(events)} of {len(result['events'])} events"
    if min_score is not None:
        shown += f", score \u2265 {min_score:g}"
    if top_k is not None:
        shown += f", top {top_k}"
    note = "bar opacity = score" + ("   \u00b7   top lane: ground truth" if annotations is not None else "")
    fig.text(left / width, 1 - 0.56 / total_h, _plain(f"{shown}   \u00b7   {note}"), fontsize=9,
             color="#4b5563", ha="left", va="center", family=_FONT)
    return fig


def _format_of(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise OutputError(f"{path}: cannot tell the figure format from {path.suffix or 'no suffix'!s}"
                          f" (use .png, .svg or .pdf)")
    return fmt


def save_figure(fig, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file in the same folder, then rename)."""
    p = Path(path)
    fmt = fmt or _format_of(p)
    check_writable(p)
    return write_atomic(p, lambda f: fig.savefig(f, format=fmt, dpi=fig.dpi, facecolor="white",
                                                 metadata={"Software": "davel"} if fmt == "png" else None))


def save_timeline(result: Mapping | Any, path: str | os.PathLike, *, min_score: float | None = None,
                  top_k: int | None = None, video: str | os.PathLike | None = None,
                  annotations: Any = None, colours: Mapping | None = None) -> Path:
    """Draw ``result``'s timeline (see :func:`timeline_figure`) into ``path`` (.png/.svg/.pdf),
    atomically: on any failure an existing ``path`` is left as it was. Returns ``path``.

    This is what ``davel detect --plot FILE`` calls with each result it makes.
    """
    p = Path(path)
    fmt = _format_of(p)
    check_writable(p)
    fig = timeline_figure(result, min_score=min_score, top_k=top_k, video=video,
                          annotations=annotations, colours=colours)
    return save_figure(fig, p, fmt)


def output_paths(results: Sequence[Mapping], output: str | os.PathLike | None,
                 fmt: str = "png") -> list[Path]:
    """Where each result's figure goes: ``output`` itself for one result with an image
    suffix, else ``output/<video id>.<fmt>`` (default folder ``timelines``)."""
    if fmt not in FORMATS:
        raise OutputError(f"unknown figure format {fmt!r} (use png, svg or pdf)")
    if output is None:
        output = "timeline.png" if len(results) == 1 else "timelines"
    out = Path(output)
    image = out.suffix.lower().lstrip(".") in FORMATS
    if image and len(results) == 1:
        return [out]
    if image:
        raise OutputError(f"{len(results)} videos in the results: give -o a folder, not {out.name}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: not a folder and not a .png/.svg/.pdf file name")
    if out.suffix and not out.is_dir():
        # "-o fig.jpg" is a wrong format far more often than a folder name.
        raise OutputError(f"{out}: cannot tell the figure format from {out.suffix} "
                          f"(use .png, .svg or .pdf, or a folder)")
    paths, seen = [], set()
    for r in results:
        stem, n = video_id(r) or "video", 1
        while (stem if n == 1 else f"{stem}_{n}") in seen:
            n += 1
        stem = stem if n == 1 else f"{stem}_{n}"
        seen.add(stem)
        paths.append(out / f"{stem}.{fmt}")
    return paths


def plot_results(source: ResultSource, output: str | os.PathLike | None = None, *,
                 min_score: float | None = None, top_k: int | None = None,
                 videos: Sequence[str | os.PathLike] = (), annotations: Any = None,
                 fmt: str = "png") -> list[Path]:
    """One timeline per result in ``source`` (see :func:`output_paths` for where).

    Every input is checked (results, annotations, videos decodable, outputs
    writable) before the first figure is written, so bad input leaves no output.
    """
    results = load_results(source)
    result_file = source if isinstance(source, (str, os.PathLike)) else None
    database = load_annotations(annotations) if annotations is not None else None
    truths = [ground_truth_for(database, r) for r in results] if database is not None else None
    found = resolve_videos(results, videos, result_file, required=True) if videos else [None] * len(results)
    for v in found:
        if v is not None:
            probe_video(v)
    targets = output_paths(results, output, fmt)
    for t in targets:
        _format_of(t)
        check_writable(t)
    # One colour per label across all figures, so a label looks the same in each.
    every_event = [e for r in results for e in r["events"]]
    every_truth = [a for t in truths or [] for a in t or []]
    colours = style.label_colours(k for k, _ in lanes(every_event, every_truth))
    written = []
    for result, video, target in zip(results, found, targets):
        fig = timeline_figure(result, min_score=min_score, top_k=top_k, video=video,
                              annotations=database, colours=colours)
        written.append(save_figure(fig, target))
    return written
