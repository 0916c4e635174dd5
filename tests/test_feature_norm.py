"""Feature standardisation (davel.feature_norm): fitting, applying, and the statistics a
checkpoint carries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from davel.feature_norm import FeatureNorm
from davel.train import TrainConfig, train
from extractors.feature_files import Features

from helpers import DIM_AUD, DIM_RGB, TINY, read_state

runner = CliRunner()


def test_feature_norm_fit_and_apply():
    rng = np.random.default_rng(3)
    pairs = [(rng.normal(5, 2, (3, t)).astype(np.float32), rng.normal(-1, 0.5, (2, t)).astype(np.float32))
             for t in (7, 11, 4)]
    pairs[0][0][2] = pairs[1][0][2] = pairs[2][0][2] = 0.25  # a constant channel: only centred
    norm = FeatureNorm.fit(pairs)
    v = np.concatenate([p[0] for p in pairs], 1)
    a = np.concatenate([p[1] for p in pairs], 1)
    np.testing.assert_allclose(norm.visual_mean, v.mean(1), rtol=1e-6)
    np.testing.assert_allclose(norm.visual_std[:2], v.std(1)[:2], rtol=1e-5)
    assert norm.visual_std[2] == 1.0 and norm.dims == (3, 2)
    nv, na = norm.apply(v, a)
    np.testing.assert_allclose(nv[:2].mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(nv[:2].std(1), 1, atol=1e-5)
    np.testing.assert_allclose(nv[2], 0, atol=1e-7)
    np.testing.assert_allclose(na.std(1), 1, atol=1e-5)
    again = FeatureNorm.from_meta(norm.to_meta())
    assert all(np.array_equal(getattr(norm, k), getattr(again, k))
               for k in ("visual_mean", "visual_std", "audio_mean", "audio_std"))
    assert FeatureNorm.from_meta(None) is None


def test_standardized_run_stores_statistics_and_detect_applies_them(tmp_path, tiny_data):
    import copy

    from davel.inference import load_detector
    from extractors.feature_files import read

    ann, feats = tiny_data
    train(TrainConfig(model="ccnet", **TINY, standardize_features=True), ann, feats, tmp_path)
    ckpt = read_state(tmp_path / "best.pth")
    stats = ckpt["davel"]["feature_norm"]
    assert stats["visual_mean"].shape == (2 * DIM_RGB,) and stats["audio_std"].shape == (DIM_AUD,)
    assert ckpt["davel"]["config"]["standardize_features"] is True
    det = load_detector(tmp_path / "best.pth", "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))
    assert det.feature_norm is not None
    f = read(feats / "test_0")
    with_norm = det.detect_features(f).to_dict()
    # the same detector without statistics, fed standardised features by hand: the same events
    v, a = det.feature_norm.apply(f.visual(), f.audio())
    by_hand = Features(v[:DIM_RGB].T.copy(), v[DIM_RGB:].T.copy(), a.T.copy())
    plain = copy.copy(det)
    plain.feature_norm = None
    duration = with_norm["duration"]
    assert plain.detect_features(by_hand, duration=duration).to_dict()["events"] == with_norm["events"]
    assert plain.detect_features(f, duration=duration).to_dict()["events"] != with_norm["events"]
    # the command line, on features of other sizes than I3D + VGGish: the same events
    res = runner.invoke(app, ["detect", "--features", str(feats / "test_0"), "--checkpoint",
                              str(tmp_path / "best.pth"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["events"] == with_norm["events"]


def test_checkpoint_with_broken_statistics_is_refused(tmp_path, tiny_data):
    from davel.errors import WeightsError
    from davel.inference import load_detector

    ann, feats = tiny_data
    train(TrainConfig(model="ccnet", **TINY, standardize_features=True), ann, feats, tmp_path,
          max_epochs=1)
    ckpt = read_state(tmp_path / "best.pth")
    ckpt["davel"]["feature_norm"]["audio_mean"] = torch.zeros(DIM_AUD + 1)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="feature statistics are 12-d / 5-d"):
        load_detector(tmp_path / "bad.pth", "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))
    del ckpt["davel"]["feature_norm"]["audio_std"]
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="unreadable feature statistics"):
        load_detector(tmp_path / "bad.pth", "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))
