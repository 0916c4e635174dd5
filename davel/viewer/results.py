"""Read `davel detect` results, keep the events worth showing, find their ground truth.

A result is the dict ``davel detect`` writes per video (``video``, ``duration``,
``model``, ``events``: ``label``, ``label_id``, ``start``, ``end``, ``score``).
Everything here returns *normalised* copies: numbers are floats, ``label`` is a
string, ``label_id`` an int or None, so the plot and the page need no checks.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from davel.annotations import Annotations, read_annotations
from davel.errors import InputError
from davel.outputs import read_json_documents
from davel.results import DetectionResult, video_id_from_name
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


def normalise_result(item: Any, where: str = "result") -> dict:
    """A checked copy of one result: ``duration`` > 0, events with float times and scores.

    Read by :meth:`DetectionResult.from_dict` (lenient: a hand-written file may leave
    out scores, label ids and the duration); keys it does not know are kept.
    """
    if hasattr(item, "to_dict") and callable(item.to_dict):
        item = item.to_dict()
    try:
        result = DetectionResult.from_dict(item, strict=False, where=where)
    except InputError as exc:
        raise ResultFileError(str(exc)) from exc
    out = dict(item)
    out.update(video=result.video, duration=result.duration, events=[e.to_dict() for e in result.events],
               model=result.model or "unknown model")
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
