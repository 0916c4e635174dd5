"""The weights registry, the local cache, downloads and safe loading.

Every weights file davel uses is described once in ``registry.json`` (source
URLs, expected hash, original key layout, licence). Files live in a weights
directory: ``--weights-dir`` if given, else the cache (``$DAVEL_HOME``, else
the platform cache dir). A directory may hold ``davel-weights.json``, a lock
that records the sha256 of each file when davel wrote it (download, import,
stand-in): a file that no longer matches its lock, or a registry hash, is
refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from weights.atomic import atomic_write_text, commit_file, file_lock, temp_path_for
from weights.errors import WeightsError

LOCK_NAME = "davel-weights.json"


@dataclass(frozen=True)
class WeightSpec:
    """One registry entry: a published weights file and how to check it."""

    name: str
    role: str
    description: str
    urls: tuple[str, ...]
    layout: str
    format: str
    licence: str
    default: bool = False
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    git_blob_sha1: str | None = None
    made_from: str | None = None  # converted from this registry file, not downloaded

    @property
    def source(self) -> str:
        """Where the file comes from, in words (a URL, or the file it is converted from)."""
        return self.urls[0] if self.urls else f"converted from {self.made_from}"

    def expected(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 {self.sha256_prefix}..."
        if self.git_blob_sha1:
            return f"git blob {self.git_blob_sha1}"
        return "no published hash"


@lru_cache(maxsize=1)
def registry() -> dict[str, WeightSpec]:
    raw = json.loads(resources.files("weights").joinpath("registry.json").read_text())
    out = {}
    for name, entry in raw.items():
        entry = dict(entry)
        entry["urls"] = tuple(entry["urls"])
        out[name] = WeightSpec(name=name, **entry)
    return out


def spec(name: str) -> WeightSpec:
    try:
        return registry()[name]
    except KeyError as exc:
        known = ", ".join(sorted(registry()))
        raise WeightsError(f"unknown weights file '{name}' (known: {known})") from exc


def cache_dir() -> Path:
    """Where downloaded weights go: ``$DAVEL_HOME``, else the platform cache dir."""
    home = os.environ.get("DAVEL_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("davel"))


def weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit).expanduser() if explicit else cache_dir()


# ---------------------------------------------------------------- hashing


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int, algo: str) -> str:
    h = hashlib.sha1(f"blob {size}\0".encode()) if algo == "git-blob" else hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(path: Path, algo: str = "sha256") -> str:
    """``sha256`` or ``git-blob`` (git's blob id) of a file, cached per (path, mtime, size)."""
    st = Path(path).stat()
    return _digest(str(path), st.st_mtime_ns, st.st_size, algo)


def sha256_of(path: Path) -> str:
    return digest(path, "sha256")


def _fails_registry_hash(path: Path, s: WeightSpec) -> bool:
    sha = sha256_of(path)
    return bool((s.sha256 and sha != s.sha256)
                or (s.sha256_prefix and not sha.startswith(s.sha256_prefix))
                or (s.git_blob_sha1 and digest(path, "git-blob") != s.git_blob_sha1))


def read_lock(directory: Path) -> dict[str, dict]:
    path = directory / LOCK_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not readable JSON: delete it and verify the weights again") from exc


def record_in_lock(directory: Path, filename: str, origin: str, **extra: Any) -> None:
    """Record a file's sha256 in the directory's lock (atomic rewrite, under an
    inter-process lock so concurrent downloads and imports keep every entry)."""
    sha = sha256_of(directory / filename)
    with file_lock(directory / LOCK_NAME):
        lock = read_lock(directory)
        lock[filename] = {"sha256": sha, "origin": origin, **extra}
        atomic_write_text(directory / LOCK_NAME, json.dumps(lock, indent=1, sort_keys=True))


def check_file(path: Path, registry_spec: WeightSpec | None = None) -> str:
    """Refuse a file that fails its lock entry or its registry hash; returns its sha256.

    A file recorded in the lock as a stand-in or an imported checkpoint is
    checked against the lock only: the registry hash describes the published
    file, not those.
    """
    sha = sha256_of(path)
    entry = read_lock(path.parent).get(path.name)
    if entry is not None and entry.get("sha256") != sha:
        raise WeightsError(
            f"{path} fails its hash check (sha256 {sha[:12]}..., recorded {entry.get('sha256', '?')[:12]}...): "
            f"the file changed after it was written; run `davel weights download {path.name} --force`")
    if registry_spec is not None and (entry is None or entry.get("origin") == "registry"):
        if _fails_registry_hash(path, registry_spec):
            raise WeightsError(
                f"{path} fails its hash check (expected {registry_spec.expected()}, got sha256 {sha[:12]}...): "
                f"run `davel weights download {path.name} --force`")
    return sha


# ---------------------------------------------------------------- locating


def locate(name: str, directory: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """Path of registry file ``name`` in the weights directory, checked.

    A missing file gives one line naming the file, where it comes from and the
    command that fetches it.
    """
    s = spec(name)
    d = weights_dir(directory)
    path = d / name
    if not path.is_file():
        where = f" --weights-dir {d}" if directory else ""
        if s.made_from:
            raise WeightsError(
                f"missing weights file '{name}' in {d} (converted from {s.made_from}); make it with "
                f"`davel weights download {s.made_from}{where}`, or `davel weights import "
                f"PATH/{s.made_from}{where}` for a copy you have")
        raise WeightsError(
            f"missing weights file '{name}' in {d} (source: {s.urls[0]}); "
            f"fetch it with `davel weights download {name}`" + where)
    if verify:
        check_file(path, s)
    return path


def locate_role(role: str, directory: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """The file for ``role`` (e.g. ``"raft"``): the first registry file of that role
    present in the directory, default files first; if none is, the default's error."""
    candidates = sorted((s for s in registry().values() if s.role == role), key=lambda s: not s.default)
    d = weights_dir(directory)
    for s in candidates:
        if (d / s.name).is_file():
            return locate(s.name, directory, verify)
    return locate(candidates[0].name, directory, verify)


# ---------------------------------------------------------------- loading


def load_state(path: Path, allow_numpy: bool = False) -> Any:
    """``torch.load(weights_only=True)``; numpy arrays only through an explicit allow-list.

    A file that needs any other pickle code is refused with one line.
    """
    _check_readable_checkpoint(path)
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_numpy_allow_list()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            name = found.group(1) if found else ""
            raise WeightsError(f"{path} needs pickle code to load and is refused (only plain tensors "
                               f"are accepted{': it references ' + name[:80] if name else ''})") from exc
        raise WeightsError(f"{path} is not a readable weights file (not a torch checkpoint)") from exc
    except Exception as exc:  # torch's safe unpickler raises assorted types on non-checkpoints
        raise WeightsError(f"{path} is not a readable weights file ({first_line(exc)})") from exc


def _check_readable_checkpoint(path: Path) -> None:
    """WeightsError for an empty file or a cut zip archive (torch's own errors for these
    are an EOFError "empty" and an OSError "Invalid argument")."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise WeightsError(f"{path} is not a readable weights file (empty file, 0 bytes)")
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is not a readable weights file (truncated or damaged: "
                           f"its zip archive has no end record; download or copy it again)")


def first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters) for one-line errors."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else "empty"
    if len(line) > limit:
        line = line[:limit - 3] + "..."
    return f"{type(exc).__name__}: {line}"


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix nn.DataParallel adds (keys without it pass unchanged)."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_state_dict_file(source: Any, what: str) -> Mapping[str, torch.Tensor]:
    """A state dict from a path (safely loaded) or as given; one-line WeightsError otherwise."""
    state = source if isinstance(source, Mapping) else load_state(Path(source))
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{describe_source(source)} is not a {what} state dict (expected a dict of tensors)")
    return state


def check_layout(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                 where: str, what: str) -> None:
    """Refuse a state dict whose keys or shapes differ from ``expected`` (one line)."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise WeightsError(f"{where} does not have the {what} layout "
                           f"({len(missing)} keys missing, {len(extra)} unexpected; {detail})")
    for k, ref in expected.items():
        if tuple(state[k].shape) != tuple(ref.shape):
            raise WeightsError(f"{where}: {k} has shape {list(state[k].shape)}, {what} needs {list(ref.shape)}")


def describe_source(source: Any) -> str:
    """How a weights source is named in messages: its path, or "the given state dict"."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"


def _numpy_allow_list() -> list:
    """The numpy globals a pickled ndarray needs, and nothing else."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "uint8")]
    # Arrays pickled under numpy 1.x name the rebuild function by its old module path.
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


# ---------------------------------------------------------------- downloading


def download(name: str, directory: str | os.PathLike | None = None, force: bool = False,
             progress: bool = True) -> Path:
    """Download registry file ``name`` into the weights directory, checking its hash."""
    s = spec(name)
    if s.made_from:
        raise WeightsError(f"{name} is not downloaded: it is converted from {s.made_from} "
                           f"(`davel weights download {s.made_from}` does both)")
    d = weights_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    dst = d / name
    if dst.is_file() and not force:
        check_file(dst, s)
        return dst
    errors = []
    for url in s.urls:
        tmp = str(temp_path_for(dst))
        try:
            if url.startswith("gdrive:"):
                import gdown

                if gdown.download(id=url.split(":", 1)[1], output=tmp, quiet=not progress) is None:
                    raise OSError("Google Drive refused the download")
            else:
                torch.hub.download_url_to_file(url, tmp, hash_prefix=s.sha256_prefix, progress=progress)
            if _fails_registry_hash(Path(tmp), s):
                raise WeightsError(f"downloaded {name} fails its hash check (expected {s.expected()})")
            commit_file(tmp, dst)
            record_in_lock(d, name, origin="registry", url=url)
            return dst
        except WeightsError:
            Path(tmp).unlink(missing_ok=True)
            raise
        except Exception as exc:  # network errors of every kind: try the next source
            Path(tmp).unlink(missing_ok=True)
            errors.append(f"{url}: {first_line(exc, 100)}")
    raise WeightsError(f"could not download {name} ({'; '.join(errors)[:300]})")
