"""Training data (davel.train.data): random crops, reading the feature files, loader workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from davel.annotations import read_annotations
from davel.train import TrainConfig, train
from davel.train.data import Sample, random_crop

from helpers import TINY, read_state


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
    a, b = read_state(tmp_path / "ref" / "last.pth"), read_state(tmp_path / "w" / "last.pth")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
