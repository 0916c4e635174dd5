"""Class names: from the UnAV-100 annotation JSON or a text file of names in id order."""
from __future__ import annotations

import json
from pathlib import Path

from davel.errors import InputError


def read_labels(path: str | Path) -> list[str]:
    """Names indexed by label id.

    Accepts the UnAV-100 annotation layout (``{"database": {vid: {"annotations":
    [{"label", "label_id"}]}}}``), a plain ``{name: id}`` / ``{id: name}`` map or a
    JSON list, or a text file with one name per line in id order.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"cannot read labels file {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON ({exc})") from None
        return _from_json(data, p)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{p} holds no class names")
    return names


def _from_json(data, p: Path) -> list[str]:
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return list(data)
    pairs: dict[int, str] = {}
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        for vid, entry in data["database"].items():
            for ann in (entry or {}).get("annotations", []):
                if "label" in ann and "label_id" in ann:
                    pairs[int(ann["label_id"])] = str(ann["label"])
    elif isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, int):
                pairs[v] = str(k)
            elif isinstance(v, str) and str(k).lstrip("-").isdigit():
                pairs[int(k)] = v
    if not pairs:
        raise InputError(f"{p}: no label -> label_id pairs found (expected the UnAV-100 annotation JSON)")
    n = max(pairs) + 1
    return [pairs.get(i, f"class_{i}") for i in range(n)]


def label_name(names: list[str] | None, label_id: int) -> str:
    if names and 0 <= label_id < len(names):
        return names[label_id]
    return f"class_{label_id}"
