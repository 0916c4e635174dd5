"""The official ONE-PEACE files -> files davel loads safely, once.

``onepeace_video_k400.pth`` (an mmaction checkpoint) and ``one-peace.pt`` (fairseq,
15.5 GB) are pickles that hold configuration objects next to the tensors. They are
read by :mod:`weights.inert_pickle` (memory-mapped; no class of the pickle is ever
imported or called), only the tensors the encoder uses are kept, the encoder is
built on them to check the layout, and they are written as a plain state dict
(``onepeace_video.pt``, ``onepeace_audio.pt``) that loads with
``torch.load(weights_only=True)``. The converted file is recorded in the weights
directory's lock with the source's sha256.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from weights import store
from weights.atomic import atomic_write
from weights.errors import WeightsError
from weights.inert_pickle import load_inert, tensors_of


@dataclass(frozen=True)
class Conversion:
    """How one official file becomes the file an encoder loads."""

    target: str  # registry name of the converted file
    entries: tuple[str, ...]  # where the checkpoint keeps its state dict
    keep: Callable[[str], bool]  # the keys the encoder uses
    check: Callable[[Mapping[str, Tensor]], object]  # builds the encoder: WeightsError if not its layout


def _video_check(sd: Mapping[str, Tensor]) -> object:
    from extractors.onepeace_video import OnePeaceVideoEncoder

    return OnePeaceVideoEncoder.from_state_dict(sd)


def _audio_keep(key: str) -> bool:
    from extractors.onepeace_audio import is_audio_key

    return is_audio_key(key)


def _audio_check(sd: Mapping[str, Tensor]) -> object:
    from extractors.onepeace_audio import OnePeaceAudioEncoder

    return OnePeaceAudioEncoder.from_state_dict(sd)


CONVERSIONS: dict[str, Conversion] = {
    "onepeace_video_k400.pth": Conversion("onepeace_video.pt", ("state_dict",),
                                          lambda k: k.startswith("backbone."), _video_check),
    "one-peace.pt": Conversion("onepeace_audio.pt", ("model",), _audio_keep, _audio_check),
}


def conversion_for(name: str) -> Conversion | None:
    """The conversion of an official file name (None: not a file davel converts)."""
    return CONVERSIONS.get(name)


def convert(source: str | Path, name: str | None = None,
            directory: str | Path | None = None) -> Path:
    """Convert the official file at ``source`` (registry name ``name``, default its file
    name) into the weights directory; returns the converted file's path.

    Memory-mapped: the source's tensors are read from disk as they are written, so a
    machine with less memory than the file converts it. WeightsError (one line) for a
    file that is not the expected checkpoint.
    """
    source = Path(source)
    name = name or source.name
    conv = conversion_for(name)
    if conv is None:
        raise WeightsError(f"{name} is not a file davel converts (known: {', '.join(CONVERSIONS)})")
    if not source.is_file():
        raise WeightsError(f"{source} does not exist")
    obj, _ = load_inert(source)
    kept = tensors_of(obj, conv.entries, conv.keep, str(source))
    try:
        conv.check(kept)  # the encoder takes them (built on the tensors, nothing copied)
    except WeightsError as exc:
        raise WeightsError(f"{source} is not the {name} checkpoint davel expects: {exc}") from exc
    d = store.weights_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    dst = d / conv.target
    atomic_write(dst, lambda f: torch.save(kept, f))
    store.record_in_lock(d, conv.target, origin="converted", source=name,
                         source_sha256=store.sha256_of(source))
    return dst
