"""I3D rgb / flow streams against the original video_features I3D (stand-in weights, salt 0).

Kinds (see tests/helpers.py): the streams against the fixture are float tolerance
(relative to the reference's largest magnitude); input scaling, layouts and the
one-pass head are exact by construction (elementwise casts, copies, the same op twice).
"""
import numpy as np
import pytest
import torch

from davel.errors import WeightsError
from extractors.i3d import I3D, flow_to_i3d_input, load_i3d, rgb_to_i3d_input
from weights.standin import load_manifest, standin_state_dict

from helpers import report

# Parity README: features and logits within 1e-4 of the reference's largest magnitude.
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def stacks(fixtures):
    return dict(np.load(fixtures / "visual" / "i3d_stacks.npz"))


@pytest.fixture(scope="module")
def outputs(stacks):
    """One 24-frame window through each stream: {stream: (features [1024], logits [400])}."""
    to_input = {"rgb": rgb_to_i3d_input, "flow": flow_to_i3d_input}
    out = {}
    for stream in ("rgb", "flow"):
        model = load_i3d(standin_state_dict(f"i3d_{stream}"), stream)
        with torch.inference_mode():
            x = to_input[stream](torch.from_numpy(stacks[f"{stream}_in"]))
            feats, logits = model.features_and_logits(x)
        out[stream] = (feats[0].numpy(), logits[0].numpy())
    return out


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_stream_matches_reference(stream, stacks, outputs):
    feats, logits = outputs[stream]
    assert feats.shape == (1024,) and logits.shape == (400,)
    report(f"i3d[{stream}]", "max_rel_features", rel_err(feats, stacks[f"{stream}_feat"]))
    report(f"i3d[{stream}]", "max_rel_logits", rel_err(logits, stacks[f"{stream}_logits"]))
    assert rel_err(feats, stacks[f"{stream}_feat"]) <= REL_TOL
    assert rel_err(logits, stacks[f"{stream}_logits"]) <= REL_TOL


def test_features_and_forward_share_the_one_pass_head(monkeypatch):
    # The parity test runs features_and_logits (one trunk pass per stream); the extractor calls
    # features(). A fake trunk output checks they give the same numbers without another pass.
    torch.manual_seed(0)
    model = load_i3d(standin_state_dict("i3d_rgb"), "rgb")
    pooled = torch.randn(2, 1024, 2, 1, 1)
    monkeypatch.setattr(model, "_pooled", lambda x: pooled)
    feats, logits = model.features_and_logits(None)
    assert torch.equal(feats, pooled.mean((2, 3, 4)))
    assert torch.equal(model.features(None), feats) and torch.equal(model(None), logits)
    assert logits.shape == (2, 400)


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_state_dict_keys_are_the_original_layout(stream):
    manifest = load_manifest(f"i3d_{stream}")
    state = I3D(3 if stream == "rgb" else 2).state_dict()
    assert list(state) == list(manifest)
    assert {k: list(v.shape) for k, v in state.items()} == manifest


def test_rgb_weights_for_the_flow_stream_are_refused():
    with pytest.raises(WeightsError, match=r"3 input channels, the flow stream needs 2 \(rgb weights"):
        load_i3d(standin_state_dict("i3d_rgb"), "flow")


def test_loads_a_saved_original_file(tmp_path):
    state = standin_state_dict("i3d_flow", salt=3)
    torch.save(state, tmp_path / "i3d_flow.pt")
    model = load_i3d(tmp_path / "i3d_flow.pt", "flow")
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_wrong_layout_and_unreadable_files_name_the_file(tmp_path):
    state = standin_state_dict("i3d_rgb")
    renamed = {("module." + k if k.startswith("mixed_5c") else k): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pt")
    layout = r"renamed\.pt does not have the I3D rgb layout \(36 keys missing, 36 unexpected"
    with pytest.raises(WeightsError, match=layout) as err:
        load_i3d(tmp_path / "renamed.pt", "rgb")
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pt is not a readable weights file") as err:
        load_i3d(tmp_path / "junk.pt", "rgb")
    assert "\n" not in str(err.value)


def test_input_scaling_and_layouts(stacks):
    rgb = torch.from_numpy(stacks["rgb_in"][:2])
    x = rgb_to_i3d_input(rgb)
    assert x.shape == (1, 3, 2, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[0, :, 1, 5, 7], 2 * rgb[1, 5, 7].float() / 255 - 1)
    extremes = torch.tensor([[[[0, 255, 0]]]], dtype=torch.uint8)
    assert rgb_to_i3d_input(extremes).flatten().tolist() == [-1, 1, -1]
    flow = torch.from_numpy(stacks["flow_in"][:2].astype(np.int64))
    last = flow_to_i3d_input(flow)
    assert last.shape == (1, 2, 2, 224, 224)
    assert torch.equal(flow_to_i3d_input(flow.permute(0, 3, 1, 2)), last)
    assert torch.equal(last[0, :, 1, 5, 7], 2 * flow[1, 5, 7].float() / 255 - 1)
    with pytest.raises(ValueError):
        flow_to_i3d_input(torch.zeros(2, 3, 224, 224))
