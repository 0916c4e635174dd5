"""Features of a video, extracted once: a cache keyed by the file and the extractor settings.

Entries live under ``<cache>/features/<key>/`` in the feature-file layout, so
an entry is complete exactly when its sidecar is there. An entry that no
longer reads back (truncated, corrupt, sidecar gone) is extracted again.

The cache is kept under ``$DAVEL_CACHE_MAX_GB`` (default 20): after each new
entry, the least recently used ones go (the new one never does). An entry's
last use is its folder's modification time, touched on every hit. Eviction
holds a file lock so that two processes never count and delete at once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from extractors import feature_files, feature_sets
from extractors.extract import ExtractionSettings, FeatureExtractor
from extractors.feature_files import Features
from weights import store
from weights.atomic import file_lock
from weights.errors import DavelError, InputError

if TYPE_CHECKING:
    from extractors.onepeace import OnePeaceSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_GB = 20.0


def cache_root() -> Path:
    return store.cache_dir() / "features"


def max_bytes_from_env() -> int:
    """``$DAVEL_CACHE_MAX_GB`` in bytes (default 20 GB); DavelError (one line) if unusable."""
    raw = os.environ.get("DAVEL_CACHE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        gb = -1.0
    if not gb >= 0:
        raise DavelError(f"DAVEL_CACHE_MAX_GB must be a number of GB >= 0, got '{raw}'")
    return int(gb * 1e9)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int  # bytes
    last_used: float  # seconds since the epoch
    video: str | None  # from the sidecar, when it reads


class CacheDir:
    """The cache's folder: list, measure, clear and trim it (no networks needed)."""

    def __init__(self, root: str | Path | None = None, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.max_bytes = max_bytes_from_env() if max_bytes is None else max_bytes

    def _lock(self):
        return file_lock(self.root / "evict")

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first (hidden left-overs are not entries)."""
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
                used = d.stat().st_mtime
            except OSError:  # removed by another process meanwhile
                continue
            try:
                meta = next((feature_files.read_meta(f.with_name(f.name[:-len("_davel.json")]))
                             for f in d.glob("*_davel.json")), None)
            except InputError:  # a damaged entry still counts (and can be evicted)
                meta = None
            out.append(CacheEntry(d, size, used, meta.video if meta is not None else None))
        return sorted(out, key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries())

    def _remove(self, path: Path) -> None:
        # renamed first so no reader finds a half-deleted entry under its key
        trash = path.with_name(f".trash-{path.name}-{secrets.token_hex(4)}")
        try:
            path.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def clear(self) -> tuple[int, int]:
        """Remove every entry; ``(entries removed, bytes freed)``."""
        with self._lock():
            gone = self.entries()
            for e in gone:
                self._remove(e.path)
            for left in self.root.glob(".trash-*"):
                shutil.rmtree(left, ignore_errors=True)
        return len(gone), sum(e.size for e in gone)

    def enforce_limit(self, keep: Path | None = None) -> tuple[int, int]:
        """Evict least recently used entries (never ``keep``) until the total fits the
        limit; ``(entries removed, bytes freed)``."""
        removed = freed = 0
        with self._lock():
            entries = self.entries()
            total = sum(e.size for e in entries)
            for e in entries:
                if total <= self.max_bytes:
                    break
                if keep is not None and e.path == Path(keep):
                    continue
                self._remove(e.path)
                total -= e.size
                removed, freed = removed + 1, freed + e.size
        if removed:
            log.info("feature cache: evicted %d entries (%d bytes) to stay under %d bytes",
                     removed, freed, self.max_bytes)
        return removed, freed


class FeatureCache:
    """Extract a video's features unless the cache already holds them for the same
    file (path, size, modification time) and the same settings and weights.

    The cache is the video path of ``Detector.detect`` and ``davel detect``, which run
    many and long videos in one process, so the extractor it makes tunes the allocator
    (``tune_allocator``, see :class:`~extractors.extract.FeatureExtractor`); pass
    ``tune_allocator=False``, or an ``extractor`` of your own, to leave the process alone.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: ExtractionSettings | OnePeaceSettings | None = None, root: str | Path | None = None,
                 max_bytes: int | None = None, extractor: FeatureExtractor | None = None,
                 tune_allocator: bool = True):
        self.dir = CacheDir(root, max_bytes)
        # the settings say which feature set (ExtractionSettings: I3D + VGGish; OnePeaceSettings)
        fs = feature_sets.feature_set(getattr(settings, "feature_set", feature_sets.DEFAULT))
        self.extractor = extractor or fs.extractor(weights_dir, device, settings, tune_allocator=tune_allocator)
        self.feature_set = getattr(self.extractor, "feature_set", fs.name)

    def entries(self) -> list[CacheEntry]:
        return self.dir.entries()

    def total_bytes(self) -> int:
        return self.dir.total_bytes()

    def clear(self) -> tuple[int, int]:
        return self.dir.clear()

    def enforce_limit(self, keep: Path | None = None) -> tuple[int, int]:
        return self.dir.enforce_limit(keep)

    def _slot(self, path: Path) -> tuple[Path, str]:
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from exc
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.extractor.settings_key}"
        return self.dir.root / hashlib.sha256(ident.encode()).hexdigest()[:24], path.stem

    def _read(self, slot: Path, stem: str) -> Features:
        feats = feature_files.read(slot / stem)
        if feats.meta.steps not in (None, len(feats.rgb)) or \
                feats.meta.audio_steps not in (None, len(feats.vggish)):
            raise InputError(f"{slot / stem}: the arrays do not match their sidecar")
        return feats

    def features(self, path: str | Path, on_window: Callable[[int], None] | None = None) -> Features:
        """The features of ``path`` (``meta`` holds the sidecar: duration, settings, ...)."""
        path = Path(path)
        slot, stem = self._slot(path)
        if feature_files.is_complete(slot, stem, self.extractor.settings_key, self.feature_set):
            try:
                feats = self._read(slot, stem)
                os.utime(slot)  # last use, for eviction
                return feats
            # a damaged entry can fail in more ways than read's own checks; any is a miss
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: the cached features are damaged (%s); extracting again", path,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        feats = self.extractor.extract(path, on_window=on_window)
        feature_files.write(slot, stem, feats)
        os.utime(slot)
        self.dir.enforce_limit(keep=slot)
        return feats
