"""The ONE-PEACE path end to end, through the real CLI, on a short clip with shallow stand-ins
(official widths, one layer: seconds per window on a CPU): extract, detect with a
1536/1536 CCNet in the official layout (the checkpoint decides the features), eval, view.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from davel.detectors.ccnet import CCNetDetector
from extractors import feature_files
from extractors.onepeace_weights import standin_sources
from weights.standin_files import official_checkpoint

from media_files import write_video

runner = CliRunner()
LABELS = ["dog", "bell", "car", "guitar", "drum"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onepeace")
    weights = root / "weights"
    standin_sources(weights, depth=1)
    # 1.25 s at 30 fps: 20 frames at 16 fps, 2 visual windows; 2 audio windows
    clip = write_video(root / "clip.mp4", 38, fps=30, seconds_audio=1.25)
    torch.manual_seed(0)
    ccnet = CCNetDetector(input_dim_v=1536, input_dim_a=1536, embd_dim=32, head_dim=32, mtgc_dim=4,
                          num_classes=len(LABELS), max_seq_len=256)
    ckpt = root / "ccnet_onepeace.pth"
    torch.save(official_checkpoint({f"module.{k}": v for k, v in ccnet.state_dict().items()}), ckpt)
    ann = root / "ann.json"
    ann.write_text(json.dumps({"database": {"clip": {
        "subset": "test", "duration": 1.25,
        "annotations": [{"segment": [0.1, 1.1], "label": name, "label_id": i} for i, name in enumerate(LABELS)]}}}))
    return root, weights, clip, ckpt, ann


def test_extract_detect_eval_view(setup, tmp_path):
    root, weights, clip, ckpt, ann = setup
    feats = tmp_path / "feats"
    res = runner.invoke(app, ["extract", str(clip), "--feature-set", "one-peace", "-o", str(feats),
                              "--weights-dir", str(weights), "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in feats.iterdir())
    assert files == ["clip_davel.json", "clip_one_peace_audio.npy", "clip_one_peace_video_finetune.npy"]
    visual = np.load(feats / "clip_one_peace_video_finetune.npy")
    audio = np.load(feats / "clip_one_peace_audio.npy")
    assert visual.shape == (2, 1536) and audio.shape == (2, 1536) and visual.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, rtol=0, atol=1e-5)  # D5
    meta = feature_files.read_meta(feats / "clip")
    assert meta.feature_set == "one-peace" and meta.timebase.as_dict() == {"fps": 16.0, "stride": 4, "window": 16}
    assert (meta.steps, meta.audio_steps, meta.frames) == (2, 2, 20)
    # a second run finds the outputs complete
    again = runner.invoke(app, ["extract", str(clip), "--feature-set", "one-peace", "-o", str(feats),
                                "--weights-dir", str(weights), "--device", "cpu", "--quiet"])
    assert again.exit_code == 0 and "skipped 1" in again.stderr

    res = runner.invoke(app, ["detect", "--features", str(feats / "clip"), "--checkpoint", str(ckpt),
                              "--device", "cpu", "--labels", str(ann)])
    assert res.exit_code == 0, res.output
    from_features = json.loads(res.stdout)
    assert from_features["timebase"] == {"fps": 16.0, "stride": 4, "window": 16}
    assert from_features["num_steps"] == 2 and from_features["events"]
    assert abs(from_features["duration"] - 38 / 30) < 0.05
    assert all(0 <= e["start"] <= e["end"] <= from_features["duration"] for e in from_features["events"])

    # a video: the checkpoint's widths (1536/1536) choose ONE-PEACE extraction
    res = runner.invoke(app, ["detect", str(clip), "--checkpoint", str(ckpt), "--weights-dir", str(weights),
                              "--device", "cpu", "--labels", str(ann)])
    assert res.exit_code == 0, res.output
    assert "ONE-PEACE on the CPU" in res.stderr and "windows: about" in res.stderr
    from_video = json.loads(res.stdout)
    assert from_video["timebase"] == from_features["timebase"]
    assert [(e["label"], e["start"], e["end"]) for e in from_video["events"]] == \
        [(e["label"], e["start"], e["end"]) for e in from_features["events"]]

    res = runner.invoke(app, ["eval", "--annotations", str(ann), "--checkpoint", str(ckpt), "--features",
                              str(feats), "--split", "test", "--json", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(res.stdout)["average_mAP"] <= 1.0

    result = tmp_path / "events.json"
    result.write_text(json.dumps(from_video))
    page = tmp_path / "page.html"
    res = runner.invoke(app, ["view", str(result), "--video", str(clip), "-o", str(page)])
    assert res.exit_code == 0, res.output
    assert page.is_file() and "clip" in page.read_text()


def test_a_checkpoint_for_features_davel_does_not_make_is_one_line(setup, tmp_path):
    root, weights, clip, _, _ = setup
    torch.manual_seed(0)
    odd = CCNetDetector(input_dim_v=100, input_dim_a=50, embd_dim=32, head_dim=32, mtgc_dim=4,
                        num_classes=3, max_seq_len=64)
    ckpt = tmp_path / "odd.pth"
    torch.save(official_checkpoint({f"module.{k}": v for k, v in odd.state_dict().items()}), ckpt)
    res = runner.invoke(app, ["detect", str(clip), "--checkpoint", str(ckpt), "--weights-dir", str(weights),
                              "--device", "cpu"])
    assert res.exit_code != 0
    line = res.stderr.strip().splitlines()[-1]
    assert "100-d visual / 50-d audio features are not a set davel makes" in line
    assert "1536/1536: one-peace" in line and "2048/128: i3d-vggish" in line


def test_extract_refuses_i3d_options_with_one_peace(setup, tmp_path):
    _, weights, clip, _, _ = setup
    res = runner.invoke(app, ["extract", str(clip), "--feature-set", "one-peace", "--no-flow", "-o",
                              str(tmp_path / "f"), "--weights-dir", str(weights)])
    assert res.exit_code == 2 and "--no-flow is an I3D + VGGish option" in res.stderr
    res = runner.invoke(app, ["extract", str(clip), "--feature-set", "two-peace", "-o", str(tmp_path / "f")])
    assert res.exit_code == 2 and "--feature-set must be one of i3d-vggish, one-peace" in res.stderr
    assert not Path(tmp_path / "f").exists()
