"""Model names -> checkpoints (davel.models): the published names, stored ones, unknown names."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import davel
from davel.cli import app

runner = CliRunner()


def test_available_models_and_unknown_names(tmp_path, tiny_checkpoint):
    assert davel.available_models()[:2] == ["ccnet", "unav"]
    res = runner.invoke(app, ["weights", "import", str(tiny_checkpoint), "--name", "tiny-api"])
    assert res.exit_code == 0, res.output
    assert "tiny-api" in davel.available_models()
    with pytest.raises(davel.WeightsError, match="unknown model 'nope'"):
        davel.load_detector("nope", device="cpu")
