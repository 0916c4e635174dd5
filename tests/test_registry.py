"""The detector family: a new kind is one module and one registry line, and the base
class checks the contract the rest of davel relies on.

The fourth kind below is written as a kind's author would: a subclass with one option
of its own. Registered with one line (``DETECTORS[...] = ...``), it trains, saves,
loads, detects and shows its option in ``davel train --help`` without any other change.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from davel.cli import make_app
from davel.detectors import registry
from davel.detectors.base import ModelOption, PyramidDetector
from davel.detectors.output import DetectorOutput
from davel.detectors.stem import TwoStreamStem
from davel.detectors.unav import UnAVDetector
from davel.inference import load_detector
from extractors.feature_files import read

runner = CliRunner()


class GatedUnAV(UnAVDetector):
    """UnAV whose audio features first pass through a learnt per-channel gate."""

    kind: ClassVar[str] = "gated_unav"
    state_dict_markers: ClassVar[tuple[str, ...]] = ("audio_gate",)
    options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("gate_init", 1.0, "initial value of the audio gate", minimum=0),)

    def __init__(self, *args: Any, gate_init: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audio_gate = nn.Parameter(torch.full((self.input_dim_a,), float(gate_init)))

    def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
        return super().forward(feats_v, feats_a * self.audio_gate[:, None], mask)

    @classmethod
    def kwargs_from_state_dict(cls, state_dict: Mapping[str, Tensor],
                               hints: Mapping[str, Any]) -> dict[str, Any]:
        return super().kwargs_from_state_dict(state_dict, hints)


@pytest.fixture
def fourth_kind(monkeypatch):
    monkeypatch.setitem(registry.DETECTORS, "gated_unav", GatedUnAV)  # the registry line
    return make_app()


def test_a_fourth_kind_trains_saves_loads_detects_and_shows_its_option(tmp_path, tiny_data, fourth_kind):
    ann, feats = tiny_data
    app = fourth_kind
    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "--gate-init" in res.stdout and "GatedUnAV: initial value of the audio gate" in res.stdout
    assert "gated_unav" in res.stdout  # the --model help names every kind

    base = ["train", "--annotations", str(ann), "--features", str(feats), "--epochs", "1",
            "--warmup-epochs", "0", "--batch-size", "3", "--embd-dim", "16", "--dependency-dim", "4",
            "--max-seq-len", "32", "--device", "cpu", "--quiet"]
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--model", "unav", "--gate-init", "2"])
    assert res.exit_code == 2 and "--gate-init and the other GatedUnAV options go with --model gated_unav" in res.stderr
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--model", "gated_unav", "--gate-init", "-1"])
    assert res.exit_code == 2 and "--gate-init must be at least 0" in res.stderr

    res = runner.invoke(app, [*base, "-o", str(tmp_path / "run"), "--model", "gated_unav", "--gate-init", "0.5"])
    assert res.exit_code == 0, res.output
    saved = torch.load(tmp_path / "run" / "best.pth", map_location="cpu", weights_only=True)
    assert saved["davel"]["model"] == "gated_unav"
    assert saved["davel"]["model_config"]["gate_init"] == 0.5
    assert "module.audio_gate" in saved["state_dict_ema"]

    detector = load_detector(tmp_path / "run" / "best.pth", device="cpu")
    assert isinstance(detector.model, GatedUnAV) and detector.model.kind == "gated_unav"
    assert torch.equal(detector.model.audio_gate, saved["state_dict_ema"]["module.audio_gate"])
    video = json.loads(ann.read_text())["database"]
    vid = next(iter(video))
    result = detector.detect_features(read(feats / vid), name=vid)
    assert result.model == "gated_unav" and result.events

    res = runner.invoke(app, ["detect", "--features", str(feats / vid), "--checkpoint",
                              str(tmp_path / "run" / "best.pth"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "gated_unav"


def test_the_base_class_checks_its_contract():
    class NoHeads(PyramidDetector):
        kind = "no_heads"
        state_dict_markers = ("x.",)
        cross_prefix = "backbone.x"

        def __init__(self) -> None:
            super().__init__(8, 4, 2, 64, (2, 2, 5), [(0, 1)] * 6)
            self.backbone = TwoStreamStem(8, 4, 16, 4, 3, 2, 1, max_len=64)  # forgets build_heads

        def forward(self, feats_v: Tensor, feats_a: Tensor, mask: Tensor) -> DetectorOutput:
            raise NotImplementedError

        @classmethod
        def kwargs_from_state_dict(cls, state_dict, hints):
            return {}

    with pytest.raises(TypeError, match="must set self.cls_head"):
        NoHeads()

    with pytest.raises(TypeError, match="must set state_dict_markers"):
        class NoMarkers(UnAVDetector):
            kind = "no_markers"
            state_dict_markers = ()

    class NoLoader(PyramidDetector):  # no kwargs_from_state_dict, no forward
        kind = "no_loader"
        state_dict_markers = ("y.",)
        cross_prefix = "backbone.y"

    with pytest.raises(TypeError, match="abstract"):
        NoLoader(8, 4, 2, 64, (2, 2, 5), [(0, 1)] * 6)


def test_options_are_checked_from_their_declaration():
    loco = registry.get_detector_class("loco")
    assert loco.check_options({"attention": "fixed"})["attention"] == "fixed"
    with pytest.raises(ValueError, match="LoCo option attention must be one of adaptive, fixed, global"):
        loco.check_options({"attention": "local"})
    with pytest.raises(ValueError, match="unknown LoCo options: nope"):
        loco.check_options({"nope": 1})
    with pytest.raises(ValueError, match="cdp_window must be an integer"):
        loco.check_options({"cdp_window": 2.5})
    assert registry.get_detector_class("unav").check_options({}) == {}
