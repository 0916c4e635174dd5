"""Training: targets, losses, schedule, EMA, data, determinism, resume, CLI errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.annotations import read_annotations
from davel.cli import app
from davel.detectors.output import DetectorOutput
from davel.errors import InputError
from davel.feature_norm import FeatureNorm
from davel.train import TrainConfig, train
from davel.train.data import Sample, random_crop
from davel.train.losses import LossNormalizer, assign_targets, detection_losses, diou_loss_1d
from davel.train.optim import WarmupCosine, build_model, make_ema, make_optimizer, make_scheduler
from extractors.feature_files import Features

from helpers import DIM_AUD, DIM_RGB, TINY, make_dataset

runner = CliRunner()


# ------------------------------------------------------------------ label assignment


def reference_targets(points, segments, labels, num_classes):
    """Per-point loops written from the repos' description (independent of davel.train.losses)."""
    cls = np.zeros((len(points), num_classes))
    off = np.zeros((len(points), num_classes, 2))
    for i, (t, lo, hi, stride) in enumerate(points):
        for (s, e), c in zip(segments, labels):
            left, right = t - s, e - t
            if min(left, right) > 0 and lo <= max(left, right) <= hi:
                cls[i, c] = 1
                off[i, c] = (left / stride, right / stride)
    return cls, off


def level_rows(length=32):
    from davel.detectors.base import level_points

    return torch.cat(level_points(length, 6))


def test_assign_targets_hand_example():
    points = level_rows()
    cls, off = assign_targets(points, torch.tensor([[2.0, 9.0]]), torch.tensor([1]), 3)
    pos = {(float(points[i, 0]), int(points[i, 3])) for i in torch.nonzero(cls[:, 1]).flatten()}
    # level 0 (range 0..4): t = 5, 6; level 1 (4..8): t = 4, 6, 8; nothing else
    assert pos == {(5.0, 1), (6.0, 1), (4.0, 2), (6.0, 2), (8.0, 2)}
    assert cls[:, [0, 2]].sum() == 0
    row = next(i for i in range(len(points)) if points[i, 0] == 4 and points[i, 3] == 2)
    assert off[row, 1].tolist() == [1.0, 2.5]  # (4 - 2) / 2, (9 - 4) / 2


def test_assign_targets_matches_reference_loops():
    rng = np.random.default_rng(3)
    points = level_rows(64)
    for _ in range(20):
        n = int(rng.integers(0, 5))
        starts = rng.uniform(-3, 55, n)
        segs = np.stack([starts, starts + rng.uniform(0.5, 40, n)], 1).astype(np.float32)
        labels = rng.integers(0, 3, n)
        cls, off = assign_targets(points, torch.from_numpy(segs).reshape(-1, 2), torch.from_numpy(labels), 3)
        ref_cls, ref_off = reference_targets(points.numpy(), segs, labels, 3)
        np.testing.assert_array_equal(cls.numpy(), ref_cls)
        np.testing.assert_allclose(off.numpy(), ref_off, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ losses


def test_diou_loss_values():
    pred = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    # identical; nested same centre (IoU 1/2); IoU 1/3 with centres 1 apart in a span of 3
    np.testing.assert_allclose(diou_loss_1d(pred, target).numpy(), [0.0, 0.5, 1 - 1 / 3 + 1 / 9], atol=1e-6)


def _output(logits, offsets, mask):
    return DetectorOutput(cls_logits=[logits], offsets=[offsets], masks=[mask],
                          points=[torch.zeros(logits.shape[1], 4)])


def test_detection_losses_normaliser_and_masking():
    torch.manual_seed(0)
    b, t, c = 2, 5, 3
    logits = torch.randn(b, t, c)
    offsets = torch.rand(b, t, c, 2) + 0.1
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3:] = False
    gt_cls = torch.zeros(b, t, c)
    gt_off = torch.zeros(b, t, c, 2)
    gt_cls[0, 1, 2] = 1
    gt_off[0, 1, 2] = torch.tensor([0.5, 1.5])
    gt_cls[1, 4, 0] = 1  # outside the mask: no positive, no loss
    gt_off[1, 4, 0] = torch.tensor([1.0, 1.0])
    norm = LossNormalizer()
    out = detection_losses(_output(logits, offsets, mask), gt_cls, gt_off, norm)
    assert norm.value == pytest.approx(0.9 * 250 + 0.1 * 1)
    from torchvision.ops import sigmoid_focal_loss

    cls_ref = sigmoid_focal_loss(logits[mask], gt_cls[mask], 0.25, 2.0, "sum") / norm.value
    reg_ref = diou_loss_1d(offsets[0, 1, 2][None], gt_off[0, 1, 2][None]).sum() / norm.value
    assert float(out["cls_loss"]) == pytest.approx(float(cls_ref), rel=1e-6)
    assert float(out["reg_loss"]) == pytest.approx(float(reg_ref), rel=1e-6)
    assert float(out["final_loss"]) == pytest.approx(float(cls_ref + reg_ref), rel=1e-6)


# ------------------------------------------------------------------ schedule, optimiser, EMA


def official_lrs(base, warmup, total, steps, eta_min=1e-8):
    """The repos' chainable LinearWarmupCosineAnnealingLR recurrence, transcribed."""
    lrs, lr = [], 0.0
    for k in range(steps):
        if k == 0:
            lr = 0.0
        elif k < warmup:
            lr = lr + base / (warmup - 1)
        elif k == warmup:
            lr = base
        elif (k - 1 - total) % (2 * (total - warmup)) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / (total - warmup))) / 2
        else:
            lr = ((1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
                  / (1 + math.cos(math.pi * (k - warmup - 1) / (total - warmup))) * (lr - eta_min) + eta_min)
        lrs.append(lr)
    return lrs


def test_scheduler_equals_official_recurrence():
    base, warmup, total = 1e-4, 25, 225  # 5 warm-up + 40 epochs of 5 steps
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = make_scheduler(opt, warmup, total)
    ours = []
    for _ in range(total):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ref = official_lrs(base, warmup, total, total)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    assert ours[0] == 0.0 and ours[warmup - 1] == pytest.approx(base) and ours[-1] < 1e-7
    assert WarmupCosine(0, 10, 1.0)(0) == 1.0  # no warm-up: starts at the peak


def test_optimizer_decays_only_conv_and_linear_weights():
    model = build_model(TrainConfig(model="unav", **TINY), 2 * DIM_RGB, DIM_AUD, 2)
    opt = make_optimizer(model, 1e-4, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    others = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0
    assert decayed | others == set(names.values()) and not decayed & others
    modules = dict(model.named_modules())
    assert decayed == {n for n in names.values() if n.endswith(".weight")
                       and isinstance(modules[n[:-len(".weight")]], (torch.nn.Conv1d, torch.nn.Linear))}
    assert any(n.endswith("drop_path_attn.scale") for n in others)
    assert any(n.endswith("ln11.weight") for n in others) and "reg_head.scale.0.scale" in others


def test_fresh_model_init_and_drop_path_only_in_training():
    model = build_model(TrainConfig(model="unav", **TINY), 2 * DIM_RGB, DIM_AUD, 3, empty_classes=[2])
    bias = model.cls_head.cls_head.conv.bias
    assert bias[0].item() == pytest.approx(-math.log(99)) and bias[2].item() == pytest.approx(-math.log(1e6 - 1))
    assert model.backbone.embd_V[0].conv.bias is None or model.backbone.embd_V[0].conv.bias.abs().sum() == 0
    v, a = torch.randn(2, 2 * DIM_RGB, 32), torch.randn(2, DIM_AUD, 32)
    mask = torch.ones(2, 32, dtype=torch.bool)
    with torch.no_grad():
        for m in model.modules():  # make the residual branches matter
            if hasattr(m, "drop_prob"):
                m.scale.fill_(1.0)
        model.eval()
        e1, e2 = model(v, a, mask).cls_logits[0], model(v, a, mask).cls_logits[0]
        model.train()
        torch.manual_seed(0)
        t1 = model(v, a, mask).cls_logits[0]
        torch.manual_seed(1)
        t2 = model(v, a, mask).cls_logits[0]
    assert torch.equal(e1, e2) and not torch.allclose(t1, t2)


def test_ema_update_rule():
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model, 0.9)
    assert torch.equal(ema.module.weight, model.weight)
    old = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * old + 0.1 * model.weight.detach())


# ------------------------------------------------------------------ data


def _sample(length, segs, labels):
    return Sample("v", torch.arange(length, dtype=torch.float32)[None].repeat(2, 1),
                  torch.zeros(1, length), torch.tensor(segs, dtype=torch.float32).reshape(-1, 2),
                  torch.tensor(labels, dtype=torch.int64))


def test_random_crop_long_video_keeps_half_covered_events():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = _sample(100, [[10.0, 30.0], [60.0, 70.0], [90.0, 99.0]], [0, 1, 0])
        out = random_crop(s, 32, rng, crop_ratio=(0.9, 1.0))
        st = int(out.visual[0, 0])
        assert out.visual.shape == (2, 32) and out.audio.shape == (1, 32)
        assert len(out.labels) >= 1  # a window always keeps at least one event
        for (a, b), lab in zip(out.segments.tolist(), out.labels.tolist()):
            assert 0 <= a < b <= 32
            orig = [(x, y) for x, y in s.segments.tolist()
                    if (max(x, st) - st, min(y, st + 32) - st) == pytest.approx((a, b))]
            assert orig and (b - a) / (orig[0][1] - orig[0][0]) >= 0.5 - 1e-6


def test_random_crop_short_video_ratio():
    rng = np.random.default_rng(1)
    lengths = {random_crop(_sample(40, [[5.0, 30.0]], [0]), 64, rng).visual.shape[1] for _ in range(200)}
    assert lengths <= set(range(36, 41)) and len(lengths) > 2  # round(0.9 * 40) .. 40
    same = _sample(40, [[5.0, 30.0]], [0])
    assert random_crop(same, 64, rng, crop_ratio=None) is same


# ------------------------------------------------------------------ annotations


def _write_ann(tmp_path, db):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"database": db}))
    return p


@pytest.mark.parametrize("entry,message", [
    ({"subset": "train", "annotations": [{"segment": [3.0, 3.0], "label": "a", "label_id": 0}]},
     "end 3 s is not after start 3 s"),
    ({"subset": "training", "annotations": [{"segment": [1.0, 3.0], "label": "a", "label_id": 0}]},
     "unknown subset 'training'"),
    ({"subset": "test", "annotations": [{"segment": [1.0, 3.0], "label": "a", "label_id": -1}]},
     "label_id must be a non-negative integer"),
    ({"subset": "test", "annotations": [{"segment": [1.0], "label": "a", "label_id": 0}]},
     'needs "segment": [start, end]'),
])
def test_bad_annotations_raise_one_line(tmp_path, entry, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        read_annotations(_write_ann(tmp_path, {"vid7": entry}))
    assert "vid7" in str(err.value) and "\n" not in str(err.value)


def test_bad_annotation_cli_error(tmp_path, tiny_data):
    ann = _write_ann(tmp_path, {"v": {"subset": "train", "annotations": [
        {"segment": [4.0, 2.0], "label": "a", "label_id": 0}]}})
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(tiny_data[1]),
                              "-o", str(tmp_path / "run")])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("davel: error:") and "not after start" in lines[0]


def test_annotations_class_names(tiny_data):
    ann = read_annotations(tiny_data[0])
    assert list(ann.class_names) == ["class0", "class1"] and ann.num_classes == 2
    assert {v.subset for v in ann.videos} == {"train", "validation", "test"}


# ------------------------------------------------------------------ whole runs


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path, tiny_data):
    ann, feats = tiny_data
    cfg = TrainConfig(model="unav", **TINY)
    train(cfg, ann, feats, tmp_path / "a")
    train(cfg, ann, feats, tmp_path / "b")
    a, b = _state(tmp_path / "a" / "last.pth"), _state(tmp_path / "b" / "last.pth")
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    # one epoch, stop, continue from last.pth: the same as the uninterrupted run
    first = train(cfg, ann, feats, tmp_path / "c", max_epochs=1)
    assert first.epochs_done == 1
    second = train(cfg, ann, feats, tmp_path / "c")
    assert second.epochs_done == cfg.total_epochs and len(second.history) == cfg.total_epochs - 1
    c = _state(tmp_path / "c" / "last.pth")
    assert all(torch.equal(a["state_dict_ema"][k], c["state_dict_ema"][k]) for k in a["state_dict_ema"])
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    assert len((tmp_path / "c" / "log.jsonl").read_text().splitlines()) == cfg.total_epochs
    # another seed gives other weights
    train(TrainConfig(model="unav", **{**TINY, "seed": 5}), ann, feats, tmp_path / "d")
    d = _state(tmp_path / "d" / "last.pth")
    assert not all(torch.equal(a["state_dict"][k], d["state_dict"][k]) for k in a["state_dict"])


def test_resume_refuses_other_settings(tmp_path, tiny_data):
    ann, feats = tiny_data
    train(TrainConfig(model="unav", **TINY), ann, feats, tmp_path, max_epochs=1)
    with pytest.raises(InputError, match="trained with other settings .*lr 0.002 -> 0.001"):
        train(TrainConfig(model="unav", **{**TINY, "lr": 1e-3}), ann, feats, tmp_path)


def test_checkpoint_format_and_official_layout(tmp_path, tiny_data):
    ann, feats = tiny_data
    res = train(TrainConfig(model="unav", **TINY), ann, feats, tmp_path)
    last, best = _state(tmp_path / "last.pth"), _state(tmp_path / "best.pth")
    assert set(last) == {"epoch", "state_dict", "state_dict_ema", "optimizer", "scheduler", "davel"}
    assert set(best) == {"epoch", "state_dict", "state_dict_ema", "davel"}  # as the repos' model_best
    assert all(k.startswith("module.") for k in last["state_dict_ema"])
    meta = last["davel"]
    assert meta["labels"] == ["class0", "class1"] and meta["model"] == "unav"
    assert meta["timebase"] == {"fps": 25.0, "stride": 8, "window": 24}
    assert meta["config"]["lr"] == TINY["lr"] and meta["epoch"] == 3 and last["epoch"] == 2
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all(r["val_average_mAP"] is not None for r in log)
    assert res.best_epoch == max(log, key=lambda r: (r["val_average_mAP"], -r["epoch"]))["epoch"]


@pytest.mark.parametrize("kind,max_seq_len,standardize", [
    ("ccnet", 32, False),
    ("ccnet", 32, True),
    ("unav", 224, False),
    # the weights do not show UnAV's max_seq_len; davel["model_config"] does
    ("unav", 32, False),
])
def test_checkpoint_loads_for_detect_and_eval_reproduces_validation(tmp_path, tiny_data, kind,
                                                                     max_seq_len, standardize):
    ann, feats = tiny_data
    cfg = TrainConfig(model=kind, **{**TINY, "max_seq_len": max_seq_len},
                      standardize_features=standardize)
    res = train(cfg, ann, feats, tmp_path)
    best_log = next(r for r in res.history if r.epoch == res.best_epoch)
    out = runner.invoke(app, ["eval", "--annotations", str(ann), "--checkpoint", str(tmp_path / "best.pth"),
                              "--features", str(feats), "--split", "validation", "--json",
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert metrics["average_mAP"] == pytest.approx(best_log.val_average_mAP, abs=1e-6)
    assert set(metrics) == {"tiou_thresholds", "mAP", "average_mAP", "ap_per_class"}


def test_missing_features_are_skipped_and_counted(tmp_path):
    ann, feats = make_dataset(tmp_path, n_train=5)
    (feats / "train_3_vggish.npy").unlink()
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(feats), "-o",
                              str(tmp_path / "run"), "--model", "unav", "--epochs", "1",
                              "--warmup-epochs", "0", "--batch-size", "2", "--embd-dim", "16",
                              "--dependency-dim", "4", "--max-seq-len", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "davel: warning: 1 of 5 training videos have no features" in res.stderr
    assert "train_3" in res.stderr
    meta = _state(tmp_path / "run" / "last.pth")["davel"]
    assert meta["skipped_videos"] == 1
    assert "trained 1/1 epochs" in res.stdout


def test_eval_predictions_cli_matches_fixture(fixtures):
    d = fixtures / "detector"
    res = runner.invoke(app, ["eval", "--annotations", str(d / "map_gt.json"), "--predictions",
                              str(d / "map_pred.json"), "--json"])
    assert res.exit_code == 0, res.output
    got, want = json.loads(res.stdout), json.loads((d / "map_expected.json").read_text())
    np.testing.assert_allclose(got["mAP"], want["mAP"], rtol=0, atol=1e-6)
    assert got["average_mAP"] == pytest.approx(want["average_mAP"], abs=1e-6)
    assert got["ap_per_class"].keys() == want["ap_per_class"].keys()
    table = runner.invoke(app, ["eval", "--annotations", str(d / "map_gt.json"), "--predictions",
                                str(d / "map_pred.json")])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[1].split()[:2] == ["tIoU", "0.10"] and lines[1].split()[-1] == "avg"
    assert lines[2].split()[-1] == f"{100 * want['average_mAP']:.2f}"
    assert lines[3].startswith("mAP@0.5:0.1:0.9 (%): ") and len(lines[3].split(" / ")) == 5


def test_eval_argument_errors(tmp_path, fixtures):
    gt = fixtures / "detector" / "map_gt.json"
    res = runner.invoke(app, ["eval", "--annotations", str(gt)])
    assert res.exit_code == 2 and "either --predictions" in res.stderr
    res = runner.invoke(app, ["eval", "--annotations", str(gt), "--checkpoint", str(gt)])
    assert res.exit_code == 2 and "--checkpoint needs --features" in res.stderr


# ------------------------------------------------------------------ feature standardisation


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
    ckpt = _state(tmp_path / "best.pth")
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
    ckpt = _state(tmp_path / "best.pth")
    ckpt["davel"]["feature_norm"]["audio_mean"] = torch.zeros(DIM_AUD + 1)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="feature statistics are 12-d / 5-d"):
        load_detector(tmp_path / "bad.pth", "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))
    del ckpt["davel"]["feature_norm"]["audio_std"]
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="unreadable feature statistics"):
        load_detector(tmp_path / "bad.pth", "cpu", expect_dims=(2 * DIM_RGB, DIM_AUD))


# ------------------------------------------------------------------ extractor settings follow the checkpoint

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


def test_log_holds_exactly_the_epochs_of_last_pth(tmp_path, tiny_data):
    ann, feats = tiny_data
    cfg = TrainConfig(model="unav", **TINY)
    train(cfg, ann, feats, tmp_path, max_epochs=2)
    log = tmp_path / "log.jsonl"
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2]
    # a crash after last.pth but before the log: the next run writes the log from last.pth
    log.write_text(log.read_text().splitlines()[0] + "\n")
    train(cfg, ann, feats, tmp_path)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2, 3]
    # --restart (or a new run in an old folder) starts a new log, not appended to the old one
    train(cfg, ann, feats, tmp_path, restart=True, max_epochs=1)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1]


def test_eval_counts_a_video_with_only_some_feature_files_as_missing(tmp_path, tiny_data):
    import shutil

    ann, feats = tiny_data
    train(TrainConfig(model="unav", **TINY), ann, feats, tmp_path / "run", max_epochs=1)
    partial = tmp_path / "feats"
    shutil.copytree(feats, partial)
    (partial / "test_0_rgb.npy").unlink()  # vggish is still there
    res = runner.invoke(app, ["eval", "--annotations", str(ann), "--checkpoint",
                              str(tmp_path / "run" / "best.pth"), "--features", str(partial),
                              "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert "1 of 2 test videos have no features" in res.stderr and "test_0" in res.stderr


def test_startup_reads_each_training_file_at_most_once(tmp_path, tiny_data, monkeypatch):
    import extractors.feature_files as ff

    ann, feats = tiny_data
    reads = []
    real = ff.read
    monkeypatch.setattr(ff, "read", lambda prefix: reads.append(str(prefix)) or real(prefix))
    from davel.train.loop import _prepare_data

    annotations = read_annotations(ann)
    _prepare_data(TrainConfig(model="unav", **TINY), annotations, feats)
    assert reads == []  # sizes and lengths come from the array headers
    _prepare_data(TrainConfig(model="unav", **TINY, standardize_features=True), annotations, feats)
    assert len(reads) == len(set(reads)) == len(annotations.subset("train"))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_workers_do_not_change_the_weights(tmp_path, tiny_data, workers):
    ann, feats = tiny_data
    cfg = TrainConfig(model="unav", **{**TINY, "epochs": 1, "warmup_epochs": 0})
    train(cfg, ann, feats, tmp_path / "ref", workers=0)
    train(cfg, ann, feats, tmp_path / "w", workers=workers)
    a, b = _state(tmp_path / "ref" / "last.pth"), _state(tmp_path / "w" / "last.pth")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
