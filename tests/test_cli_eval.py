"""`davel eval`: mAP of a predictions file or of a checkpoint on features, argument errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from davel.cli import app
from davel.train import TrainConfig, train

from helpers import TINY

runner = CliRunner()


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
