"""Class names: from the UnAV-100 annotation JSON or a text file of names in id order, and
the UnAV-100 names davel ships for checkpoints that carry none.

Which names a detector uses, first found: ``--labels`` (``labels=``), the checkpoint's own
``davel.labels`` (davel records the names of the data it trained on), then
:func:`default_labels`: the UnAV-100 names for a 100-class checkpoint (the published UnAV and
CCNet checkpoints carry no names), ``class_<id>`` otherwise.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from davel.annotations import read_annotations
from davel.errors import InputError


def read_labels(path: str | Path) -> list[str]:
    """Names indexed by label id.

    Accepts the UnAV-100 annotation layout (read by :func:`davel.annotations.read_annotations`),
    a plain ``{name: id}`` / ``{id: name}`` map or a JSON list, or a text file with
    one name per line in id order.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels file {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON ({exc})") from exc
        if isinstance(data, dict) and "database" in data:
            return list(read_annotations(p).class_names)
        return _from_json(data, p)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{p} holds no class names")
    return names


def _from_json(data: Any, p: Path) -> list[str]:
    if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
        return list(data)
    pairs: dict[int, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                pairs[v] = str(k)
            elif isinstance(v, str) and str(k).isdigit():
                pairs[int(k)] = v
    if not pairs:
        raise InputError(f"{p}: no label -> label_id pairs found (expected the UnAV-100 annotation JSON)")
    return [pairs.get(i, f"class_{i}") for i in range(max(pairs) + 1)]


UNAV100_NUM_CLASSES = 100


@cache
def _unav100() -> tuple[str, ...]:
    text = resources.files("davel").joinpath("data", "unav100_classes.txt").read_text(encoding="utf8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != UNAV100_NUM_CLASSES:
        raise RuntimeError("davel/data/unav100_classes.txt is damaged: reinstall davel")
    return names


def unav100_labels() -> list[str]:
    """The 100 UnAV-100 class names, indexed by the dataset's ``label_id`` (shipped with davel:
    davel/data/README.md says where from)."""
    return list(_unav100())


def default_labels(num_classes: int) -> list[str] | None:
    """Names for a checkpoint that carries none: the UnAV-100 names when it has 100 classes,
    else None (events are then named ``class_<id>``)."""
    return unav100_labels() if num_classes == UNAV100_NUM_CLASSES else None


def label_name(names: Sequence[str] | None, label_id: int) -> str:
    if names and 0 <= label_id < len(names):
        return names[label_id]
    return f"class_{label_id}"
