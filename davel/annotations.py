"""The UnAV-100 annotation file: one reader for labels, training and evaluation.

Layout: ``{"database": {video_id: {"subset": "train" | "validation" | "test",
"duration": seconds, "annotations": [{"segment": [start, end], "label": name,
"label_id": int}]}}}``. Everything a run cannot use is refused with one line
that names the video and the event: an unknown subset, ``end <= start``, a
label id that is not a non-negative integer, one name with two ids, a file
without any event. Subsets are compared lower-cased, as the official
evaluator does; names are optional (``class_<id>`` stands in).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from davel.errors import InputError

SUBSETS = ("train", "validation", "test")


@dataclass(frozen=True)
class VideoAnnotation:
    """One video of the annotation file: events in seconds, in file order."""

    video_id: str
    subset: str
    duration: float | None
    segments: np.ndarray  # [N, 2] float64 seconds
    labels: np.ndarray    # [N] int64 label ids


@dataclass(frozen=True)
class Annotations:
    """A checked annotation file."""

    source: str
    videos: tuple[VideoAnnotation, ...]
    class_names: tuple[str, ...]
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, name: str | None) -> list[VideoAnnotation]:
        """The videos of one subset (lower-cased name), or all for ``None``."""
        return [v for v in self.videos if name is None or v.subset == name.lower()]

    def empty_classes(self) -> list[int]:
        """Class ids without a single annotation in any subset (the repos' ``head_empty_cls``)."""
        used = {int(label) for v in self.videos for label in v.labels}
        return [c for c in range(self.num_classes) if c not in used]


def _load(source: str | Path | Mapping[str, Any]) -> tuple[Any, str, str]:
    if isinstance(source, Mapping):
        raw = json.dumps(source, sort_keys=True).encode()
        return source, "the given annotations", hashlib.sha256(raw).hexdigest()
    p = Path(source)
    try:
        raw = p.read_bytes()
        doc = json.loads(raw)
    except OSError as exc:
        raise InputError(f"cannot read annotations {p}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(f"annotations {p} are not valid JSON ({exc})") from exc
    return doc, f"annotations {p.name}", hashlib.sha256(raw).hexdigest()


def _event(ann: Any, where: str) -> tuple[float, float, int, str | None]:
    try:
        start, end = (float(x) for x in ann["segment"])
        label_id = ann["label_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f'{where}: needs "segment": [start, end] and "label_id"') from exc
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise InputError(f"{where}: end {end:g} s is not after start {start:g} s")
    if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
        raise InputError(f"{where}: label_id must be a non-negative integer, got {label_id!r}")
    name = ann.get("label")
    return start, end, label_id, None if name is None else str(name)


def read_annotations(source: str | Path | Mapping[str, Any]) -> Annotations:
    """Read and check an annotation file (a path, or its parsed JSON); see the module doc."""
    doc, where_file, sha = _load(source)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("database"), Mapping):
        raise InputError(f'{where_file}: expected a JSON object with a "database" object')
    videos: list[VideoAnnotation] = []
    name_to_id: dict[str, int] = {}
    for vid, entry in doc["database"].items():
        where = f"{where_file}, video {vid!r}"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: not an object")
        subset = str(entry.get("subset", "")).lower()
        if subset not in SUBSETS:
            raise InputError(f"{where}: unknown subset {entry.get('subset')!r} "
                             f"(expected one of {', '.join(SUBSETS)})")
        duration = entry.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not duration > 0):
            raise InputError(f"{where}: duration must be a positive number, got {duration!r}")
        events = entry.get("annotations") or []
        if not isinstance(events, list):
            raise InputError(f'{where}: "annotations" must be a list')
        segs, labels = [], []
        for k, ann in enumerate(events):
            start, end, label_id, name = _event(ann, f"{where}, event {k}")
            if name is not None and name_to_id.setdefault(name, label_id) != label_id:
                raise InputError(f"{where}, event {k}: label {name!r} has ids "
                                 f"{name_to_id[name]} and {label_id}")
            segs.append((start, end))
            labels.append(label_id)
        videos.append(VideoAnnotation(str(vid), subset, None if duration is None else float(duration),
                                      np.asarray(segs, np.float64).reshape(-1, 2),
                                      np.asarray(labels, np.int64)))
    if not any(len(v.labels) for v in videos):
        raise InputError(f"{where_file}: no events at all")
    num_classes = max(int(label) for v in videos for label in v.labels) + 1
    by_id = {i: n for n, i in name_to_id.items()}
    names = tuple(by_id.get(i, f"class_{i}") for i in range(num_classes))
    return Annotations(where_file.removeprefix("annotations "), tuple(videos), names, sha)
