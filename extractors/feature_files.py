"""The UnAV-100 feature file layout: ``<stem>_rgb.npy``, ``_flow.npy``, ``_vggish.npy``.

A sidecar ``<stem>_davel.json`` written last records the settings and the
source the three files were made from, so a later run can skip a video whose
outputs are complete and were made the same way. Pre-extracted ONE-PEACE
features (``<stem>_one_peace_video_finetune.npy``, ``_one_peace_audio.npy``, as
the CCNet code reads them) are read too.
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
    """Per-video features: ``rgb``/``flow`` ``[T, 1024]``, ``vggish`` ``[T_a, 128]`` float32
    (features of other extractors: other widths, and ``flow`` may have width 0).

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
        """``[Cv, T]`` (I3D: 2048): rgb then flow, channels first (the detectors' layout)."""
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
    """Every array of ``stem`` is there (davel's three, or the two ONE-PEACE ones)."""
    return all(f.is_file() for f in _files(Path(out_dir) / stem).values())


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


# Pre-extracted ONE-PEACE features, named as the CCNet repository reads them
# (one visual and one audio array per video, 1536-d each).
ONE_PEACE_FILES = {"rgb": "one_peace_video_finetune", "vggish": "one_peace_audio"}


def _files(prefix: Path) -> dict[str, Path]:
    """The arrays of ``prefix`` by stream: davel's layout, or the ONE-PEACE one (no flow)."""
    davel_layout = {s: prefix.parent / f"{prefix.name}_{s}.npy" for s in STREAMS}
    one_peace = {s: prefix.parent / f"{prefix.name}_{n}.npy" for s, n in ONE_PEACE_FILES.items()}
    if not davel_layout["rgb"].is_file() and all(f.is_file() for f in one_peace.values()):
        return one_peace
    return davel_layout


def _check_npy_header(f: Path) -> None:
    """InputError (one line) unless ``f`` starts with a NumPy header and holds all the data
    it announces: np.load would take a zip for an .npz, and say little about a cut file."""
    try:
        with open(f, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise InputError(f"{f} is not a .npy file (no NumPy header)")
            fh.seek(0)
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # a later format: np.load alone judges it
                return
            offset = fh.tell()
    except OSError as exc:
        raise InputError(f"{f} cannot be read ({exc.strerror or exc})") from exc
    except (ValueError, SyntaxError, TypeError) as exc:
        raise InputError(f"{f} is not a readable .npy file (damaged header)") from exc
    if dtype.hasobject:
        raise InputError(f"{f} holds Python objects, not numbers")
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = f.stat().st_size - offset
    if have < need:
        raise InputError(f"{f} is truncated: its header announces shape {tuple(shape)} {dtype} "
                         f"({need} bytes) but {have} bytes follow")


def _load(f: Path, mmap: bool = False) -> np.ndarray:
    if not f.is_file():
        raise InputError(f"missing feature file {f}")
    _check_npy_header(f)
    try:  # with mmap, only the header is read
        a = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{f} is not a readable .npy file ({str(exc).splitlines()[0][:120]})") from exc
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or len(a) == 0:
        raise InputError(f"{f} must be a non-empty 2-D numeric array, got shape {a.shape} {a.dtype}")
    return a


def read_shapes(prefix: str | Path) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Shapes of the rgb, flow and audio arrays of ``PREFIX`` from their headers alone
    (nothing else is read; ONE-PEACE features have a flow of width 0); InputError (one
    line) for a missing or unusable file."""
    prefix = Path(prefix)
    files = _files(prefix)
    shapes = {s: tuple(int(x) for x in _load(f, mmap=True).shape) for s, f in files.items()}
    flow = shapes.get("flow", (shapes["rgb"][0], 0))
    if "flow" in shapes and shapes["rgb"] != flow:
        raise InputError(f"{prefix}: rgb {shapes['rgb']} and flow {flow} differ in shape")
    return shapes["rgb"], flow, shapes["vggish"]


def read(prefix: str | Path) -> Features:
    """Read ``PREFIX_rgb.npy``, ``_flow.npy``, ``_vggish.npy`` (``PREFIX`` = ``DIR/STEM``), or
    ``PREFIX_one_peace_video_finetune.npy`` and ``_one_peace_audio.npy`` (then ``rgb`` is
    the visual array and ``flow`` has width 0), and the sidecar when there is one;
    InputError (one line) for anything unusable."""
    prefix = Path(prefix)
    arrays = {s: _load(f).astype(np.float32, copy=False) for s, f in _files(prefix).items()}
    arrays.setdefault("flow", np.zeros((len(arrays["rgb"]), 0), np.float32))
    if arrays["rgb"].shape[0] != arrays["flow"].shape[0] or (
            arrays["flow"].shape[1] and arrays["rgb"].shape != arrays["flow"].shape):
        raise InputError(f"{prefix}: rgb {arrays['rgb'].shape} and flow {arrays['flow'].shape} differ in shape")
    for s, a in arrays.items():
        bad = ~np.isfinite(a)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InputError(f"{prefix}: {s} features contain NaN or infinity (first at row {row})")
    return Features(**arrays, meta=read_meta(prefix) or {})
