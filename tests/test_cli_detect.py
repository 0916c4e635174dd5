"""`davel detect --features` end to end against the original code's final events.

Float tolerance (see tests/helpers.py): the whole detector runs on the fixture's
features, so events are matched per label as multisets (near-equal scores may
swap order on another CPU) within 1e-3 s and 1e-4 in score.
"""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from davel.detectors.unav import UnAVDetector
from davel.labels import unav100_labels
from weights.standin import standin_state_dict
from weights.standin_files import official_checkpoint

from helpers import assert_same_events, report

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
    worst = assert_same_events(out["events"], (ref["segments_sec"], ref["scores"], ref["labels"]))
    assert all(e["label"] == unav100_labels()[e["label_id"]] for e in out["events"])  # no --labels
    report(f"detect_features[{kind}-{T}]", "max_abs_seconds", worst[0])
    report(f"detect_features[{kind}-{T}]", "max_abs_score", worst[1])


@pytest.fixture(scope="module")
def feature_dir(fixtures, tmp_path_factory):
    d = tmp_path_factory.mktemp("feats")
    write_features(fixtures / "detector" / "unav_T150.npz", d, "a")
    # a second, shorter input: the first 97 steps
    for s in ("rgb", "flow", "vggish"):
        np.save(d / f"b_{s}.npy", np.load(d / f"a_{s}.npy")[:97])
    return d


def one_line_error(res, *needles):
    assert res.exit_code != 0
    err = res.stderr.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("davel: error:"), res.stderr
    assert "Traceback" not in res.output + res.stderr
    for n in needles:
        assert n in err[-1], err[-1]


@pytest.mark.parametrize("fmt", ["json", "csv", "srt", "vtt"])  # jsonl: the several-inputs test
def test_every_output_format(fmt, checkpoints, feature_dir, tmp_path):
    out = tmp_path / f"events.{fmt}"
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--checkpoint",
                              str(checkpoints["unav"]), "-o", str(out), "--top-k", "5"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    if fmt == "json":
        assert len(json.loads(text)["events"]) == 5
    elif fmt == "csv":
        assert text.splitlines()[0] == "video,label,label_id,start,end,score" and len(text.splitlines()) == 6
    elif fmt == "srt":  # the published checkpoints' 100 classes are named UnAV-100's way
        assert text.startswith("1\n00:00:") and " --> " in text
        assert any(name in text for name in unav100_labels())
    else:
        assert text.startswith("WEBVTT\n\n00:00:")
    assert "no class names" not in res.stderr


def test_a_checkpoint_without_names_labels_events_class_id_and_says_so(feature_dir, tmp_path):
    # neither names of its own nor 100 classes (the UnAV-100 names are for those)
    torch.manual_seed(0)
    m = UnAVDetector(embd_dim=32, head_dim=32, num_classes=4, dependency_dim=16)
    path = tmp_path / "unnamed.pth"
    torch.save({"state_dict_ema": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    out = tmp_path / "events.srt"
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--checkpoint", str(path),
                              "-o", str(out), "--top-k", "5", "--min-score", "0"])
    assert res.exit_code == 0, res.output
    assert "class_" in out.read_text()
    assert "no class names" in res.stderr  # the warning says how to get real names


def test_several_inputs_give_json_lines_with_labels(checkpoints, feature_dir, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"event {i}\n" for i in range(100)))
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--features",
                              str(feature_dir / "b"), "--checkpoint", str(checkpoints["unav"]),
                              "--labels", str(names), "--min-score", "0.5"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["video"] for line in lines] == ["a", "b"]
    # duration from the span the features cover: (8 (T - 1) + 24) / 25
    assert lines[1]["duration"] == pytest.approx((8 * 96 + 24) / 25)
    assert all(e["score"] >= 0.5 for line in lines for e in line["events"])
    assert all(e["label"] == f"event {e['label_id']}" for line in lines for e in line["events"])
    assert sum(len(line["events"]) for line in lines) > 0


def test_one_peace_checkpoint_is_refused_in_one_line(tmp_path, feature_dir):
    sd = {"module.backbone.embd_V.0.conv.weight": torch.zeros(512, 1536, 3),
          "module.backbone.embd_A.0.conv.weight": torch.zeros(512, 1536, 3),
          "module.MTGC_block.C2F_linear.0.weight": torch.zeros(224, 112)}
    path = tmp_path / "ccnet_onepeace.pth"
    torch.save({"state_dict_ema": sd}, path)
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--checkpoint", str(path)])
    one_line_error(res, "1536")


def test_bad_inputs_never_overwrite_earlier_results(checkpoints, feature_dir, tmp_path):
    out = tmp_path / "events.json"
    out.write_text("earlier results")
    bad = tmp_path / "bad"
    np.save(tmp_path / "bad_rgb.npy", np.zeros((5, 1024), np.float32))
    np.save(tmp_path / "bad_flow.npy", np.zeros((4, 1024), np.float32))  # shape mismatch
    np.save(tmp_path / "bad_vggish.npy", np.zeros((5, 128), np.float32))
    for args, needle in [
        (["--features", str(tmp_path / "nothing")], "missing feature file"),  # checked before the model loads
        (["--features", str(bad)], "differ in shape"),
    ]:
        res = runner.invoke(app, ["detect", *args, "--checkpoint", str(checkpoints["unav"]), "-o", str(out)])
        one_line_error(res, needle)
        assert out.read_text() == "earlier results"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage" * 10)
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--checkpoint", str(junk),
                              "-o", str(out)])
    one_line_error(res, "junk.pth")
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "-o", str(out)])  # default: ccnet
    one_line_error(res, "ccnet_unav100.pth", "davel weights download")
    assert out.read_text() == "earlier results"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("events")) == ["events.json"]


def test_import_checkpoint_then_detect_by_name(checkpoints, feature_dir, fixtures):
    res = runner.invoke(app, ["weights", "import", str(checkpoints["unav"]), "--name", "myunav",
                              "--labels", str(fixtures / "detector" / "map_gt.json")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--model", "myunav", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["events"]) == 3 and out["checkpoint"]["name"] == "myunav.pth"
    assert "no class names" not in res.stderr


def test_plot_draws_each_timeline_in_the_detect_run(checkpoints, feature_dir, tmp_path):
    one = tmp_path / "a.png"
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--checkpoint",
                              str(checkpoints["unav"]), "--top-k", "5", "--plot", str(one)])
    assert res.exit_code == 0, res.output
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--features",
                              str(feature_dir / "b"), "--checkpoint", str(checkpoints["unav"]),
                              "--top-k", "5", "--plot", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["a.png", "b.png"]
    res = runner.invoke(app, ["detect", "--features", str(feature_dir / "a"), "--features",
                              str(feature_dir / "b"), "--checkpoint", str(checkpoints["unav"]),
                              "--plot", str(tmp_path / "one.png")])
    assert res.exit_code == 2 and "give -o a folder" in res.stderr
