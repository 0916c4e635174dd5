"""The synthetic benchmark, reduced: render -> davel extract -> train -> detect -> eval (minutes on CPU).

CCNet and LoCo run in one working folder, so the videos are rendered and
extracted once.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "synthetic_benchmark.py"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic_benchmark")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ccnet", "loco"])
def test_quick_benchmark_learns_audio_visual_events(workdir, model):
    # one thread: fastest on a shared 2-core machine, barely slower on an idle one
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(workdir),
                           "--threads", "1", "--model", model], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((workdir / f"benchmark_{model}.json").read_text())
    assert summary["mode"] == "quick" and summary["model"] == model and summary["videos"]["test"] >= 8
    assert summary["test_mAP@0.5"] >= 0.5, summary
    check = summary["distractor_check"]
    # a sound with nothing visible and a silent visible thing are not events
    assert check["distractors"] >= 2 * summary["videos"]["test"]
    assert check["distractors_detected"] == 0, check
    assert check["events_detected"] >= check["events"] // 2, check
    assert 0 < summary["test_mean_of_std"] < 2
    # the files a user would look at are there
    run = Path(summary["run"])
    assert (run / "best.pth").is_file() and (run / "last.pth").is_file()
    assert len((run / "log.jsonl").read_text().splitlines()) == summary["epochs"]
