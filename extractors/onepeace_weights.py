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
    from extractors.onepeace_audio import audio_keys

    return bool(audio_keys([key]))


def _audio_check(sd: Mapping[str, Tensor]) -> object:
    from extractors.onepeace_audio import from_state_dict

    # in the file's own precision: a check, not a copy
    return from_state_dict(sd, dtype=next(iter(sd.values())).dtype)


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


# ---------------------------------------------------------------- stand-ins


def _standin(model: torch.nn.Module, prefix: str, salt: int) -> dict[str, Tensor]:
    """Stand-in tensors for a model built on the meta device, in its own key layout:
    float tensors by davel's stand-in rule, integer buffers (derived indices) as built."""
    from weights.standin import standin_tensor

    out = {}
    for key, t in model.state_dict().items():
        name = prefix + key
        if t.is_floating_point():
            out[name] = standin_tensor(name, t.shape, salt)
        else:
            out[name] = t
    return out


def standin_sources(directory: str | Path, depth: int | None = None, salt: int = 0) -> dict[str, Path]:
    """Write stand-in ``onepeace_video_k400.pth`` and ``one-peace.pt`` in the official
    layouts (official widths; ``depth`` layers, default the official 40), each with a
    configuration object beside the tensors as the real files have, then convert them
    as downloads are. Returns ``{official name: converted path}``. Random, not trained:
    features made with them mean nothing."""
    import argparse

    from extractors.onepeace_audio import OnePeaceAudio
    from extractors.onepeace_video import OnePeaceVideoEncoder, relative_position_index
    from weights.standin import standin_tensor

    d = store.weights_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        video = OnePeaceVideoEncoder(**({} if depth is None else {"depth": depth}))
        audio = OnePeaceAudio(**({} if depth is None else {"layers": depth}))
    video_sd = _standin(video, "backbone.", salt)
    video_sd["backbone.image_adapter.rp_bucket"] = relative_position_index(video.image_size // 16)
    # what the official files hold besides the encoders' tensors (left out by the conversion)
    others = {"cls_head.fc_cls.weight": (400, video.embed_dim), "cls_head.fc_cls.bias": (400,)}
    video_sd.update({k: standin_tensor(k, shape, salt) for k, shape in others.items()})
    audio_sd = _standin(audio, "", salt)
    others = {"encoder_wrapper.text_adapter.embed_tokens.weight": (8, audio.embed_dim),
              "encoder_wrapper.fusion_model.layers.0.text_ffn.0.wi_0.weight": (8, audio.embed_dim),
              "text_proj.weight": (8, audio.embed_dim), "logit_scale": ()}
    audio_sd.update({k: standin_tensor(k, shape, salt) for k, shape in others.items()})
    files = {
        "onepeace_video_k400.pth": {"meta": {"config": argparse.Namespace(model="OnePeaceViT", standin=True)},
                                    "state_dict": video_sd},
        "one-peace.pt": {"cfg": argparse.Namespace(arch="one_peace", standin=True), "model": audio_sd},
    }
    converted = {}
    for name, obj in files.items():
        src = d / name
        atomic_write(src, lambda f, obj=obj: torch.save(obj, f))
        store.record_in_lock(d, name, origin="standin", salt=salt, depth=depth)
        converted[name] = convert(src, name, d)
    return converted
