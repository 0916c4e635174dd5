"""`davel extract`: batch behaviour, skip/resume, atomic outputs, bad inputs, weights errors.

These use small videos and the fast non-standard sizes (short side 128, crop 112, 2
RAFT iterations) so the whole file runs in well under a minute on 2 cores; the
numbers of the standard procedure are checked by test_pipeline_parity.py.
"""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from davel.cli import app

from media_files import write_video

runner = CliRunner()
FAST = ["--short-side", "128", "--crop", "112", "--raft-iterations", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "good.mp4", 33, fps=25)  # 33 frames -> T = 2
    write_video(d / "silent.mp4", 33, fps=25, audio=None)  # no audio track, T = 2
    write_video(d / "short.mp4", 20, fps=25)  # < 25 frames: no window
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x13" * 4000)
    return d


def run(*args):
    return runner.invoke(app, ["extract", *map(str, args)])


@pytest.fixture
def cheap_visual(monkeypatch):
    """Batch-logic tests: the visual networks replaced by a cheap stand-in that still
    consumes the decoded frames and gives one row per window (RAFT + I3D are covered
    by the batch test below and by test_pipeline_parity.py)."""
    from extractors.timebase import I3D_VGGISH
    from extractors.visual import VisualFeatureExtractor

    def fake(self, frames, on_window=None):
        t = I3D_VGGISH.num_steps(sum(1 for _ in frames))
        return np.ones((t, 1024), np.float32), np.ones((t, 1024), np.float32)

    monkeypatch.setattr(VisualFeatureExtractor, "__call__", fake)
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")  # the patch lives in this process, not in a worker


def test_batch_with_bad_videos_continues_and_reports(videos, standin_weights, tmp_path):
    out = tmp_path / "feats"
    res = run(videos / "good.mp4", videos / "corrupt.mp4", videos / "silent.mp4", videos / "short.mp4",
              "-o", out, "--weights-dir", standin_weights, *FAST)
    assert res.exit_code == 1
    err = res.stderr
    assert "extracted 2, skipped 0 (already done), failed 2" in err
    assert "corrupt.mp4" in err and "short.mp4: too short" in err
    assert "silent.mp4: no audio track" in err
    assert "Traceback" not in res.output + err
    rgb = np.load(out / "good_rgb.npy")
    assert rgb.shape == (2, 1024) and rgb.dtype == np.float32
    assert np.load(out / "good_flow.npy").shape == (2, 1024)
    vgg = np.load(out / "good_vggish.npy")
    assert vgg.shape[1] == 128 and vgg.dtype == np.float32 and len(vgg) >= 2
    assert np.load(out / "silent_rgb.npy").shape == (2, 1024)
    assert not any(p.name.startswith("corrupt") or p.name.startswith("short") for p in out.iterdir())
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_done_videos_are_skipped_and_overwrite_redoes_them(videos, standin_weights, tmp_path, cheap_visual):
    out = tmp_path / "feats"
    assert run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST).exit_code == 0
    before = (out / "good_rgb.npy").stat().st_mtime_ns
    res = run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST)
    assert res.exit_code == 0 and "skipped 1" in res.stderr
    assert (out / "good_rgb.npy").stat().st_mtime_ns == before
    # other settings -> not the same outputs -> redone
    res = run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST[:4], "--raft-iterations", "3")
    assert res.exit_code == 0 and "extracted 1" in res.stderr
    res = run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST[:4], "--raft-iterations", "3",
              "--overwrite")
    assert "extracted 1" in res.stderr
    meta = json.loads((out / "good_davel.json").read_text())
    assert meta["settings"]["raft_iterations"] == 3 and meta["T"] == 2


def test_an_interrupted_video_is_not_taken_as_done(videos, standin_weights, tmp_path, cheap_visual):
    out = tmp_path / "feats"
    assert run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST).exit_code == 0
    (out / "good_davel.json").unlink()  # as if killed before the sidecar was written
    res = run(videos / "good.mp4", "-o", out, "--weights-dir", standin_weights, *FAST)
    assert "extracted 1" in res.stderr


def test_dir_recursive_and_list(videos, standin_weights, tmp_path, cheap_visual):
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    shutil.copy(videos / "good.mp4", tree / "deep.mp4")
    out = tmp_path / "feats"
    res = run("--dir", tmp_path / "tree", "-o", out, "--weights-dir", standin_weights, *FAST)
    assert "no videos given" in res.stderr and res.exit_code != 0
    res = run("--dir", tmp_path / "tree", "--recursive", "-o", out, "--weights-dir", standin_weights, *FAST)
    assert res.exit_code == 0 and (out / "deep_rgb.npy").is_file()
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{videos / 'good.mp4'}\n")
    res = run("--list", listing, "-o", out, "--weights-dir", standin_weights, *FAST)
    assert res.exit_code == 0 and (out / "good_rgb.npy").is_file()


def test_missing_weights_name_the_file_and_the_command(videos, tmp_path):
    res = run(videos / "good.mp4", "-o", tmp_path / "o", "--weights-dir", tmp_path / "empty", *FAST)
    assert res.exit_code != 0
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("davel: error: missing weights file") and "davel weights download" in line


def test_tampered_weights_are_refused(videos, standin_weights, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(standin_weights, w)
    f = w / "i3d_flow.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    res = run(videos / "good.mp4", "-o", tmp_path / "o", "--weights-dir", w, *FAST)
    assert res.exit_code != 0 and "i3d_flow.pt fails its hash check" in res.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_no_flow_mode_skips_raft_and_writes_zero_flow(videos, standin_weights, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(standin_weights, w)
    (w / "raft-sintel.pth").unlink()  # not needed without flow
    res = run(videos / "good.mp4", "-o", tmp_path / "o", "--weights-dir", w, *FAST, "--no-flow")
    assert res.exit_code == 0, res.output
    rgb, flow = np.load(tmp_path / "o" / "good_rgb.npy"), np.load(tmp_path / "o" / "good_flow.npy")
    assert rgb.shape == flow.shape == (2, 1024) and not flow.any() and rgb.any()
