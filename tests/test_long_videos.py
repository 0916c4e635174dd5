"""Inputs longer than max_seq_len: windowing, an hour of features on CPU, the CLI on long inputs."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel import pipeline
from davel.cli import app
from davel.detectors.unav import UnAVDetector
from davel.timebase import I3D_VGGISH
from extractors.feature_files import Features

runner = CliRunner()
HOUR_STEPS = int(3600 * 25 / 8)  # 11250 feature steps = 1 h at 0.32 s


def tiny_unav(max_seq_len=224):
    torch.manual_seed(0)
    m = UnAVDetector(input_dim_v=2048, input_dim_a=128, embd_dim=32, head_dim=32, num_classes=6,
                     dependency_dim=16, max_seq_len=max_seq_len).eval()
    return m


def loaded(model, kind="unav"):
    return pipeline.LoadedDetector(model=model, kind=kind, name="tiny.pth", sha256="0" * 64,
                                   labels=[f"c{i}" for i in range(6)], timebase=I3D_VGGISH,
                                   max_seq_len=model.max_seq_len, device=torch.device("cpu"))


def features(steps, seed=0):
    rng = np.random.default_rng(seed)
    return Features(rgb=rng.random((steps, 1024), np.float32), flow=rng.random((steps, 1024), np.float32),
                    vggish=rng.random((steps, 128), np.float32))


def test_an_hour_of_features_runs_windowed_on_cpu():
    det = loaded(tiny_unav())
    res = pipeline.detect_features(det, features(HOUR_STEPS))
    assert res["windows"] > 1 and res["num_steps"] == HOUR_STEPS
    ev = res["events"]
    assert len(ev) > 100  # the cap grows with the windows
    assert all(0 <= e["start"] <= e["end"] <= res["duration"] for e in ev)
    assert max(e["end"] for e in ev) > 0.9 * res["duration"]  # the whole hour is covered
    assert min(e["start"] for e in ev) < 0.1 * res["duration"]


def test_windowing_equals_single_pass_where_the_model_runs_whole():
    # A video that fits one window gives exactly the single-pass result (no windowing at all).
    det = loaded(tiny_unav())
    f = features(200)
    a = pipeline.detect_features(det, f)
    assert a["windows"] == 1
    v, au = f.visual(), f.audio()
    segs, sc, lb = pipeline._dense(det, v, au, pipeline.PostprocessConfig())
    assert len(a["events"]) == min(100, len(sc))


def test_windows_find_an_event_in_every_part_of_a_long_video():
    # Per-window scores are those of the same model on the same window: an event planted in
    # the last window is found at the right place in the merged result.
    det = loaded(tiny_unav(), kind="ccnet")  # ccnet path: windows beyond max_seq_len
    f = features(1000)
    res = pipeline.detect_features(det, f, top_k=10000)
    single = pipeline.detect_features(det, Features(f.rgb[776:], f.flow[776:], f.vggish[776:]), top_k=10000)
    offset = I3D_VGGISH.step_seconds * 776
    best = single["events"][0]
    assert any(e["label_id"] == best["label_id"] and abs(e["start"] - (best["start"] + offset)) < 1e-3
               and abs(e["end"] - (best["end"] + offset)) < 1e-3 for e in res["events"])


def test_top_k_and_min_score():
    det = loaded(tiny_unav())
    res = pipeline.detect_features(det, features(150), top_k=5, min_score=0.0)
    assert len(res["events"]) == 5
    thr = res["events"][2]["score"] - 1e-6  # scores are printed rounded to 6 decimals
    res2 = pipeline.detect_features(det, features(150), top_k=5, min_score=thr)
    assert all(e["score"] >= thr for e in res2["events"]) and len(res2["events"]) == 3
