"""CCNet detector: parity with the original code, checkpoint layout, max_seq_len, refusals.

Kinds (see tests/helpers.py): outputs against the fixtures are float tolerance
(tests/detector_parity.py); loading and layouts are exact by construction (copies).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from davel.detectors.ccnet import CCNetDetector
from davel.detectors.checkpoint import build_detector
from davel.errors import InputError, WeightsError
from davel.inference import prepare_inputs
from weights.standin import load_manifest, standin_state_dict

from detector_parity import LEVELS, assert_matches_reference


@pytest.fixture(scope="module")
def model() -> CCNetDetector:
    # keys "module."-prefixed, as in the checkpoint's state_dict_ema
    return CCNetDetector.from_state_dict(standin_state_dict("ccnet_unav100"))


@pytest.mark.parametrize("steps", [150, 224])  # 224 = max_seq_len: no padding
def test_ccnet_matches_original(fixtures, model, steps):
    ref = np.load(fixtures / "detector" / f"ccnet_T{steps}.npz")
    assert_matches_reference(model, ref)


def test_layout_equals_official_manifest(model):
    manifest = load_manifest("ccnet_unav100")
    loaded = {k: list(t.shape) for k, t in model.state_dict().items()}
    assert loaded == {k.removeprefix("module."): shape for k, shape in manifest.items()}
    assert model.max_seq_len == 224 and model.num_classes == 100
    assert (model.input_dim_v, model.input_dim_a) == (2048, 128)


def test_refuses_longer_than_max_seq_len(model):
    with pytest.raises(ValueError, match="at most 224 feature steps") as err:
        model.padded_length(300)
    assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    v, a, mask = prepare_inputs(torch.ones(2048, 300), torch.ones(128, 300), 320)
    with pytest.raises(ValueError, match="exactly 224 steps"):
        model(v, a, mask)


def _tiny_ccnet(max_seq_len: int = 64, num_classes: int = 5) -> CCNetDetector:
    torch.manual_seed(0)
    return CCNetDetector(input_dim_v=24, input_dim_a=8, embd_dim=16, num_classes=num_classes,
                         head_dim=16, mtgc_dim=8, max_seq_len=max_seq_len).eval()


def test_max_seq_len_read_from_shapes():
    # the repo yaml's max_seq_len 256 (parity README "Quirks"); 100 classes for the real shapes
    sd = {f"module.{k}": t for k, t in _tiny_ccnet(256, num_classes=100).state_dict().items()}
    assert sd["module.MTGC_block.C2F_linear.0.weight"].shape == (256, 128)
    assert sd["module.MTGC_block.feature_tem_block.0.weight"].shape == (25600, 256)
    rebuilt = CCNetDetector.from_state_dict(sd)
    assert rebuilt.max_seq_len == 256 and rebuilt.padded_length(97) == 256
    assert (rebuilt.input_dim_v, rebuilt.input_dim_a, rebuilt.num_classes) == (24, 8, 100)
    assert all(torch.equal(t, sd[f"module.{k}"]) for k, t in rebuilt.state_dict().items())


def test_batch_rows_are_independent():
    # every video of a batch gets the result it gets alone (masks stay per video)
    model = _tiny_ccnet()
    sd = model.state_dict()
    rebuilt = CCNetDetector.from_state_dict(sd)  # no "module." prefix this time
    torch.manual_seed(1)
    v, a = torch.randn(2, 24, 64), torch.randn(2, 8, 64)
    mask = torch.arange(64)[None] < torch.tensor([[40], [64]])
    with torch.inference_mode():
        both = rebuilt(v, a, mask)
        alone = model(v[:1], a[:1], mask[:1])  # the padded one, next to a full-length video
    for i in range(LEVELS):
        torch.testing.assert_close(both.cls_logits[i][0], alone.cls_logits[i][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(both.offsets[i][0], alone.offsets[i][0], rtol=0, atol=1e-5)
        assert both.points[i].shape == (64 // 2 ** i, 4) and bool((both.offsets[i] >= 0).all())


def test_refuses_inconsistent_checkpoint():
    sd = _tiny_ccnet().state_dict()
    sd["MTGC_block.C2F_linear.1.weight"] = torch.zeros(30, 16)  # not 64/2 x 64/4
    with pytest.raises(WeightsError, match="does not match") as err:
        CCNetDetector.from_state_dict(sd)
    assert "\n" not in str(err.value)
    del sd["MTGC_block.feature_expand.conv.weight"]
    with pytest.raises(WeightsError, match="not a CCNet"):
        CCNetDetector.from_state_dict(sd)


def test_build_detector_dispatches_to_ccnet():
    sd = _tiny_ccnet().state_dict()
    model, info = build_detector({"state_dict_ema": {f"module.{k}": t for k, t in sd.items()}})
    assert isinstance(model, CCNetDetector) and not model.training
    assert info.kind == "ccnet" and info.max_seq_len == 64 and info.num_classes == 5
    assert all(torch.equal(t, sd[k]) for k, t in model.state_dict().items())
