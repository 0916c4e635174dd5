"""UnAV-100 baseline detector: parity with the original code, checkpoint loading, refusals.

Kinds (see tests/helpers.py): outputs against the fixtures are float tolerance
(tests/detector_parity.py); loading and layouts are exact by construction (copies).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from davel.detectors.checkpoint import build_detector, load_checkpoint
from davel.detectors.unav import UnAVDetector
from davel.errors import WeightsError
from davel.inference import prepare_inputs
from weights.standin import standin_state_dict

from detector_parity import assert_matches_reference


@pytest.fixture(scope="module")
def standin_sd() -> dict[str, torch.Tensor]:
    return standin_state_dict("unav_unav100")  # keys "module."-prefixed, as in the checkpoint


@pytest.fixture(scope="module")
def model(standin_sd) -> UnAVDetector:
    return UnAVDetector.from_state_dict(standin_sd)


@pytest.mark.parametrize("steps", [150, 300])  # 300: long-video path, pads to 320
def test_unav_matches_original(fixtures, model, steps):
    ref = np.load(fixtures / "detector" / f"unav_T{steps}.npz")
    assert_matches_reference(model, ref)


def test_padded_length_and_inputs(model):
    assert [model.padded_length(t) for t in (1, 224, 225, 300, 412)] == [224, 224, 256, 320, 416]
    v, a, mask = prepare_inputs(torch.ones(2048, 10), torch.ones(128, 12), 224)
    assert v.shape == (1, 2048, 224) and a.shape == (1, 128, 224) and mask.shape == (1, 224)
    assert int(mask.sum()) == 10 and float(a[0, :, 10:].abs().sum()) == 0.0


def _tiny_unav() -> UnAVDetector:
    torch.manual_seed(0)
    return UnAVDetector(input_dim_v=24, input_dim_a=8, embd_dim=32, num_classes=5, head_dim=16,
                        dependency_dim=8, backbone_arch=(2, 3, 5)).eval()


def test_from_state_dict_reads_sizes_from_shapes():
    sd = _tiny_unav().state_dict()
    rebuilt = UnAVDetector.from_state_dict({f"module.{k}": t for k, t in sd.items()})
    assert (rebuilt.input_dim_v, rebuilt.input_dim_a, rebuilt.num_classes) == (24, 8, 5)
    assert all(torch.equal(t, sd[k]) for k, t in rebuilt.state_dict().items())
    with torch.inference_mode():
        out = rebuilt(torch.randn(1, 24, 224), torch.randn(1, 8, 224), torch.arange(224)[None] < 99)
    assert out.offsets[5].shape == (1, 7, 5, 2) and bool((out.offsets[0] >= 0).all())


def test_load_official_layout_file(tmp_path, standin_sd):
    # what train_utils.save_checkpoint writes; state_dict and EMA share storage here
    path = tmp_path / "epoch_039.pth.tar"
    torch.save({"epoch": 40, "state_dict": standin_sd, "state_dict_ema": standin_sd,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                "scheduler": {"last_epoch": 40, "base_lrs": [1e-4]}}, path)
    model, info, sha = load_checkpoint(path, expect_dims=(2048, 128))
    assert isinstance(model, UnAVDetector) and not model.training
    assert info.kind == "unav" and info.num_classes == 100 and info.max_seq_len == 224
    assert (info.input_dim_v, info.input_dim_a) == (2048, 128)
    assert len(sha) == 64
    loaded = model.state_dict()
    assert len(loaded) == len(standin_sd)
    assert all(torch.equal(loaded[k.removeprefix("module.")], t) for k, t in standin_sd.items())


def test_refuses_other_feature_dims():
    sd = _tiny_unav().state_dict()
    sd["backbone.embd_V.0.conv.weight"] = torch.zeros(32, 1536, 3)
    sd["backbone.embd_A.0.conv.weight"] = torch.zeros(32, 1536, 3)
    with pytest.raises(WeightsError, match="1536-d visual / 1536-d audio") as err:
        build_detector({"state_dict_ema": sd}, expect_dims=(2048, 128))
    assert "\n" not in str(err.value)
    model, info = build_detector(sd)  # dims come from the weights
    assert info.input_dim_v == 1536 and model.input_dim_a == 1536


class _NotTensors:
    pass


@pytest.mark.parametrize("content", ["text", "foreign_dict", "pickled_object"])
def test_refuses_non_detector_files(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("not a checkpoint\n")
    elif content == "foreign_dict":
        torch.save({"features.0.weight": torch.zeros(3, 3)}, path)
    else:
        torch.save({"state_dict": _NotTensors()}, path)  # needs pickle execution
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError):
        load_checkpoint(tmp_path / "missing.pth")


def test_building_from_a_checkpoint_touches_no_global_state(standin_sd, monkeypatch):
    """The model is built on the meta device: no real tensor is initialised only to be
    replaced by the checkpoint, and torch.nn.init is left alone (davel 0.1 patched it)."""
    originals = {name: getattr(torch.nn.init, name) for name in
                 ("kaiming_uniform_", "uniform_", "normal_", "trunc_normal_", "xavier_uniform_")}

    def spy(name):
        def init(tensor, *args, **kwargs):
            assert tensor.is_meta, f"nn.init.{name} ran on a real tensor"
            return originals[name](tensor, *args, **kwargs)
        return init

    for name in originals:
        monkeypatch.setattr(torch.nn.init, name, spy(name))
    model = UnAVDetector.from_state_dict(standin_sd)
    assert all(getattr(torch.nn.init, n).__name__ == "init" for n in originals)  # still ours
    assert not any(p.is_meta for p in model.parameters())
    assert model.backbone.pos_embd.abs().sum() > 0  # the table is computed, not loaded
