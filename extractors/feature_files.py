"""The UnAV-100 feature file layout: ``<stem>_rgb.npy``, ``_flow.npy``, ``_vggish.npy``.

A sidecar ``<stem>_davel.json`` written last records the settings and the
source the three files were made from, so a later run can skip a video whose
outputs are complete and were made the same way.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from weights.atomic import atomic_write, atomic_write_text
from weights.errors import InputError

STREAMS = ("rgb", "flow", "vggish")


@dataclass
class Features:
    """Per-video features: ``rgb``/``flow`` ``[T, 1024]``, ``vggish`` ``[T_a, 128]`` float32.

    ``meta`` is the sidecar record (video, settings, ``duration`` in seconds, ...),
    empty for features made elsewhere.
    """

    rgb: np.ndarray
    flow: np.ndarray
    vggish: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        """Steps the detectors use: the shorter of the two modalities."""
        return min(len(self.rgb), len(self.vggish))

    def visual(self) -> np.ndarray:
        """``[2048, T]``: rgb then flow, channels first (the detectors' layout)."""
        t = self.num_steps
        return np.concatenate([self.rgb[:t], self.flow[:t]], axis=1).T.astype(np.float32)

    def audio(self) -> np.ndarray:
        """``[128, T]`` channels first."""
        return np.ascontiguousarray(self.vggish[: self.num_steps].T.astype(np.float32))


def paths(out_dir: Path, stem: str) -> dict[str, Path]:
    d = {s: out_dir / f"{stem}_{s}.npy" for s in STREAMS}
    d["meta"] = out_dir / f"{stem}_davel.json"
    return d


def has_features(out_dir: Path, stem: str) -> bool:
    """All three arrays of ``stem`` are there (features made by davel or elsewhere)."""
    p = paths(Path(out_dir), stem)
    return all(p[s].is_file() for s in STREAMS)


def is_complete(out_dir: Path, stem: str, settings_key: str) -> bool:
    """The arrays and the sidecar of ``stem`` are there, made with ``settings_key``."""
    p = paths(out_dir, stem)
    if not all(p[s].is_file() for s in (*STREAMS, "meta")):
        return False
    try:
        return json.loads(p["meta"].read_text()).get("settings_key") == settings_key
    except (OSError, ValueError):
        return False


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(f):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
        f.write(buf.getvalue())

    atomic_write(path, write)


def write(out_dir: Path, stem: str, features: Features) -> None:
    """Write the three arrays atomically, then the sidecar (``features.meta``) that marks
    them complete."""
    p = paths(Path(out_dir), stem)
    p["meta"].unlink(missing_ok=True)  # incomplete until the sidecar is back
    for s in STREAMS:
        _save_npy(p[s], getattr(features, s))
    atomic_write_text(p["meta"], json.dumps(features.meta, indent=1, sort_keys=True))


def read_meta(prefix: str | Path) -> dict | None:
    """The ``PREFIX_davel.json`` sidecar, or None when absent or unreadable (e.g. features
    from elsewhere)."""
    prefix = Path(prefix)
    try:
        meta = json.loads((prefix.parent / f"{prefix.name}_davel.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def read_shapes(prefix: str | Path) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Shapes of ``PREFIX_rgb.npy``, ``_flow.npy``, ``_vggish.npy`` from their headers alone
    (nothing else is read); InputError (one line) for a missing or unusable file."""
    prefix = Path(prefix)
    shapes = []
    for s in STREAMS:
        f = prefix.parent / f"{prefix.name}_{s}.npy"
        try:
            mapped = np.load(f, mmap_mode="r", allow_pickle=False)  # maps, reads only the header
            shape, dtype = mapped.shape, mapped.dtype
            del mapped
        except FileNotFoundError as exc:
            raise InputError(f"missing feature file {f}") from exc
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{f} is not a readable .npy file ({str(exc).splitlines()[0][:120]})") from exc
        if len(shape) != 2 or not np.issubdtype(dtype, np.number) or shape[0] == 0:
            raise InputError(f"{f} must be a non-empty 2-D numeric array, got shape {shape} {dtype}")
        shapes.append(tuple(int(x) for x in shape))
    if shapes[0] != shapes[1]:
        raise InputError(f"{prefix}: rgb {shapes[0]} and flow {shapes[1]} differ in shape")
    return shapes[0], shapes[1], shapes[2]


def read(prefix: str | Path) -> Features:
    """Read ``PREFIX_rgb.npy``, ``_flow.npy``, ``_vggish.npy`` (``PREFIX`` = ``DIR/STEM``) and
    the sidecar when there is one; InputError (one line) for anything unusable."""
    prefix = Path(prefix)
    arrays = {}
    for s in STREAMS:
        f = prefix.parent / f"{prefix.name}_{s}.npy"
        if not f.is_file():
            raise InputError(f"missing feature file {f}")
        try:
            a = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{f} is not a readable .npy file ({str(exc).splitlines()[0][:120]})") from exc
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or len(a) == 0:
            raise InputError(f"{f} must be a non-empty 2-D numeric array, got shape {a.shape} {a.dtype}")
        arrays[s] = a.astype(np.float32, copy=False)
    if arrays["rgb"].shape != arrays["flow"].shape:
        raise InputError(f"{prefix}: rgb {arrays['rgb'].shape} and flow {arrays['flow'].shape} differ in shape")
    if not np.all(np.isfinite(arrays["rgb"])) or not np.all(np.isfinite(arrays["vggish"])) \
            or not np.all(np.isfinite(arrays["flow"])):
        raise InputError(f"{prefix}: features contain NaN or infinity")
    return Features(**arrays, meta=read_meta(prefix) or {})
