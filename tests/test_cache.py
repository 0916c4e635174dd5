"""The feature cache: size limit (LRU), damaged entries, `davel cache info/clear`, and the
allocator settings extraction runs under. A fake extractor stands in: no network runs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from extractors import memory
from extractors.cache import CacheDir, FeatureCache, max_bytes_from_env
from extractors.feature_files import Features
from extractors.vggish import VGGish, embed_examples
from weights.errors import DavelError

ROWS = 50  # one entry: 50 x (1024 + 1024 + 128) float32 + headers, about 435 kB


class FakeExtractor:
    settings_key = "fake"

    def __init__(self):
        self.calls = 0

    def extract(self, path, on_window=None):
        self.calls += 1
        rng = np.random.default_rng(self.calls)
        meta = {"video": str(path), "settings_key": self.settings_key, "T": ROWS, "T_audio": ROWS}
        return Features(rng.random((ROWS, 1024), np.float32), rng.random((ROWS, 1024), np.float32),
                        rng.random((ROWS, 128), np.float32), meta)


def _videos(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"v{i}.mp4"
        p.write_bytes(b"not decoded by the fake" + bytes([i]))
        out.append(p)
    return out


def _cache(tmp_path: Path, max_bytes: int = 10**12) -> FeatureCache:
    return FeatureCache(root=tmp_path / "cache", max_bytes=max_bytes, extractor=FakeExtractor())


def test_limit_evicts_least_recently_used(tmp_path):
    cache = _cache(tmp_path)
    a, b, c, d = _videos(tmp_path, 4)
    for i, v in enumerate((a, b, c)):
        cache.features(v)
        os.utime(cache._slot(v)[0], (1000 + i, 1000 + i))  # a oldest, then b, then c
    one = cache.entries()[0].size
    cache.features(a)  # a hit makes a the most recently used
    assert cache.extractor.calls == 3
    cache.dir.max_bytes = 2 * one + one // 2  # room for two entries
    cache.features(d)
    left = {e.video for e in cache.entries()}
    assert left == {str(a), str(d)}  # b and c (the oldest now) are gone
    assert cache.total_bytes() == 2 * one


def test_the_entry_just_written_is_never_evicted(tmp_path):
    cache = _cache(tmp_path, max_bytes=0)
    a, b = _videos(tmp_path, 2)
    cache.features(a)
    cache.features(b)
    assert [e.video for e in cache.entries()] == [str(b)]


def test_limit_from_env(monkeypatch):
    monkeypatch.delenv("DAVEL_CACHE_MAX_GB", raising=False)
    assert max_bytes_from_env() == 20 * 10**9
    monkeypatch.setenv("DAVEL_CACHE_MAX_GB", "0.5")
    assert max_bytes_from_env() == 5 * 10**8
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("DAVEL_CACHE_MAX_GB", bad)
        with pytest.raises(DavelError, match="DAVEL_CACHE_MAX_GB"):
            max_bytes_from_env()


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:300])


def _flip_header_bit(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[20] ^= 0x04  # inside the header dict ("{'descr': '<f4', ...")
    f.write_bytes(bytes(data))


def _wrong_shape(f: Path) -> None:
    np.save(f, np.zeros((ROWS - 1, 1024), np.float32))


@pytest.mark.parametrize("damage", [_truncate, _flip_header_bit, _wrong_shape, Path.unlink,
                                    lambda f: f.with_name("v0_davel.json").write_text("{not json")])
def test_damaged_entry_is_extracted_again(tmp_path, caplog, damage):
    cache = _cache(tmp_path)
    (video,) = _videos(tmp_path, 1)
    first = cache.features(video)
    slot, stem = cache._slot(video)
    target = slot / f"{stem}_rgb.npy" if damage is not Path.unlink else slot / f"{stem}_davel.json"
    damage(target)
    again = cache.features(video)
    assert cache.extractor.calls == 2
    assert again.rgb.shape == first.rgb.shape
    assert cache.features(video).rgb.tobytes() == again.rgb.tobytes()  # repaired: a hit now
    assert cache.extractor.calls == 2


def test_cli_info_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("DAVEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAVEL_CACHE_MAX_GB", "3")
    cache = FeatureCache(max_bytes=None, extractor=FakeExtractor())
    for v in _videos(tmp_path, 2):
        cache.features(v)
    total = cache.total_bytes()
    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info"])
    assert info.exit_code == 0, info.output
    assert str(tmp_path / "home" / "features") in info.output
    assert "entries: 2" in info.output and f"({total} bytes)" in info.output
    assert "limit: 3.00 GB" in info.output
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert f"removed 2 entries, freed {total / 1e9:.2f} GB ({total} bytes)" in cleared.output
    assert CacheDir().entries() == []
    monkeypatch.setenv("DAVEL_CACHE_MAX_GB", "many")
    bad = runner.invoke(app, ["cache", "info"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "DAVEL_CACHE_MAX_GB" in bad.output


def test_readme_mentions_the_cache():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "Feature cache" in readme and "DAVEL_CACHE_MAX_GB" in readme and "davel cache clear" in readme


def test_memory_calls_are_safe_and_repeatable(monkeypatch):
    first = memory.configure_allocator()
    assert memory.configure_allocator() == first
    memory.release_free_memory()
    memory.release_free_memory()
    for _ in range(2):
        with memory.network_pass():
            x = bytearray(4 << 20)
        del x
    with pytest.raises(ValueError), memory.network_pass():  # an error inside still restores and trims
        raise ValueError
    monkeypatch.setattr(memory.sys, "platform", "darwin")  # elsewhere: no-ops
    assert memory._glibc() is None
    memory.release_free_memory()
    with memory.network_pass():
        pass


def test_vggish_batch_size_does_not_change_embeddings():
    torch.manual_seed(0)
    model = VGGish().eval()
    examples = np.random.default_rng(0).standard_normal((40, 96, 64)).astype(np.float32)
    big = embed_examples(examples, model, batch_size=256)
    small = embed_examples(examples, model, batch_size=32)
    assert torch.equal(big, small)
