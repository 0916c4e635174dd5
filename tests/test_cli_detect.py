"""`davel detect --features` end to end against the original code's final events."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from weights.standin import standin_state_dict
from weights.standin_files import official_checkpoint

runner = CliRunner()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for kind, manifest in (("unav", "unav_unav100"), ("ccnet", "ccnet_unav100")):
        path = d / f"{kind}_official_layout.pth"
        torch.save(official_checkpoint(standin_state_dict(manifest, salt=0)), path)
        out[kind] = path
    return out


def write_features(fixture_npz, directory, stem):
    d = np.load(fixture_npz)
    v, a = d["feats_visual"], d["feats_audio"]
    np.save(directory / f"{stem}_rgb.npy", v[:1024].T.copy())
    np.save(directory / f"{stem}_flow.npy", v[1024:].T.copy())
    np.save(directory / f"{stem}_vggish.npy", a.T.copy())
    return d


def assert_same_events(result, ref):
    """Same events as the original: a multiset keyed by label, times 1e-3 s, scores 1e-4."""
    ev = result["events"]
    assert len(ev) == len(ref["scores"])
    ours = sorted((e["label_id"], e["score"], e["start"], e["end"]) for e in ev)
    theirs = sorted(zip(ref["labels"].tolist(), ref["scores"].tolist(),
                        ref["segments_sec"][:, 0].tolist(), ref["segments_sec"][:, 1].tolist()))
    for o, t in zip(ours, theirs):
        assert o[0] == t[0]
        assert o[1] == pytest.approx(t[1], abs=1e-4)
        assert o[2] == pytest.approx(t[2], abs=1e-3) and o[3] == pytest.approx(t[3], abs=1e-3)
    scores = [e["score"] for e in ev]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("kind,T", [("unav", 150), ("unav", 300), ("ccnet", 150), ("ccnet", 224)])
def test_detect_features_equals_original(kind, T, checkpoints, fixtures, tmp_path):
    ref = write_features(fixtures / "detector" / f"{kind}_T{T}.npz", tmp_path, "vid")
    res = runner.invoke(app, ["detect", "--features", str(tmp_path / "vid"), "--checkpoint",
                              str(checkpoints[kind]), "--duration", str(float(ref["duration"])),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["video"] == "vid" and out["model"] == kind and out["duration"] == pytest.approx(float(ref["duration"]))
    assert out["checkpoint"]["name"] == checkpoints[kind].name and len(out["checkpoint"]["sha256"]) == 64
    assert_same_events(out, ref)
