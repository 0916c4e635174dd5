"""Features of a video, extracted once: a cache keyed by the file and the extractor settings.

Entries live under ``<cache>/features/<key>/`` in the feature-file layout, so
an entry is complete exactly when its sidecar is there. An entry that no
longer reads back (truncated, corrupt) is extracted again.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from extractors import feature_files
from extractors.extract import ExtractionSettings, FeatureExtractor
from extractors.feature_files import Features
from weights import store
from weights.errors import InputError

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return store.cache_dir() / "features"


class FeatureCache:
    """Extract a video's features unless the cache already holds them for the same
    file (path, size, modification time) and the same settings and weights."""

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: ExtractionSettings | None = None):
        self.extractor = FeatureExtractor(weights_dir, device, settings)

    def _slot(self, path: Path) -> tuple[Path, str]:
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from exc
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.extractor.settings_key}"
        return cache_root() / hashlib.sha256(ident.encode()).hexdigest()[:24], path.stem

    def features(self, path: str | Path, on_window: Callable[[int], None] | None = None) -> Features:
        """The features of ``path`` (``meta`` holds the sidecar: duration, settings, ...)."""
        path = Path(path)
        slot, stem = self._slot(path)
        if feature_files.is_complete(slot, stem, self.extractor.settings_key):
            try:
                return feature_files.read(slot / stem)
            except InputError as exc:
                log.warning("%s: the cached features are damaged (%s); extracting again", path, exc)
        feats = self.extractor.extract(path, on_window=on_window)
        feature_files.write(slot, stem, feats)
        return feats
