"""Looks shared by the plot and the page: label colours, score opacity, m:ss times."""
from __future__ import annotations

import colorsys
from collections.abc import Hashable, Iterable

# Twelve well separated, print-safe hues (dark enough for white text on top);
# past them, colours come from the golden-angle hue walk below.
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939",
)

#: Tick steps in seconds a time axis may use; each is a round m:ss value.
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def colour(index: int) -> str:
    """The colour of the ``index``-th label (hex ``#rrggbb``)."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.42, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def label_colours(keys: Iterable[Hashable]) -> dict:
    """A colour per key, in the order given (duplicates keep their first colour)."""
    out: dict = {}
    for key in keys:
        if key not in out:
            out[key] = colour(len(out))
    return out


def score_alpha(score: float) -> float:
    """Fill opacity for a score: never fully transparent, so weak events stay visible."""
    return 0.18 + 0.82 * min(1.0, max(0.0, float(score)))


def tick_step(duration: float, max_ticks: int = 10) -> float:
    """The smallest round step that puts at most ``max_ticks`` intervals on ``duration``."""
    for step in TICK_STEPS:
        if duration / step <= max_ticks:
            return float(step)
    return float(TICK_STEPS[-1])


def clock(seconds: float, step: float = 1.0) -> str:
    """``m:ss`` (``h:mm:ss`` from one hour; tenths, when not zero, if ``step`` < 1 s)."""
    tenths = step < 1
    total = round(max(0.0, seconds) * (10 if tenths else 1))
    whole, frac = divmod(total, 10) if tenths else (total, 0)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{text}.{frac}" if tenths and frac else text


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"
