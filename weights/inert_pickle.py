"""The tensors of a pickled checkpoint that also holds foreign objects, read without
running any of its code.

Some published weights cannot be read with ``torch.load(weights_only=True)``: the
ONE-PEACE files carry their training configuration as pickled objects (fairseq /
omegaconf / mmcv classes). Rather than importing those classes (and running
whatever a pickle asks for), this reader rebuilds only tensors and plain containers:
every other global a pickle names becomes an inert placeholder that accepts any
construction and does nothing, and is never imported. The tensors are memory-mapped
(the machine that converts a 15 GB file may have less memory than the file), and the
result is meant to be converted once into a file that loads with ``weights_only=True``.
"""
from __future__ import annotations

import logging
import pickle
import types
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from weights.errors import WeightsError

log = logging.getLogger(__name__)

# The globals that rebuild tensors and plain containers: nothing else is ever imported.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
}


class Inert:
    """What every other global of the pickle becomes: built with anything, it keeps nothing,
    does nothing, and calling it gives another inert object."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Inert:
        return Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    replaced: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        _InertUnpickler.replaced.add(f"{module}.{name}")
        return type(name, (Inert,), {"__module__": "weights.inert_pickle.replaced"})


def _inert_module() -> types.ModuleType:
    module = types.ModuleType("inert_pickle")
    module.Unpickler = _InertUnpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: _InertUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    return module


def load_inert(path: str | Path) -> tuple[Any, list[str]]:
    """``(contents, replaced)``: a checkpoint file's contents with its tensors memory-mapped
    (a legacy, non-zip file is read into memory instead, with a warning) and every global
    outside the tensor-rebuilding ones replaced by an :class:`Inert` object; ``replaced``
    names those globals. WeightsError (one line) for a file torch cannot read."""
    path = Path(path)
    _InertUnpickler.replaced = set()
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    zipped = zipfile.is_zipfile(path)
    if not zipped and head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise WeightsError(f"{path} is not a readable torch checkpoint (neither a zip archive nor a pickle)")
    if not zipped:
        log.warning("%s is in torch's legacy format: read into memory, not memory-mapped", path)
    try:
        obj = torch.load(path, map_location="cpu", mmap=zipped, weights_only=False,
                         pickle_module=_inert_module())
    except Exception as exc:  # torch raises assorted types on files it cannot read
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a readable torch checkpoint ({first})") from exc
    return obj, sorted(_InertUnpickler.replaced)


def tensors_of(obj: Any, entries: tuple[str, ...], keep: Callable[[str], bool],
               where: str) -> dict[str, torch.Tensor]:
    """The tensors of the first of ``entries`` (e.g. ``state_dict``, ``model``) that the
    contents hold, those whose names ``keep`` accepts; WeightsError naming ``where``."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} is not a checkpoint dict")
    state = next((obj[e] for e in entries if isinstance(obj.get(e), Mapping)), None)
    if state is None:
        raise WeightsError(f"{where} has none of the entries {', '.join(entries)}")
    kept = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor) and keep(k)}
    if not kept:
        raise WeightsError(f"{where} holds none of the weights looked for")
    return kept
