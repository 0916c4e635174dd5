"""ONE-PEACE video encoder against the original ``OnePeaceViT`` (small size, seeded weights).

The fixture (tests/fixtures/onepeace/video_small.pt, remade by make_video_fixture.py from
a fetched ONE-PEACE) holds the original's state dict in the mmaction layout, one input
and the original's outputs computed in float64.

Kinds (see tests/helpers.py): the encoder against the fixture is float tolerance
(matmuls, softmax, LayerNorms, GELU through BLAS and vectorised libm, in another
memory layout than the original's); key layout, size reading, error messages, crop
offsets and the output sizes of the transform are exact by construction.
"""
import math

import numpy as np
import pytest
import torch

from extractors.onepeace_video import (
    NORM_MEAN,
    NORM_STD,
    OnePeaceVideoEncoder,
    preprocess_frames,
    relative_position_index,
    resized_size,
)
from weights.errors import WeightsError

from helpers import report

pytestmark = pytest.mark.usefixtures("one_thread")

# float64 port vs float64 original: measured 4e-16 of the largest magnitude (a few ulps);
# 1e-12 leaves room for other CPUs and BLAS builds yet catches any change to a constant
# (the mutations tried moved the output by 1e-6 and more: the final LayerNorm's eps at
# 1e-6 instead of 1e-5 moves it by 1.0e-6, which only this float64 comparison sees).
REL_TOL_FP64 = 1e-12
# float32 port vs the float64 original: measured 3.1e-7, the same as the original run in
# float32 against itself in float64 (the fixture's frame_cls_fp32): float32 rounding.
REL_TOL_FP32 = 1e-5


@pytest.fixture(scope="module")
def fixture(fixtures):
    return torch.load(fixtures / "onepeace" / "video_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(fixture):
    return OnePeaceVideoEncoder.from_state_dict(fixture["state_dict"])


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max())


def test_sizes_are_read_from_the_shapes(model, fixture):
    cfg = fixture["config"]
    enc = model.encoder
    assert model.embed_dim == cfg["embed_dim"] and len(enc.layers) == cfg["layers"]
    assert model.num_frames == cfg["num_frames"] and model.image_size == 16 * cfg["bucket_size"]
    layer = enc.layers[0]
    assert layer.self_attn.num_heads == cfg["attention_heads"]
    assert layer.image_ffn[0].wi_0.out_features == cfg["ffn_embed_dim"]
    assert layer.S_Adapter.D_fc1.out_features == int(cfg["embed_dim"] * 0.25)
    assert layer.adapter_scale == cfg["adapter_scale"]
    assert not model.training


@pytest.mark.parametrize("dtype, tol", [(torch.float64, REL_TOL_FP64), (torch.float32, REL_TOL_FP32)])
def test_matches_the_original(fixture, dtype, tol):
    m = OnePeaceVideoEncoder.from_state_dict(fixture["state_dict"]).to(dtype)
    x = fixture["input"].to(dtype)
    with torch.inference_mode():
        frame_cls, features = m.frame_cls(x), m(x)
    assert frame_cls.shape == fixture["frame_cls"].shape == (2, 64, 4, 1, 1)
    assert features.shape == (2, 64) and features.dtype == dtype
    name = f"onepeace_video[{str(dtype).removeprefix('torch.')}]"
    report(name, "max_rel_frame_cls", rel_err(frame_cls, fixture["frame_cls"]))
    report(name, "max_rel_features", rel_err(features, fixture["features"]))
    assert rel_err(frame_cls, fixture["frame_cls"]) <= tol
    assert rel_err(features, fixture["features"]) <= tol


def test_key_layout_is_the_official_one(fixture):
    with torch.device("meta"):
        m = OnePeaceVideoEncoder(embed_dim=64, depth=2, num_heads=4, ffn_dim=128, adapter_dim=16,
                                 num_frames=4, bucket_size=4)
    official = {k.removeprefix("backbone."): list(v.shape) for k, v in fixture["state_dict"].items()}
    assert list(m.state_dict()) == list(official)
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == official


def test_full_size_on_the_meta_device():
    """hidden 1536, 40 layers, 24 heads, GeGLU FFN 6144, adapters 384, 16 frames of 256 px."""
    with torch.device("meta"):
        m = OnePeaceVideoEncoder()
    sd = m.state_dict()
    assert len(m.encoder.layers) == 40 and m.encoder.layers[0].self_attn.head_dim == 64
    assert list(sd["image_adapter.pos_embed"].shape) == [16 * 16 + 1, 1536]
    assert list(sd["image_adapter.rel_pos_table.weight"].shape) == [31 * 31 + 3, 24]
    assert list(sd["image_adapter.temporal_embedding"].shape) == [1, 16, 1536]
    assert list(sd["encoder.layers.0.image_ffn.0.wi_1.weight"].shape) == [6144, 1536]
    assert m.image_size == 256
    n = sum(p.numel() for p in m.parameters())
    assert 1.64e9 < n < 1.68e9, n  # the video README's 1.66 B, ST-adapters included


def test_mmaction_checkpoint_layout_loads_and_cls_head_is_ignored(fixture):
    sd = dict(fixture["state_dict"], **{"cls_head.fc_cls.weight": torch.zeros(400, 64),
                                        "cls_head.fc_cls.bias": torch.zeros(400)})
    m = OnePeaceVideoEncoder.from_state_dict(sd)
    bare = {k.removeprefix("backbone."): v for k, v in fixture["state_dict"].items()}
    m2 = OnePeaceVideoEncoder.from_state_dict(bare)
    for k, v in m.state_dict().items():
        assert v.data_ptr() == bare[k].data_ptr()  # assigned, not copied
        assert m2.state_dict()[k].data_ptr() == v.data_ptr()


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_wrong_or_missing_keys_are_one_line_weights_errors(fixture):
    sd = dict(fixture["state_dict"])
    missing = {k: v for k, v in sd.items() if not k.endswith("layers.1.T_Adapter.D_fc2.bias")}
    with pytest.raises(WeightsError, match=r"ONE-PEACE video layout \(1 keys missing, 0 unexpected; "
                                           r"missing encoder\.layers\.1\.T_Adapter\.D_fc2\.bias\)") as err:
        OnePeaceVideoEncoder.from_state_dict(missing)
    _one_line(err)
    extra = dict(sd, **{"backbone.encoder.layers.0.T_Adapter_in.D_fc1.weight": torch.zeros(16, 64)})
    with pytest.raises(WeightsError, match=r"1 unexpected; unexpected encoder\.layers\.0\.T_Adapter_in") as err:
        OnePeaceVideoEncoder.from_state_dict(extra)
    _one_line(err)
    key = "backbone.encoder.layers.1.gamma_2"
    with pytest.raises(WeightsError, match=r"encoder\.layers\.1\.gamma_2 has shape \[65\]") as err:
        OnePeaceVideoEncoder.from_state_dict(dict(sd, **{key: torch.zeros(65)}))
    _one_line(err)
    no_table = {k: v for k, v in sd.items() if "rel_pos_table" not in k}
    with pytest.raises(WeightsError, match=r"not a ONE-PEACE video backbone \(no image_adapter\.rel_pos_table") \
            as err:
        OnePeaceVideoEncoder.from_state_dict(no_table)
    _one_line(err)
    with pytest.raises(WeightsError, match=r"not a ONE-PEACE video backbone.*first key: conv1\.weight") as err:
        OnePeaceVideoEncoder.from_state_dict({"conv1.weight": torch.zeros(1)})
    _one_line(err)
    bucket = sd["backbone.image_adapter.rp_bucket"].clone()
    bucket[0, 0] = 0
    with pytest.raises(WeightsError, match=r"rp_bucket is not the relative position index of a 4 x 4 grid") as err:
        OnePeaceVideoEncoder.from_state_dict(dict(sd, **{"backbone.image_adapter.rp_bucket": bucket}))
    _one_line(err)


def test_relative_position_index():
    idx = relative_position_index(2)  # 3 x 3 offsets = 9 rows + 3 for the CLS token
    assert idx.tolist() == [[11, 9, 9, 9, 9],
                            [10, 4, 3, 1, 0],
                            [10, 5, 4, 2, 1],
                            [10, 7, 6, 4, 3],
                            [10, 8, 7, 5, 4]]


def test_clip_shape_is_checked(model, fixture):
    x = fixture["input"]
    with pytest.raises(ValueError, match=r"expects \[B, 3, 4, 64, 64\], got \[2, 3, 3, 64, 64\]"):
        model(x[:, :, :3])
    with pytest.raises(ValueError, match=r"got \[2, 3, 4, 48, 48\]"):
        model(x[..., :48, :48])


# ---------------------------------------------------------------- the frame transform


def test_resized_size_rounds_like_mmcv():
    assert resized_size(720, 1280) == (256, 455)
    assert resized_size(480, 270) == (455, 256)
    assert resized_size(100, 178) == (256, 456)  # 455.68: rounded (davel's I3D resize truncates)
    assert resized_size(256, 340) == (256, 340)
    assert resized_size(6, 10, short=4) == (4, 7)


def test_normalisation_numbers():
    frames = torch.tensor([0, 128, 255], dtype=torch.uint8).repeat_interleave(3).view(3, 1, 1, 3)
    frames = frames.expand(3, 4, 4, 3)
    out = preprocess_frames(frames, size=4)
    assert out.shape == (3, 3, 4, 4) and out.dtype == torch.float32
    for i, value in enumerate((0, 128, 255)):
        expected = [(value - m) / s for m, s in zip(NORM_MEAN, NORM_STD)]
        np.testing.assert_allclose(out[i, :, 0, 0].numpy(), expected, rtol=1e-6)
        assert (out[i] == out[i, :, :1, :1]).all()
    assert out[2, 0, 0, 0].item() == pytest.approx((255 - 122.771) / 68.5, rel=1e-6)


def test_centre_crop_without_resize_is_a_copy():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 4, 9, 3), generator=g, dtype=torch.uint8)  # short side = size
    out = preprocess_frames(frames, size=4)
    assert out.shape == (2, 3, 4, 4)
    # mmcv's imnormalize_: subtract the mean, multiply by 1 / std taken in float64
    inv_std = torch.tensor([1 / s for s in np.float64(np.float32(NORM_STD))], dtype=torch.float32)
    mean = torch.tensor(NORM_MEAN)
    expected = (frames[:, :, 2:6].permute(0, 3, 1, 2).float() - mean.view(3, 1, 1)) * inv_std.view(3, 1, 1)
    assert torch.equal(out, expected)  # left = (9 - 4) // 2 = 2
    portrait = preprocess_frames(frames.transpose(1, 2), size=4)
    assert torch.equal(portrait, expected.transpose(2, 3))


def test_resize_is_bilinear_without_antialias():
    # Shrinking by 3 puts every output sample on a source pixel centre (3d + 1): OpenCV's
    # INTER_LINEAR picks those pixels; an antialiasing filter (Pillow) would average.
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (1, 12, 30, 3), generator=g, dtype=torch.uint8)
    out = preprocess_frames(frames, size=4)  # 12 x 30 -> 4 x 10, crop columns 3..6
    picked = frames[:, 1::3, 1::3][:, :, 3:7]
    assert torch.equal(out, preprocess_frames(picked, size=4))
    # Upscaling blends: results are rounded to whole levels, as OpenCV's uint8 output is.
    up = preprocess_frames(frames[:, :3, :5], size=4)
    levels = up * torch.tensor(NORM_STD).view(3, 1, 1) + torch.tensor(NORM_MEAN).view(3, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert not math.isclose(float(levels.std()), 0.0)
    with pytest.raises(ValueError, match=r"expected RGB frames \[N, H, W, 3\]"):
        preprocess_frames(frames[0])
