"""The Detector (davel.inference): extractor settings follow the checkpoint."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from davel.cli import app
from davel.train import TrainConfig, train

from helpers import TINY, make_dataset

runner = CliRunner()


NON_STANDARD = {"crop": 64, "flow": False, "fps": 25.0, "raft_iterations": 20, "short_side": 128,
                "stride": 8, "vggish_pca": False, "window": 24}


def test_detect_extracts_with_the_training_features_settings(tmp_path, monkeypatch):
    import extractors.cache
    from davel.inference import load_detector
    from extractors.extract import ExtractionSettings
    from extractors.feature_files import read

    ann, feats = make_dataset(tmp_path, n_train=3, n_val=0, dims=(1024, 128))  # I3D + VGGish sizes
    for meta in feats.glob("*_davel.json"):
        meta.write_text(json.dumps({"settings": NON_STANDARD, "settings_key": "k"}))
    train(TrainConfig(model="ccnet", **TINY), ann, feats, tmp_path / "run", max_epochs=1)
    det = load_detector(tmp_path / "run" / "last.pth", "cpu")
    assert det.extraction_settings == ExtractionSettings(crop=64, flow=False, short_side=128)

    seen = []

    class FakeExtractor:
        def __init__(self, weights_dir, device, settings=None):
            seen.append(settings)

        def features(self, path, on_window=None):
            return read(feats / "test_0")

    monkeypatch.setattr(extractors.cache, "FeatureCache", FakeExtractor)
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")  # the fake lives in this process, not in a worker
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read by the fake extractor")
    res = runner.invoke(app, ["detect", str(video), "--checkpoint", str(tmp_path / "run" / "last.pth"),
                              "--device", "cpu", "-o", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    assert seen == [ExtractionSettings(crop=64, flow=False, short_side=128)]
    assert "trained on non-standard features: extracting with its settings (short side 128, crop 64" \
        in res.stderr

    # features made otherwise than the training features: said, not refused
    (feats / "test_1_davel.json").write_text(json.dumps({"settings": {**NON_STANDARD, "crop": 224}}))
    res = runner.invoke(app, ["detect", "--features", str(feats / "test_1"), "--checkpoint",
                              str(tmp_path / "run" / "last.pth"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "test_1: features made with other extractor settings" in res.stderr
    assert "crop 224 (trained on 64)" in res.stderr
    res = runner.invoke(app, ["detect", "--features", str(feats / "test_0"), "--checkpoint",
                              str(tmp_path / "run" / "last.pth"), "--device", "cpu"])
    assert res.exit_code == 0 and "other extractor settings" not in res.stderr
