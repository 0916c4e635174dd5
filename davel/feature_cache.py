"""Features of a video, extracted once: a cache keyed by the file and the extractor settings."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from extractors import decode, feature_files
from extractors.extract import ExtractionSettings, FeatureExtractor
from extractors.feature_files import Features
from weights import store


def cache_root() -> Path:
    return store.cache_dir() / "features"


class CachedExtractor:
    """Extract a video's features unless the cache already holds them for the same
    file (path, size, modification time) and the same settings and weights."""

    def __init__(self, weights_dir: str | Path | None = None, device: str = "auto",
                 settings: ExtractionSettings | None = None):
        self.extractor = FeatureExtractor(weights_dir, device, settings)

    def _slot(self, path: Path) -> tuple[Path, str]:
        st = path.stat()
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.extractor.settings_key}"
        return cache_root() / hashlib.sha256(ident.encode()).hexdigest()[:24], path.stem

    def features(self, path: Path, on_window: Callable[[int], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> tuple[Features, float]:
        """``(features, duration in seconds)`` of ``path``."""
        info = decode.probe(path)
        slot, stem = self._slot(path)
        key = self.extractor.settings_key
        if feature_files.is_complete(slot, stem, key):
            return feature_files.read(slot / stem), info.duration
        feats = self.extractor.extract(path, on_window=on_window, warn=warn)
        feature_files.write(slot, stem, feats, feats.meta)
        return feats, info.duration
