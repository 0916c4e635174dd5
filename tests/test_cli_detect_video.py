"""`davel detect VIDEO`: extraction through the feature cache, then detection."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from davel.cli import app

from media_files import write_video

runner = CliRunner()


@pytest.fixture
def counting_visual(monkeypatch):
    """The visual networks replaced by a cheap stand-in that counts its calls."""
    from extractors.timebase import I3D_VGGISH
    from extractors.visual import VisualFeatureExtractor

    calls = []

    def fake(self, frames, on_window=None):
        calls.append(1)
        t = I3D_VGGISH.num_steps(sum(1 for _ in frames))
        rng = np.random.default_rng(t)
        return rng.random((t, 1024), dtype=np.float32), rng.random((t, 1024), dtype=np.float32)

    monkeypatch.setattr(VisualFeatureExtractor, "__call__", fake)
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")  # the patch lives in this process, not in a worker
    return calls


def test_detect_on_videos_uses_the_feature_cache(tmp_path, standin_weights, tiny_checkpoint, counting_visual):
    a = write_video(tmp_path / "a.mp4", 60, fps=30)  # 2 s at 30 fps -> 50 frames at 25 fps
    b = write_video(tmp_path / "b.mp4", 50, fps=25, audio=None)
    args = ["detect", str(a), str(b), "--checkpoint", str(tiny_checkpoint), "--weights-dir",
            str(standin_weights), "--device", "cpu", "-o", str(tmp_path / "ev.jsonl")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "b.mp4: no audio track" in res.stderr
    rows = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [r["video"] for r in rows] == [str(a), str(b)]
    for r in rows:
        assert r["duration"] == pytest.approx(2.0, abs=0.05) and r["model"] == "unav"
        assert r["events"] and {e["label"] for e in r["events"]} <= {"dog", "car", "bell", "guitar"}
        assert all(0 <= e["start"] <= e["end"] <= r["duration"] for e in r["events"])
    assert len(counting_visual) == 2
    res = runner.invoke(app, args)  # same files, same settings: no extraction at all
    assert res.exit_code == 0 and len(counting_visual) == 2
    assert [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()] == rows


def test_one_bad_video_does_not_stop_the_others(tmp_path, standin_weights, tiny_checkpoint, counting_visual):
    good = write_video(tmp_path / "good.mp4", 50, fps=25)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk" * 100)
    res = runner.invoke(app, ["detect", str(bad), str(good), "--checkpoint", str(tiny_checkpoint),
                              "--weights-dir", str(standin_weights), "--device", "cpu", "--format", "jsonl"])
    assert res.exit_code == 1
    assert [json.loads(line)["video"] for line in res.stdout.splitlines()] == [str(good)]
    assert "bad.mp4" in res.stderr and "Traceback" not in res.stderr
