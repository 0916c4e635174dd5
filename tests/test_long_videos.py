"""Inputs longer than max_seq_len: windowing, an hour of features on CPU, the CLI on long inputs."""
import numpy as np
import torch

from davel.detectors.ccnet import CCNetDetector
from davel.detectors.unav import UnAVDetector
from davel.inference import Detector, prepare_inputs
from davel.postprocess import candidates, nms_to_seconds
from extractors.feature_files import Features
from extractors.timebase import I3D_VGGISH

HOUR_STEPS = int(3600 * 25 / 8)  # 11250 feature steps = 1 h at 0.32 s


def tiny_unav(max_seq_len=224):
    torch.manual_seed(0)
    return UnAVDetector(input_dim_v=2048, input_dim_a=128, embd_dim=32, head_dim=32, num_classes=6,
                        dependency_dim=16, max_seq_len=max_seq_len).eval()


def tiny_ccnet():
    torch.manual_seed(0)
    return CCNetDetector(input_dim_v=2048, input_dim_a=128, embd_dim=16, head_dim=16, num_classes=6,
                         mtgc_dim=4, max_seq_len=224).eval()


def loaded(model):
    return Detector(model, labels=[f"c{i}" for i in range(6)], timebase=I3D_VGGISH, feature_norm=None,
                    extraction=None, name="tiny.pth", sha256="0" * 64, device="cpu")


def features(steps, seed=0):
    rng = np.random.default_rng(seed)
    return Features(rgb=rng.random((steps, 1024), np.float32), flow=rng.random((steps, 1024), np.float32),
                    vggish=rng.random((steps, 128), np.float32))


def test_an_hour_of_features_runs_windowed_on_cpu():
    det = loaded(tiny_unav())
    res = det.detect_features(features(HOUR_STEPS))
    assert res.windows > 1 and res.num_steps == HOUR_STEPS
    ev = res.events
    assert len(ev) > 100  # the cap grows with the windows
    assert all(0 <= e.start <= e.end <= res.duration for e in ev)
    assert max(e.end for e in ev) > 0.9 * res.duration  # the whole hour is covered
    assert min(e.start for e in ev) < 0.1 * res.duration


def test_single_pass_equals_one_plain_forward():
    """A video the model runs whole is not windowed, and its events are those of one forward
    pass + Soft-NMS done by hand (exact by construction: the same computations)."""
    det = loaded(tiny_unav())
    f = features(200)
    res = det.detect_features(f)
    assert res.windows == 1
    v, a, mask = prepare_inputs(f.visual(), f.audio(), det.model.padded_length(200))
    with torch.inference_mode():
        out = det.model(v, a, mask)
    final = nms_to_seconds(*candidates(out), I3D_VGGISH.covered_seconds(200), I3D_VGGISH)
    assert [(e.label_id, e.start, e.end, e.score) for e in res.events] == [
        (int(lab), round(float(s[0]), 4) + 0.0, round(float(s[1]), 4), round(float(sc), 6))
        for s, sc, lab in zip(final.segments, final.scores, final.labels)]


def test_windows_find_an_event_in_every_part_of_a_long_video():
    # CCNet runs max_seq_len steps at most: a longer video is windowed. Per-window scores are
    # those of the same model on the same window: an event of the last window is found at the
    # right place in the merged result.
    det = loaded(tiny_ccnet())
    f = features(1000)
    res = det.detect_features(f, top_k=10000)
    assert res.windows == 8  # starts 0, 112, ..., 672 and 776 (the last aligned to the end)
    single = det.detect_features(Features(f.rgb[776:], f.flow[776:], f.vggish[776:]), top_k=10000)
    offset = I3D_VGGISH.step_seconds * 776
    best = single.events[0]
    assert any(e.label_id == best.label_id and abs(e.start - (best.start + offset)) < 1e-3
               and abs(e.end - (best.end + offset)) < 1e-3 for e in res.events)


def test_top_k_and_min_score():
    det = loaded(tiny_unav())
    res = det.detect_features(features(150), top_k=5, min_score=0.0)
    assert len(res.events) == 5
    thr = res.events[2].score - 1e-6  # scores are printed rounded to 6 decimals
    res2 = det.detect_features(features(150), top_k=5, min_score=thr)
    assert all(e.score >= thr for e in res2.events) and len(res2.events) == 3
