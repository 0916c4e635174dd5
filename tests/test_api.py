"""The Python API (davel.load_detector -> Detector.detect -> DetectionResult), python -m davel,
the layering of the three packages, and the CLI's error reporting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import davel
from davel.cli import app

from media_files import write_video

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def cheap_visual(monkeypatch):
    from extractors.timebase import I3D_VGGISH
    from extractors.visual import VisualFeatureExtractor

    def fake(self, frames, on_window=None):
        t = I3D_VGGISH.num_steps(sum(1 for _ in frames))
        rng = np.random.default_rng(t)
        return rng.random((t, 1024), dtype=np.float32), rng.random((t, 1024), dtype=np.float32)

    monkeypatch.setattr(VisualFeatureExtractor, "__call__", fake)


def test_the_readme_example(tmp_path, tiny_checkpoint, standin_weights, cheap_visual):
    video = write_video(tmp_path / "clip.mp4", 60, fps=25)
    detector = davel.load_detector(tiny_checkpoint, device="cpu", weights_dir=standin_weights)
    result = detector.detect(video)
    assert isinstance(result, davel.DetectionResult) and result.model == "unav"
    assert result.duration == pytest.approx(2.4) and result.checkpoint["name"] == "tiny_unav.pth"
    assert result.events and all(isinstance(e, davel.Event) for e in result.events)
    assert {e.label for e in result.events} <= {"dog", "car", "bell", "guitar"}
    d = result.to_dict()
    assert json.loads(json.dumps(d))["events"][0]["label"] == result.events[0].label


def test_a_video_without_duration_header_keeps_its_events(tmp_path, tiny_checkpoint, standin_weights,
                                                          cheap_visual):
    from test_extract import live_webm

    detector = davel.load_detector(tiny_checkpoint, device="cpu", weights_dir=standin_weights)
    result = detector.detect(live_webm(tmp_path / "live.webm", 50))
    # davel 0.1 reported duration 0.0 and clamped every event to [0, 0]
    assert result.duration == pytest.approx(2.0)
    assert any(e.end > 0 for e in result.events)


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def test_extractors_and_weights_work_without_davel(tmp_path, standin_weights):
    video = write_video(tmp_path / "v.mp4", 33, fps=25, size=(170, 128))
    code = f"""
import sys
class NoDavel:
    def find_spec(self, name, path=None, target=None):
        if name == "davel" or name.startswith("davel."):
            raise ImportError("davel is not importable here")
sys.meta_path.insert(0, NoDavel())
from extractors.extract import ExtractionSettings, FeatureExtractor
fx = FeatureExtractor({str(standin_weights)!r}, "cpu", ExtractionSettings(flow=False, short_side=128, crop=112))
f = fx.extract({str(video)!r})
print(f.rgb.shape, f.vggish.shape[1], "davel" in sys.modules)
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(2, 1024) 128 False"


def test_importing_davel_is_cheap():
    proc = _python("import sys, davel; print('torch' in sys.modules)")
    assert proc.returncode == 0 and proc.stdout.strip() == "False"


def test_python_dash_m_davel():
    proc = subprocess.run([sys.executable, "-m", "davel", "--help"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0 and "detect" in proc.stdout and "extract" in proc.stdout


def test_errors_name_the_checkpoint_and_debug_shows_the_cause(tmp_path):
    bad = tmp_path / "foreign.pth"
    torch.save({"state_dict_ema": {"backbone.embd_V.0.conv.weight": torch.zeros(4, 2048, 3),
                                   "backbone.embd_A.0.conv.weight": torch.zeros(4, 128, 3),
                                   "MTGC_block.x.weight": torch.zeros(1)}}, bad)  # no heads
    feats = tmp_path / "f"
    feats.mkdir()
    for s, d in (("rgb", 1024), ("flow", 1024), ("vggish", 128)):
        np.save(feats / f"v_{s}.npy", np.zeros((5, d), np.float32))
    args = ["detect", "--features", str(feats / "v"), "--checkpoint", str(bad), "--device", "cpu"]
    res = runner.invoke(app, args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and str(bad) in lines[0], res.stderr
    res = runner.invoke(app, args, env={"DAVEL_DEBUG": "1"})
    # the chain down to the KeyError that made the WeightsError
    assert res.exit_code == 1 and "Traceback" in res.stderr and "KeyError" in res.stderr
    assert "The above exception was the direct cause" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("davel: error:")


def test_duration_goes_with_one_features_input(tmp_path):
    res = runner.invoke(app, ["detect", "--features", "a", "--features", "b", "--duration", "3"])
    assert res.exit_code == 2 and "exactly one --features" in res.stderr
