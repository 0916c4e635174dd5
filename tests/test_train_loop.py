"""Whole training runs (davel.train.loop): determinism, resume, checkpoint format, log,
videos without features."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from davel.errors import InputError
from davel.train import TrainConfig, train

from helpers import TINY, make_dataset, read_state

runner = CliRunner()


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path, tiny_data):
    ann, feats = tiny_data
    cfg = TrainConfig(model="unav", **TINY)
    train(cfg, ann, feats, tmp_path / "a")
    train(cfg, ann, feats, tmp_path / "b")
    a, b = read_state(tmp_path / "a" / "last.pth"), read_state(tmp_path / "b" / "last.pth")
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    # one epoch, stop, continue from last.pth: the same as the uninterrupted run
    first = train(cfg, ann, feats, tmp_path / "c", max_epochs=1)
    assert first.epochs_done == 1
    second = train(cfg, ann, feats, tmp_path / "c")
    assert second.epochs_done == cfg.total_epochs and len(second.history) == cfg.total_epochs - 1
    c = read_state(tmp_path / "c" / "last.pth")
    assert all(torch.equal(a["state_dict_ema"][k], c["state_dict_ema"][k]) for k in a["state_dict_ema"])
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    assert len((tmp_path / "c" / "log.jsonl").read_text().splitlines()) == cfg.total_epochs
    # another seed gives other weights
    train(TrainConfig(model="unav", **{**TINY, "seed": 5}), ann, feats, tmp_path / "d")
    d = read_state(tmp_path / "d" / "last.pth")
    assert not all(torch.equal(a["state_dict"][k], d["state_dict"][k]) for k in a["state_dict"])


def test_resume_refuses_other_settings(tmp_path, tiny_data):
    ann, feats = tiny_data
    train(TrainConfig(model="unav", **TINY), ann, feats, tmp_path, max_epochs=1)
    with pytest.raises(InputError, match="trained with other settings .*lr 0.002 -> 0.001"):
        train(TrainConfig(model="unav", **{**TINY, "lr": 1e-3}), ann, feats, tmp_path)


def test_checkpoint_format_and_official_layout(tmp_path, tiny_data):
    ann, feats = tiny_data
    res = train(TrainConfig(model="unav", **TINY), ann, feats, tmp_path)
    last, best = read_state(tmp_path / "last.pth"), read_state(tmp_path / "best.pth")
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
    meta = read_state(tmp_path / "run" / "last.pth")["davel"]
    assert meta["skipped_videos"] == 1
    assert "trained 1/1 epochs" in res.stdout


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
