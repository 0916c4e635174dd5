"""The result document ``davel detect`` writes, and its one reader.

Layout, one object per video (a JSON file holds one or a list, a JSON Lines file
one per line)::

    {"video": path or id, "duration": s, "model": kind, "checkpoint": {"name", "sha256"},
     "timebase": {"fps", "stride", "window"}, "num_steps": T, "windows": n,
     "events": [{"label", "label_id", "start", "end", "score"}, ...]}

:meth:`DetectionResult.from_dict` reads it for ``davel eval`` (strict) and the
viewer (lenient) with the same rules for every value either reads: numbers are
finite (numeric strings are taken, booleans are not), ``label_id`` is an
integer, an event does not end before it starts, a duration is positive. The
lenient reader also takes what hand-written or older files lack: no ``score``
(1.0), no ``label_id`` when there is a ``label``, no ``duration`` (the last
event's end). Only ``video`` and ``events`` are required by both.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from davel.errors import InputError
from extractors.media import VIDEO_SUFFIXES
from extractors.timebase import TimeBase

# Only these suffixes are taken for file extensions: ids of the users' own data may hold dots.
_MEDIA_SUFFIXES = VIDEO_SUFFIXES | {".npy"}


def video_id_from_name(name: str) -> str:
    """``/data/videos/abc.mp4`` -> ``abc``; a bare id (``clip.v2`` included) is returned unchanged."""
    base = PureWindowsPath(PurePosixPath(str(name)).name).name
    stem, dot, suffix = base.rpartition(".")
    return stem if dot and stem and f".{suffix.lower()}" in _MEDIA_SUFFIXES else base


def read_number(value: Any, what: str, where: str) -> float:
    """``value`` as a finite float (numbers and numeric strings); InputError (one line) otherwise."""
    # bool is an int to Python, never a time or a score to a user
    ok = not isinstance(value, bool) and isinstance(value, (int, float, str))
    try:
        number = float(value) if ok else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"{where}: {what} must be a number, got {value!r:.60}")
    return number


def read_label_id(value: Any, where: str) -> int:
    """``value`` as a label id: an integer (``3``, ``3.0``, ``"3"``); InputError (one line) otherwise."""
    try:
        number = read_number(value, '"label_id"', where)
    except InputError:
        number = math.nan
    if not number.is_integer():  # NaN is not an integer either
        raise InputError(f'{where}: "label_id" must be an integer, got {value!r:.60}')
    return int(number)


@dataclass(frozen=True)
class Event:
    """One detected event: a label, a span in seconds, a score in (0, 1].

    ``label_id`` is None only in a result read leniently from a file that names
    its classes without ids.
    """

    label: str
    label_id: int | None
    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "label_id": self.label_id, "start": self.start,
                "end": self.end, "score": self.score}


@dataclass
class DetectionResult:
    """The events of one video (descending score) and what produced them.

    ``davel detect`` fills every field; a result read from a file has None where
    the file says nothing (see the module doc).
    """

    video: str
    duration: float | None
    model: str | None
    checkpoint: dict[str, str] | None  # {"name", "sha256"}
    timebase: TimeBase | None
    num_steps: int | None
    windows: int | None
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout ``davel detect`` writes (what a file did not say stays out)."""
        d = {"video": self.video, "duration": self.duration, "model": self.model,
             "checkpoint": None if self.checkpoint is None else dict(self.checkpoint),
             "timebase": None if self.timebase is None else self.timebase.as_dict(),
             "num_steps": self.num_steps, "windows": self.windows}
        return {**{k: v for k, v in d.items() if v is not None}, "events": [e.to_dict() for e in self.events]}

    @classmethod
    def from_dict(cls, doc: Any, strict: bool = True, where: str = "result") -> DetectionResult:
        """A result document, checked (see the module doc for the rules); InputError naming
        ``where``, the video and the event, in one line, for anything else.

        ``strict`` (``davel eval``): every event has a ``label_id`` and a ``score``.
        Lenient (the viewer): those may be missing, and so may ``duration``.
        """
        if not isinstance(doc, Mapping):
            raise InputError(f"{where}: expected a davel result object, got {type(doc).__name__}")
        if not isinstance(doc.get("events"), list):
            raise InputError(f'{where}: no "events" list (is this a `davel detect` result?)')
        video = doc.get("video")
        if not isinstance(video, str) or not video:
            raise InputError(f'{where}: no "video" name')
        events = [_event(ev, strict, f"{where}, video {video!r}, event {k}")
                  for k, ev in enumerate(doc["events"])]
        duration = doc.get("duration")
        if duration is None and not strict:
            # older or hand-made results: the last event's end is the best guess
            duration = max((e.end for e in events), default=0.0)
        if duration is not None and read_number(duration, '"duration"', where) <= 0:
            raise InputError(f"{where}: no positive duration")
        return cls(video=video, duration=None if duration is None else float(duration),
                   model=_optional(doc, "model", str, where),
                   checkpoint=_optional(doc, "checkpoint", Mapping, where),
                   timebase=_timebase(doc.get("timebase"), where),
                   num_steps=_optional(doc, "num_steps", int, where),
                   windows=_optional(doc, "windows", int, where), events=events)


def _event(ev: Any, strict: bool, at: str) -> Event:
    if not isinstance(ev, Mapping):
        raise InputError(f"{at}: expected an object, got {ev!r:.60}")
    label = ev.get("label")
    if label is not None and not isinstance(label, str):
        raise InputError(f'{at}: "label" must be a string, got {label!r:.60}')
    label_id = ev.get("label_id")
    if label_id is None and not strict:
        if label is None:
            raise InputError(f"{at}: no label")
    else:
        label_id = read_label_id(label_id, at)
    start = read_number(ev.get("start"), '"start"', at)
    end = read_number(ev.get("end"), '"end"', at)
    if end < start:
        raise InputError(f"{at}: ends ({end:g} s) before it starts ({start:g} s)")
    score = ev.get("score") if strict else ev.get("score", 1.0)  # lenient: a missing score is a sure one
    return Event(label if label is not None else f"class_{label_id}", label_id, start, end,
                 read_number(score, '"score"', at))


_KINDS = {str: "a string", int: "an integer", Mapping: "an object"}


def _optional(doc: Mapping, key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return dict(value) if isinstance(value, Mapping) else value
    raise InputError(f'{where}: "{key}" must be {_KINDS[kind]}, got {value!r:.60}')


def _timebase(value: Any, where: str) -> TimeBase | None:
    if value is None:
        return None
    try:
        return TimeBase.from_dict(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f'{where}: "timebase" must be {{"fps", "stride", "window"}}, got {value!r:.60}') from exc
