"""Read `davel detect` results, keep the events worth showing, find their ground truth.

A result is the dict ``davel detect`` writes per video (``video``, ``duration``,
``model``, ``events``: ``label``, ``label_id``, ``start``, ``end``, ``score``).
Everything here returns *normalised* copies: numbers are floats, ``label`` is a
string, ``label_id`` an int or None, so the plot and the page need no checks.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from davel.annotations import Annotations, read_annotations
from davel.evaluation import video_id_from_name
from davel.outputs import read_json_documents
from davel.viewer.errors import ResultFileError

#: What the library functions accept as results: a dict, an object with
#: ``to_dict()``, a list of those, or a path to a JSON / JSON Lines file.
ResultSource = Union[str, os.PathLike, Mapping[str, Any], Sequence[Any], Any]

#: A lane is keyed by the label id when there is one (so ``class_78`` from an
#: unnamed run and ``dog barking`` from the annotations share a lane), else by name.
LaneKey = tuple


def load_results(source: ResultSource) -> list[dict]:
    """Every result in ``source``, normalised, in file order.

    ``source``: a result dict, an object with ``to_dict()``, a list of those, or
    a path to a file holding one result, a JSON list of them, or JSON Lines.
    Raises :class:`ResultFileError` with a one-line message when it is not that.
    """
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        items: list[Any] = []
        for doc in read_json_documents(source, ResultFileError):
            items.extend(doc if isinstance(doc, list) else [doc])
    else:
        where = "results"
        items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ResultFileError(f"{where}: no results in it")
    return [normalise_result(item, where if len(items) == 1 else f"{where}: result {i + 1}")
            for i, item in enumerate(items)]


def _number(value: Any, what: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x):
        raise ResultFileError(f"{where}: {what} must be a finite number, not {value!r:.40}")
    return x


def _label_id(value: Any, where: str, error: type[Exception] = ResultFileError) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: label_id must be an integer, not {value!r:.40}") from exc


def normalise_result(item: Any, where: str = "result") -> dict:
    """A checked copy of one result: ``duration`` > 0, events with float times and scores."""
    if hasattr(item, "to_dict") and callable(item.to_dict):
        item = item.to_dict()
    if not isinstance(item, Mapping):
        raise ResultFileError(f"{where}: expected a davel result object, got {type(item).__name__}")
    events = item.get("events")
    if not isinstance(events, list):
        raise ResultFileError(f"{where}: no \"events\" list (is this a `davel detect` result?)")
    video = item.get("video")
    if not isinstance(video, str) or not video:
        raise ResultFileError(f"{where}: no \"video\" name")
    clean = []
    for n, ev in enumerate(events, 1):
        at = f"{where}: event {n}"
        if not isinstance(ev, Mapping):
            raise ResultFileError(f"{at}: expected an object")
        if "label" not in ev and ev.get("label_id") is None:
            raise ResultFileError(f"{at}: no label")
        start, end = _number(ev.get("start"), "start", at), _number(ev.get("end"), "end", at)
        if end < start:
            raise ResultFileError(f"{at}: ends ({end:g} s) before it starts ({start:g} s)")
        label_id = _label_id(ev.get("label_id"), at)
        label = ev.get("label")
        clean.append({"label": str(label) if label is not None else f"class_{label_id}",
                      "label_id": label_id, "start": start, "end": end,
                      "score": _number(ev.get("score", 1.0), "score", at)})
    duration = item.get("duration")
    if duration is None:
        # Older or hand-made results: the last event end is the best guess.
        duration = max((e["end"] for e in clean), default=0.0)
    duration = _number(duration, "duration", where)
    if duration <= 0:
        raise ResultFileError(f"{where}: no positive duration")
    out = dict(item)
    out.update(video=video, duration=duration, events=clean,
               model=str(item.get("model") or "unknown model"))
    return out


def video_id(result: Mapping) -> str:
    """The ground-truth id of a result's video: its file name without the media suffix."""
    return video_id_from_name(result["video"])


def filter_events(events: Iterable[Mapping], min_score: float | None = None,
                  top_k: int | None = None) -> list[dict]:
    """Events scoring at least ``min_score``, then the ``top_k`` best, in time order."""
    kept = [dict(e) for e in events if min_score is None or e["score"] >= min_score]
    if top_k is not None:
        # Stable sort: equal scores keep file order, so the cut is reproducible.
        kept = sorted(kept, key=lambda e: -e["score"])[:max(0, top_k)]
    return sorted(kept, key=lambda e: (e["start"], e["end"]))


def lane_key(event: Mapping) -> LaneKey:
    """The lane an event or annotation goes in (see :data:`LaneKey`)."""
    if event.get("label_id") is not None:
        return ("id", int(event["label_id"]))
    return ("name", str(event["label"]))


def lanes(events: Iterable[Mapping], truth: Iterable[Mapping] = ()) -> list[tuple[LaneKey, str]]:
    """``(key, display name)`` per lane: every predicted label, plus labels only in ``truth``
    (empty lanes, so a missed class shows), ordered by label id then name.

    The display name prefers a real name over ``class_<id>``: the annotations know
    names that an unnamed detector run does not.
    """
    names: dict[LaneKey, str] = {}
    for ev in list(events) + list(truth):
        key, name = lane_key(ev), str(ev["label"])
        if key not in names or (names[key] == f"class_{key[1]}" and name != names[key]):
            names[key] = name
    order = sorted(names, key=lambda k: (k[0] != "id", k[1] if k[0] == "id" else 0, names[k]))
    return [(k, names[k]) for k in order]


# ---------------------------------------------------------------- ground truth
def load_annotations(source: str | os.PathLike | Mapping | Annotations) -> Annotations:
    """UnAV-100 annotations (a path or the parsed document), read by davel's one reader."""
    return source if isinstance(source, Annotations) else read_annotations(source)


def ground_truth_for(annotations: Annotations, result: Mapping) -> list[dict] | None:
    """The annotated segments of ``result``'s video (label, label_id, start, end), in time
    order; None when the annotations do not know that video."""
    vid = video_id(result)
    video = next((v for v in annotations.videos if v.video_id == vid), None)
    if video is None:
        return None
    out = [{"label": annotations.class_names[int(label)], "label_id": int(label),
            "start": float(s), "end": float(e)}
           for (s, e), label in zip(video.segments.tolist(), video.labels.tolist())]
    return sorted(out, key=lambda a: (a["start"], a["end"]))
