"""LoCo in the product: training (Eq. 12), checkpoints, detect / eval, the CLI options, Mean of std.

LOCO.md §5.3 items 18 (checkpoint dispatch) and 19 (training smoke) on the tiny
training set of tests/helpers.py.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from davel.analysis import mean_of_std
from davel.cli import app
from davel.detectors.checkpoint import build_detector
from davel.detectors.lcc import csm_std
from davel.detectors.loco import LoCoDetector
from davel.detectors.unav import UnAVDetector
from davel.inference import load_detector
from davel.train import TrainConfig, train
from extractors.feature_files import read

from helpers import DIM_AUD, DIM_RGB, TINY, make_dataset

runner = CliRunner()


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_logs_lcc_and_is_deterministic_and_resumable(tmp_path, tiny_data):
    ann, feats = tiny_data
    cfg = TrainConfig(model="loco", **TINY)
    res = train(cfg, ann, feats, tmp_path / "a")
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(set(r) >= {"lcc_loss", "sigma", "tau"} for r in log)
    assert all(r["loss"] == r["loss"] and r["lcc_loss"] > 0 for r in log)  # finite, not NaN
    assert 0.001 <= log[-1]["tau"] <= 0.5 and log[-1]["sigma"] != 1.0  # learnt, clamped
    assert res.history[-1].extras["lcc_loss"] == log[-1]["lcc_loss"]
    # the same seed: the same weights; stop after one epoch and continue: the same again
    train(cfg, ann, feats, tmp_path / "b", max_epochs=1)
    train(cfg, ann, feats, tmp_path / "b")
    a, b = _state(tmp_path / "a" / "last.pth"), _state(tmp_path / "b" / "last.pth")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert any(k.startswith("module.lcc.") for k in a["state_dict_ema"])
    meta = a["davel"]
    assert meta["model"] == "loco" and meta["model_config"]["attention"] == "adaptive"
    assert meta["model_config"]["use_lcc"] is True and meta["model_config"]["lcc_weight"] == 0.1


def test_no_lcc_run_has_no_lcc_weights_and_detect_eval_run_it(tmp_path, tiny_data):
    ann, feats = tiny_data
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(feats), "-o",
                              str(tmp_path / "run"), "--model", "loco", "--no-lcc", "--attention",
                              "fixed", "--cdp-window", "4", "--epochs", "1", "--warmup-epochs", "0",
                              "--batch-size", "3", "--embd-dim", "16", "--max-seq-len", "32",
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    best = tmp_path / "run" / "best.pth"
    state = _state(best)
    assert not any(".lcc." in k for k in state["state_dict_ema"])
    assert state["davel"]["model_config"]["attention"] == "fixed"
    assert state["davel"]["model_config"]["cdp_window"] == 4
    det = load_detector(best, "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))
    assert isinstance(det.model, LoCoDetector) and det.kind == "loco" and det.model.lcc is None
    assert det.model.backbone.ori_cross_att_Va.attn.window == 4
    out = runner.invoke(app, ["detect", "--features", str(feats / "test_0"), "--checkpoint", str(best),
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model"] == "loco"
    out = runner.invoke(app, ["eval", "--annotations", str(ann), "--checkpoint", str(best), "--features",
                              str(feats), "--split", "validation", "--json", "--device", "cpu"])
    assert out.exit_code == 0, out.output


def test_loco_options_go_with_loco_only(tmp_path, tiny_data):
    ann, feats = tiny_data
    base = ["train", "--annotations", str(ann), "--features", str(feats), "-o", str(tmp_path / "r")]
    res = runner.invoke(app, [*base, "--model", "unav", "--no-lcc"])
    assert res.exit_code == 2 and "go with --model loco" in res.stderr
    res = runner.invoke(app, [*base, "--model", "loco", "--attention", "local"])
    assert res.exit_code == 2 and "--attention must be one of adaptive, fixed, global" in res.stderr


def _tiny_loco(**kw) -> LoCoDetector:
    torch.manual_seed(0)
    return LoCoDetector(input_dim_v=24, input_dim_a=8, embd_dim=16, head_dim=16, num_classes=5,
                        max_seq_len=64, **kw).eval()


@pytest.mark.parametrize("attention", ["global", "fixed", "adaptive"])
def test_a_loco_checkpoint_is_never_taken_for_unav(attention):
    sd = {f"module.{k}": t for k, t in _tiny_loco(attention=attention).state_dict().items()}
    if attention != "adaptive":  # the GB variant carries every UnAV backbone key
        assert UnAVDetector.matches_state_dict({k[7:]: t for k, t in sd.items()})
    hints = {"attention": attention}
    model, info = build_detector({"state_dict_ema": sd, "davel": {"model_config": hints}})
    assert isinstance(model, LoCoDetector) and info.kind == "loco"
    assert model.attention == attention


def test_mean_of_std_is_the_csm_std_of_the_stem(tiny_data):
    ann, feats = tiny_data
    model = LoCoDetector(input_dim_v=2 * DIM_RGB, input_dim_a=DIM_AUD, embd_dim=16, head_dim=16,
                         num_classes=2, max_seq_len=64).eval()
    from davel.inference import Detector
    from extractors.timebase import I3D_VGGISH

    det = Detector(model, labels=None, timebase=I3D_VGGISH, feature_norm=None, extraction=None, name="x",
                   sha256="", device="cpu")
    videos = [read(feats / f"train_{k}") for k in range(3)]
    stats = mean_of_std(det, videos)
    assert stats.videos == 3 and 0 < stats.mean_of_std < 2
    # the same numbers as the features LCC trains on (forward_train's F_v, F_a)
    from davel.inference import prepare_inputs

    f = videos[0]
    v, a, mask = prepare_inputs(f.visual(), f.audio(), model.padded_length(f.num_steps))
    with torch.no_grad():
        _, (f_v, f_a, mask3) = model._run(v, a, mask)
    assert stats.per_video[0] == pytest.approx(float(csm_std(f_v, f_a, mask3)[0]), abs=1e-6)


def test_one_peace_features_train_and_detect_with_their_time_base(tmp_path):
    """Pre-extracted ONE-PEACE features (1536-d visual and audio, 16 fps, a row every 4
    frames over 16): the CCNet repo's file names, the time base given to `davel train`,
    kept in the checkpoint and used by detect."""
    import numpy as np

    from extractors import feature_files

    ann, feats = make_dataset(tmp_path, n_train=4, n_val=1, n_test=1, dims=(16, 16))
    for stem in {p.name.rsplit("_", 1)[0] for p in feats.glob("*_rgb.npy")}:
        visual = np.concatenate([np.load(feats / f"{stem}_rgb.npy"), np.load(feats / f"{stem}_flow.npy")], 1)
        np.save(feats / f"{stem}_one_peace_video_finetune.npy", visual)
        np.save(feats / f"{stem}_one_peace_audio.npy", np.load(feats / f"{stem}_vggish.npy"))
        for s in ("rgb", "flow", "vggish", "davel"):
            for f in feats.glob(f"{stem}_{s}.*"):
                f.unlink()
    assert feature_files.read_shapes(feats / "train_0")[1][1] == 0  # no flow array
    assert feature_files.read(feats / "train_0").visual().shape[0] == 32
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(feats), "-o",
                              str(tmp_path / "run"), "--model", "loco", "--timebase", "one-peace",
                              "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
                              "--embd-dim", "16", "--max-seq-len", "32", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert _state(tmp_path / "run" / "best.pth")["davel"]["timebase"] == {"fps": 16.0, "stride": 4, "window": 16}
    out = runner.invoke(app, ["detect", "--features", str(feats / "test_0"), "--checkpoint",
                              str(tmp_path / "run" / "best.pth"), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    steps = feature_files.read(feats / "test_0").num_steps
    assert result["timebase"] == {"fps": 16.0, "stride": 4, "window": 16}
    assert result["duration"] == pytest.approx((4 * (steps - 1) + 16) / 16)
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(feats), "-o",
                              str(tmp_path / "r2"), "--timebase", "16,4"])
    assert res.exit_code == 2 and "FPS,STRIDE,WINDOW" in res.stderr


def test_long_videos_run_in_one_pass_up_to_unav_s_limit_then_windowed():
    import numpy as np

    from davel.inference import Detector
    from extractors.feature_files import Features
    from extractors.timebase import I3D_VGGISH

    torch.manual_seed(0)
    model = LoCoDetector(input_dim_v=2048, input_dim_a=128, embd_dim=16, head_dim=16, num_classes=3,
                         max_seq_len=224, use_lcc=False).eval()
    det = Detector(model, labels=None, timebase=I3D_VGGISH, feature_norm=None, extraction=None, name="x",
                   sha256="", device="cpu")
    rng = np.random.default_rng(0)

    def feats(t):
        return Features(rng.random((t, 1024), np.float32), rng.random((t, 1024), np.float32),
                        rng.random((t, 128), np.float32))

    assert det.detect_features(feats(600)).windows == 1   # UnAV's limit is 2048 steps
    assert det.detect_features(feats(2100)).windows > 1
