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
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from extractors.settings import ExtractionSettings
from extractors.timebase import TimeBase
from weights import storage
from weights.atomic import atomic_write, atomic_write_text
from weights.errors import InputError
from weights.storage import is_url

STREAMS = ("rgb", "flow", "vggish")

# FeatureMeta's field -> its key in the sidecar (the names 0.2.0 wrote)
_KEYS = {"steps": "T", "audio_steps": "T_audio"}


_KINDS = {str: "a string", int: "an integer", float: "a number", Mapping: "an object"}


def _check(value: Any, kind: type, key: str, where: str) -> Any:
    """``value`` when it is None or of ``kind`` (float: int too), else InputError (one line)."""
    kinds = (int, float) if kind is float else (kind,)
    # bool is an int to Python, never a count or a length to a user
    if value is None or (isinstance(value, kinds) and not isinstance(value, bool)):
        return float(value) if kind is float and value is not None else value
    raise InputError(f"{where}: unreadable sidecar: {key!r} must be {_KINDS[kind]}, got {value!r:.60}")


@dataclass(frozen=True)
class FeatureMeta(Mapping):
    """The sidecar ``<stem>_davel.json``: what a video's features were made from, and how.

    A field is None when the sidecar does not have it (features made elsewhere,
    hand-written sidecars). ``extra`` keeps the keys davel does not know, written
    back as they were. It reads like the dict it was in davel 0.2.0
    (``meta["duration"]``, ``meta.get("settings")``: the sidecar's own keys).

    ``nulls``: the fields written as null when they have no value (the others are
    left out): what the extractor always writes (``container_duration``), or the
    null entries of the document it was read from, so that :meth:`to_dict` gives
    that document back.
    """

    video: str | None = None                     # the path given to `davel extract`
    settings: Mapping[str, Any] | None = None    # ExtractionSettings.record(), as stored
    settings_key: str | None = None              # settings + extractor version + weights, hashed
    weights: Mapping[str, str] | None = None     # role -> weights file name
    steps: int | None = None                     # "T": rows of rgb and flow
    audio_steps: int | None = None               # "T_audio": rows of vggish
    duration: float | None = None                # seconds of decoded video
    container_duration: float | None = None      # what the container said (None: nothing)
    frames: int | None = None                    # decoded frames at the time base's fps
    source_fps: float | None = None
    size: tuple[int, int] | None = None          # width, height
    device: str | None = None
    feature_set: str | None = None               # extractors.feature_sets name (None: i3d-vggish)
    extra: Mapping[str, Any] = field(default_factory=dict)
    nulls: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "sidecar") -> FeatureMeta:
        """A sidecar's record; InputError (one line) for a value of the wrong type."""
        if not isinstance(doc, Mapping):
            raise InputError(f"{where}: unreadable sidecar: expected an object, got {type(doc).__name__}")
        keys = {_KEYS.get(f.name, f.name): f.name for f in fields(cls) if f.name not in ("extra", "nulls")}
        get = doc.get
        size = get("size")
        if size is not None:
            if not (isinstance(size, (list, tuple)) and len(size) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in size)):
                raise InputError(f"{where}: unreadable sidecar: 'size' must be [width, height], got {size!r:.60}")
            size = (size[0], size[1])
        return cls(
            video=_check(get("video"), str, "video", where),
            settings=_check(get("settings"), Mapping, "settings", where),
            settings_key=_check(get("settings_key"), str, "settings_key", where),
            weights=_check(get("weights"), Mapping, "weights", where),
            steps=_check(get("T"), int, "T", where),
            audio_steps=_check(get("T_audio"), int, "T_audio", where),
            duration=_check(get("duration"), float, "duration", where),
            container_duration=_check(get("container_duration"), float, "container_duration", where),
            frames=_check(get("frames"), int, "frames", where),
            source_fps=_check(get("source_fps"), float, "source_fps", where),
            size=size,
            device=_check(get("device"), str, "device", where),
            feature_set=_check(get("feature_set"), str, "feature_set", where),
            extra={k: v for k, v in doc.items() if k not in keys},
            nulls=frozenset(keys[k] for k, v in doc.items() if k in keys and v is None),
        )

    def to_dict(self) -> dict[str, Any]:
        """The sidecar document (JSON-ready)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "nulls") or (value is None and f.name not in self.nulls):
                continue
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[_KEYS.get(f.name, f.name)] = value
        out.update(self.extra)
        return out

    @property
    def timebase(self) -> TimeBase | None:
        """The time base the settings record, or None when they do not say."""
        s = self.settings or {}
        return TimeBase.from_dict(s) if all(k in s for k in ("fps", "stride", "window")) else None

    def extraction_settings(self) -> ExtractionSettings | None:
        """The settings the features were made with, or None when the sidecar does not say."""
        return None if self.settings is None else ExtractionSettings.from_record(self.settings)

    # the 0.2.0 dict view: the sidecar's keys
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


# what features made elsewhere have: no sidecar, so nothing is known and nothing is written
NO_SIDECAR = FeatureMeta()


@dataclass
class Features:
    """Per-video features: ``rgb``/``flow`` ``[T, 1024]``, ``vggish`` ``[T_a, 128]`` float32
    (features of other extractors: other widths, and ``flow`` may have width 0).

    ``meta`` is the sidecar (video, settings, ``duration`` in seconds, ...),
    empty for features made elsewhere; a plain dict given here is read as one.
    """

    rgb: np.ndarray
    flow: np.ndarray
    vggish: np.ndarray
    meta: FeatureMeta = NO_SIDECAR

    def __post_init__(self) -> None:
        if not isinstance(self.meta, FeatureMeta):  # 0.2.0 took the sidecar as a dict
            self.meta = FeatureMeta.from_dict(self.meta)

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


# The file names of each feature set's arrays, by stream: davel's UnAV-100 layout, and
# ONE-PEACE's as the CCNet repository reads them (one visual and one audio array, no flow).
LAYOUTS: dict[str, dict[str, str]] = {
    "i3d-vggish": {s: s for s in STREAMS},
    "one-peace": {"rgb": "one_peace_video_finetune", "vggish": "one_peace_audio"},
}
ONE_PEACE_FILES = LAYOUTS["one-peace"]


def paths(out_dir: Path | str, stem: str, feature_set: str = "i3d-vggish") -> dict[str, Path] | dict[str, str]:
    """The files ``davel extract`` writes for ``stem``: the set's arrays, then the sidecar
    (for an fsspec URL ``out_dir``: their URLs, as strings)."""
    if is_url(out_dir):
        return {k: storage.join(out_dir, name) for k, name in _names(stem, feature_set).items()}
    d = {s: out_dir / f"{stem}_{name}.npy" for s, name in LAYOUTS[feature_set].items()}
    d["meta"] = out_dir / f"{stem}_davel.json"
    return d


def has_features(out_dir: Path, stem: str) -> bool:
    """Every array of ``stem`` is there (davel's three, or the two ONE-PEACE ones)."""
    return all(f.is_file() for f in _files(Path(out_dir) / stem).values())


def _names(stem: str, feature_set: str) -> dict[str, str]:
    """The names of :func:`paths` (arrays, then ``meta``) without their folder."""
    d = {s: f"{stem}_{name}.npy" for s, name in LAYOUTS[feature_set].items()}
    d["meta"] = f"{stem}_davel.json"
    return d


def is_complete(out_dir: Path | str, stem: str, settings_key: str, feature_set: str = "i3d-vggish",
                listing: Collection[str] | None = None) -> bool:
    """The arrays and the sidecar of ``stem`` are there, made with ``settings_key``.

    For an fsspec URL ``out_dir`` the objects' existence is looked up in ``listing`` (the
    names under the prefix, :func:`weights.storage.names`: one listing for a whole batch)
    or, without it, asked of the filesystem; only the sidecar is read."""
    if is_url(out_dir):
        return _url_is_complete(out_dir, stem, settings_key, feature_set, listing)
    if not all(f.is_file() for f in paths(out_dir, stem, feature_set).values()):
        return False
    try:
        meta = read_meta(Path(out_dir) / stem)
    except InputError:  # a damaged sidecar: the outputs are made again
        return False
    return meta is not None and meta.settings_key == settings_key


def _url_is_complete(url: str, stem: str, settings_key: str, feature_set: str,
                     listing: Collection[str] | None) -> bool:
    names = _names(stem, feature_set)
    if listing is not None:
        if not all(name in listing for name in names.values()):
            return False
    elif not all(storage.exists(storage.join(url, name)) for name in names.values()):
        return False
    sidecar = storage.join(url, names["meta"])
    try:
        doc = json.loads(storage.read_bytes(sidecar))
    except (OSError, ValueError):  # gone since the listing, or damaged: made again
        return False
    try:
        meta = FeatureMeta.from_dict(doc, sidecar) if isinstance(doc, dict) else None
    except InputError:
        return False
    return meta is not None and meta.settings_key == settings_key


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
    return buf.getvalue()


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(f):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
        f.write(buf.getvalue())

    atomic_write(path, write)


def write(out_dir: Path | str, stem: str, features: Features) -> None:
    """Write the arrays atomically (the layout of ``features.meta.feature_set``), then the
    sidecar (``features.meta``) that marks them complete.

    ``out_dir`` may be an fsspec URL (``s3://bucket/prefix``...): then each file is one
    object (:mod:`weights.storage`), the sidecar still last."""
    if is_url(out_dir):
        _write_url(out_dir, stem, features)
        return
    p = paths(Path(out_dir), stem, features.meta.feature_set or "i3d-vggish")
    p["meta"].unlink(missing_ok=True)  # incomplete until the sidecar is back
    for s in STREAMS:
        if s in p:
            _save_npy(p[s], getattr(features, s))
    atomic_write_text(p["meta"], json.dumps(features.meta.to_dict(), indent=1, sort_keys=True))


def _write_url(url: str, stem: str, features: Features) -> None:
    p = paths(url, stem, features.meta.feature_set or "i3d-vggish")
    storage.remove(p["meta"])  # incomplete until the sidecar is back
    for s in STREAMS:
        if s in p:
            storage.write_bytes(p[s], _npy_bytes(getattr(features, s)))
    storage.write_bytes(p["meta"], json.dumps(features.meta.to_dict(), indent=1, sort_keys=True).encode("utf8"))


def read_meta(prefix: str | Path) -> FeatureMeta | None:
    """The ``PREFIX_davel.json`` sidecar, or None when absent or not a JSON object (e.g.
    features from elsewhere); InputError (one line) for a sidecar with values of the
    wrong type."""
    prefix = Path(prefix)
    path = prefix.parent / f"{prefix.name}_davel.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return FeatureMeta.from_dict(doc, str(path)) if isinstance(doc, dict) else None


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
    return Features(**arrays, meta=read_meta(prefix) or NO_SIDECAR)
