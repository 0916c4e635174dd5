"""FeatureExtractor around the networks: duration, damaged files, settings, fp32 scope, devices.

The visual networks are replaced by a cheap stand-in that consumes the decoded
frames (RAFT + I3D are covered by test_visual.py and test_pipeline_parity.py).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from extractors import feature_files
from extractors.devices import resolve_device, strict_fp32
from extractors.extract import ExtractionSettings, FeatureExtractor, decoded_duration
from extractors.timebase import I3D_VGGISH
from weights import store

from media_files import encode_frames, write_video


@pytest.fixture
def cheap_visual(monkeypatch):
    from extractors.visual import VisualFeatureExtractor

    def fake(self, frames, on_window=None):
        t = I3D_VGGISH.num_steps(sum(1 for _ in frames))
        return np.ones((t, 1024), np.float32), np.ones((t, 1024), np.float32)

    monkeypatch.setattr(VisualFeatureExtractor, "__call__", fake)


class _NoSeek(io.RawIOBase):
    """A write-only stream: the muxer cannot go back to fill in the duration (live recording)."""

    def __init__(self, f):
        self.f = f

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self.f.write(b)


def live_webm(path: Path, n: int = 50) -> Path:
    with open(path, "wb") as fh:
        c = av.open(_NoSeek(fh), "w", format="webm")
        s = c.add_stream("libvpx-vp9", rate=25)
        s.width, s.height = 64, 48
        s.pix_fmt = "yuv420p"
        encode_frames(c, s, (np.full((48, 64, 3), (i * 5) % 255, np.uint8) for i in range(n)))
        c.close()
    return path


def test_a_container_without_duration_uses_the_decoded_span(tmp_path, standin_weights, cheap_visual):
    from extractors.decode import probe

    path = live_webm(tmp_path / "live.webm", 50)
    assert probe(path).duration is None  # what live-recorded WebM/MKV files look like
    feats = FeatureExtractor(standin_weights, "cpu").extract(path)
    assert feats.meta["duration"] == pytest.approx(2.0) and feats.meta["container_duration"] is None


def test_a_truncated_file_keeps_what_decodes_and_says_how_much(tmp_path, standin_weights, cheap_visual,
                                                              caplog):
    whole = write_video(tmp_path / "whole.mkv", 100, fps=25)  # 4 s, duration in the header
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with caplog.at_level(logging.WARNING):
        feats = FeatureExtractor(standin_weights, "cpu").extract(cut)
    assert feats.meta["duration"] < 3.0 and feats.meta["container_duration"] == pytest.approx(4.0, abs=0.1)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "the container says 4.0" in text and "of video decode" in text
    assert "of audio decode" in text


def test_decoded_duration_rule(caplog):
    assert decoded_duration(None, 50, 25.0, "v") == 2.0
    assert decoded_duration(2.04, 50, 25.0, "v") == 2.04  # the container's, when it agrees
    with caplog.at_level(logging.WARNING):
        assert decoded_duration(60.0, 50, 25.0, "v") == 2.0
    assert "the container says 60.00 s but 2.00 s of video decode" in caplog.text


def test_settings_are_frozen_and_carry_the_time_base():
    s = ExtractionSettings(crop=112)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.crop = 64
    assert {f.name for f in dataclasses.fields(s)} == {"vggish_pca", "flow", "raft_iterations",
                                                      "short_side", "crop"}
    assert hash(s) == hash(ExtractionSettings(crop=112)) and s.timebase == I3D_VGGISH
    assert s.record()["stride"] == 8 and ExtractionSettings.from_record(s.record()) == s
    with pytest.raises(Exception, match="short side >= 128"):
        ExtractionSettings(short_side=64, crop=32).check()


def test_settings_key_is_the_one_earlier_versions_wrote(tmp_path):
    # weights files of fixed content: the key is a function of the settings and their hashes;
    # caches and feature folders made by davel 0.1 must still count as done
    d = tmp_path / "weights"
    d.mkdir()
    for name in ("raft-sintel.pth", "i3d_rgb.pt", "i3d_flow.pt", "vggish-10086976.pth"):
        (d / name).write_bytes(name.encode())
        store.record_in_lock(d, name, origin="standin")
    assert FeatureExtractor(d, "cpu").settings_key == "86487cb084b9f3e5"  # made by davel 0.1.0


def test_extraction_writes_a_sidecar_with_the_time_base(tmp_path, standin_weights, cheap_visual):
    video = write_video(tmp_path / "v.mp4", 50, fps=25)
    feats = FeatureExtractor(standin_weights, "cpu").extract(video)
    feature_files.write(tmp_path / "out", "v", feats)
    meta = json.loads((tmp_path / "out" / "v_davel.json").read_text())
    assert meta["settings"]["fps"] == 25.0 and meta["frames"] == 50 and meta["duration"] == 2.0
    assert feature_files.read(tmp_path / "out" / "v").meta["settings_key"] == meta["settings_key"]


def test_resolving_a_device_changes_no_global_setting():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    assert resolve_device("cpu") == torch.device("cpu")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_strict_fp32_is_scoped():
    torch.backends.cudnn.allow_tf32 = True
    with strict_fp32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32


def test_unknown_devices_are_one_line_errors():
    from davel.errors import DavelError

    for name in ("gpu", "cuda:7" if not torch.cuda.is_available() else "cuda:99"):
        with pytest.raises(DavelError) as err:
            resolve_device(name)
        assert "\n" not in str(err.value)


class _RecordingLibc:
    """glibc's allocator calls, recorded instead of made."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def recording_libc(monkeypatch):
    from extractors import memory

    libc = _RecordingLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    monkeypatch.setattr(memory, "_configured", None)  # as in a fresh process: nothing tuned yet
    return libc


def test_a_plain_extractor_leaves_the_allocator_alone(tmp_path, standin_weights, cheap_visual, recording_libc):
    video = write_video(tmp_path / "v.mp4", 50, fps=25)
    fx = FeatureExtractor(standin_weights, "cpu")
    assert fx.tune_allocator is False
    fx.extract(video)
    assert recording_libc.calls == []


def test_tune_allocator_sets_the_thresholds_and_trims(tmp_path, standin_weights, cheap_visual, recording_libc):
    from extractors import memory

    video = write_video(tmp_path / "v.mp4", 50, fps=25)
    FeatureExtractor(standin_weights, "cpu", tune_allocator=True).extract(video)
    calls = recording_libc.calls
    assert calls[:2] == [("mallopt", memory.M_MMAP_THRESHOLD, memory.THRESHOLD_BYTES),
                         ("mallopt", memory.M_TRIM_THRESHOLD, memory.THRESHOLD_BYTES)]
    assert calls[-1] == ("malloc_trim", 0)


def test_the_command_line_paths_tune_the_allocator(tmp_path, standin_weights):
    from davel.batch.tasks import ExtractTask
    from extractors.cache import FeatureCache

    assert ExtractTask(tmp_path / "out", weights_dir=standin_weights).extractor.tune_allocator is True
    assert FeatureCache(standin_weights, "cpu", root=tmp_path / "cache").extractor.tune_allocator is True
    assert FeatureCache(standin_weights, "cpu", root=tmp_path / "cache",
                        tune_allocator=False).extractor.tune_allocator is False
