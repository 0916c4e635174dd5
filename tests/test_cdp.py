"""LoCo's CDP layer (davel.detectors.cdp): LOCO.md §5.3 items 9-15."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from davel.detectors.cdp import CDPAttention, CDPBlock, WindowAdaptation, band_mask, interp_linear, sample_positions
from davel.detectors.layers import MaskedMHCA, TransformerBlock
from davel.detectors.loco import LoCoBackbone, LoCoDetector
from davel.train.losses import LossNormalizer, assign_targets, concat_points, detection_losses

D, H = 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _heads(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.shape[0], H, D // H, -1).transpose(2, 3)


def _randomise_wa(module: torch.nn.Module, std: float = 0.3) -> None:
    """Give the (zero-initialised) WA convs weights that really move the windows."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".wa." in f".{name}" or name.startswith("wa."):
                p.normal_(0, std)


def _mask(lengths: list[int], total: int) -> torch.Tensor:
    return (torch.arange(total)[None] < torch.tensor(lengths)[:, None])[:, None]   # [B, 1, T]


# ---- 9-10. band, interpolation ------------------------------------------------------

def test_band_mask_counts():
    band = band_mask(20, 4)
    counts = band.sum(dim=1).tolist()
    assert counts[4:16] == [9] * 12
    assert counts[:4] == [5, 6, 7, 8] and counts[16:] == [8, 7, 6, 5]
    assert torch.equal(band, band.T) and bool(band.diagonal().all())


def test_interp_linear_on_a_ramp():
    ramp = torch.arange(16, dtype=torch.float32)[:, None]             # K[t] = t
    pos = torch.tensor([0, 2.5, 15, 15.5, -0.5, -1])
    out = interp_linear(ramp, pos)[:, 0]
    assert out.tolist() == [0, 2.5, 15, 7.5, 0, 0]


def test_interp_linear_is_grid_sample_align_corners():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 5)                                       # [B, H, T, C]
    pos = torch.rand(2, 3, 17) * 14 - 2                                # also outside [0, 9]
    ours = interp_linear(x, pos)
    grid_x = pos / 9 * 2 - 1
    grid = torch.stack((grid_x, torch.zeros_like(grid_x)), dim=-1).view(6, 1, 17, 2)
    img = x.reshape(6, 10, 5).transpose(1, 2)[:, :, None, :]           # [N, C, 1, T]
    ref = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(ours, ref[:, :, 0].transpose(1, 2).reshape(2, 3, 17, 5),
                               rtol=0, atol=1e-5)


# ---- 11-12. Window Adaptation -------------------------------------------------------

def test_zero_wa_samples_the_base_windows_exactly():
    torch.manual_seed(1)
    wa = WindowAdaptation(D, H, 8)
    k = torch.randn(2, D, 24)
    scale, offset = wa(k, torch.ones(2, 1, 24, dtype=torch.bool))
    assert scale.shape == offset.shape == (2, H, 3)
    assert torch.count_nonzero(scale) == 0 and torch.count_nonzero(offset) == 0
    pos = sample_positions(scale, offset, 8)
    assert torch.equal(pos, torch.arange(24.0).expand(2, H, 24))
    assert torch.equal(interp_linear(_heads(k), pos), _heads(k))


def test_offset_two_shifts_by_one_window():
    torch.manual_seed(2)
    wa = WindowAdaptation(D, H, 8)
    with torch.no_grad():
        wa.offset.bias.fill_(2.0)
    k = torch.randn(1, D, 32)
    scale, offset = wa(k, torch.ones(1, 1, 32, dtype=torch.bool))
    k_hat = interp_linear(_heads(k), sample_positions(scale, offset, 8))
    assert torch.equal(k_hat[:, :, :24], _heads(k)[:, :, 8:])
    assert torch.count_nonzero(k_hat[:, :, 24:]) == 0


def test_scale_one_doubles_the_window():
    scale, offset = torch.ones(1, 2, 3), torch.zeros(1, 2, 3)
    pos = sample_positions(scale, offset, 8).view(1, 2, 3, 8)
    for w in range(3):
        centre = 8 * w + 3.5
        expected = torch.tensor([centre + 2 * (i - 3.5) for i in range(8)])
        assert torch.equal(pos[0, 1, w], expected)


def test_wa_pooling_is_mask_aware():
    torch.manual_seed(3)
    wa = WindowAdaptation(D, H, 4)
    with torch.no_grad():
        wa.scale.weight.normal_()
    k = torch.randn(1, D, 8)
    valid = _mask([6], 8)
    k_garbage = k.clone()
    k_garbage[:, :, 6:] = 100.0
    s1, _ = wa(k, valid)
    s2, _ = wa(k_garbage, valid)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    # the second window averages its two valid steps
    pooled = F.leaky_relu(k[:, :, 4:6].mean(dim=-1), 0.01)
    torch.testing.assert_close(s1[:, :, 1], wa.scale(pooled[..., None])[..., 0], rtol=0, atol=1e-6)


def _assert_same_attention(ref, other, lengths: list[int]):
    """``other`` gives ``ref``'s output and mask (to 1e-6) on random inputs as long as the
    first of ``lengths``, with those valid lengths: ``(x_kv, x_q, mask, ref's output)``."""
    total = lengths[0]
    x_kv, x_q = torch.randn(len(lengths), D, total), torch.randn(len(lengths), D, total)
    mask = _mask(lengths, total)
    expected, expected_mask = ref(x_kv, x_q, mask)
    out, out_mask = other(x_kv, x_q, mask)
    assert torch.equal(out_mask, expected_mask)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    return x_kv, x_q, mask, expected


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["sliding", "window"])
def test_zero_wa_equals_fixed(stride, mode):
    torch.manual_seed(4)
    fixed = CDPAttention(D, H, stride, stride, window=4, mode=mode, adaptive=False)
    adaptive = CDPAttention(D, H, stride, stride, window=4, mode=mode, adaptive=True)
    missing, unexpected = adaptive.load_state_dict(fixed.state_dict(), strict=False)
    assert sorted(missing) == ["wa.offset.bias", "wa.offset.weight", "wa.scale.bias",
                               "wa.scale.weight"] and not unexpected
    x_kv, x_q, mask, out_f = _assert_same_attention(fixed, adaptive, [40, 27])
    _randomise_wa(adaptive)
    assert (adaptive(x_kv, x_q, mask)[0] - out_f).abs().max() > 1e-3   # WA does act


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("adaptive", [True, False])
def test_one_window_covering_all_equals_global_attention(stride, adaptive):
    torch.manual_seed(5)
    global_attn = MaskedMHCA(D, H, stride, stride)
    cdp = CDPAttention(D, H, stride, stride, window=32, mode="window", adaptive=adaptive)
    cdp.load_state_dict(global_attn.state_dict(), strict=False)
    x_kv, x_q, mask, ref = _assert_same_attention(global_attn, cdp, [24, 13])
    # a local band is not global attention (the check above can fail)
    sliding = CDPAttention(D, H, stride, stride, window=4, adaptive=adaptive)
    sliding.load_state_dict(global_attn.state_dict(), strict=False)
    assert (sliding(x_kv, x_q, mask)[0] - ref).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["sliding", "window"])
def test_fixed_attention_matches_a_naive_loop(mode):
    torch.manual_seed(10)
    attn = CDPAttention(D, H, 1, 1, window=4, mode=mode, adaptive=False)
    x_kv, x_q = torch.randn(1, D, 14), torch.randn(1, D, 14)
    mask = _mask([11], 14)
    out, _ = attn(x_kv, x_q, mask)
    with torch.no_grad():
        q = _heads(attn.query(attn.query_norm(attn.query_conv(x_q, mask)[0])))[0]
        k = _heads(attn.key(attn.key_norm(attn.key_conv(x_kv, mask)[0])))[0]
        v = _heads(attn.value(attn.value_norm(attn.value_conv(x_kv, mask)[0])))[0]
        rows = []
        for t in range(14):
            if mode == "sliding":   # ActionFormer band: W // 2 = 2 each side, 5 keys
                keys = [j for j in range(t - 2, t + 3) if 0 <= j < 11]
            else:                   # own base window only
                keys = [j for j in range(4 * (t // 4), 4 * (t // 4) + 4) if j < 11]
            if not keys:
                rows.append(torch.zeros(H, D // H))
                continue
            w = (q[:, t, None, :] @ k[:, keys].transpose(1, 2))[:, 0] / (D // H) ** 0.5
            rows.append((w.softmax(-1)[:, None, :] @ v[:, keys])[:, 0])
        ref = torch.stack(rows, dim=1)                                  # [H, T, D']
        ref = attn.proj(ref.transpose(1, 2).reshape(1, D, 14)) * mask
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_cdp_block_keeps_transformer_block_keys():
    block, cdp = TransformerBlock(D, H, 2), CDPBlock(D, H, 2, window=8)
    fixed = CDPBlock(D, H, 2, window=8, adaptive=False)
    assert set(fixed.state_dict()) == set(block.state_dict())
    assert set(cdp.state_dict()) - set(block.state_dict()) == {
        "attn.wa.scale.weight", "attn.wa.scale.bias",
        "attn.wa.offset.weight", "attn.wa.offset.bias"}
    # 2 * Conv1d(D, H, 1) per layer: 2 * (512 * 4 + 4) = 4,104 at LoCo's size
    assert sum(p.numel() for p in cdp.attn.wa.parameters()) == 2 * (D * H + H)


# ---- 13. padding invariance, batch independence ----------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["sliding", "window"])
def test_padding_does_not_reach_valid_outputs(stride, mode):
    torch.manual_seed(6)
    block = CDPBlock(D, H, stride, window=4, mode=mode).eval()
    _randomise_wa(block, 1.0)       # windows move far, also into the padding
    x_kv, x_q = torch.randn(2, D, 32), torch.randn(2, D, 32)
    lengths = [32, 19]
    mask = _mask(lengths, 32)
    x_kv[1, :, 19:] = 0.0
    x_q[1, :, 19:] = 0.0
    out, out_mask = block(x_kv, x_q, mask)
    # depthwise convs read one step to the right of the last valid one, as in UnAV
    # (inside the detector that step is always a masked output): change the rest
    g_kv, g_q = x_kv.clone(), x_q.clone()
    g_kv[1, :, 20:] = torch.randn(D, 12) * 50
    g_q[1, :, 20:] = torch.randn(D, 12) * 50
    out_g, _ = block(g_kv, g_q, mask)
    keep = out_mask.expand_as(out)
    torch.testing.assert_close(out_g[keep], out[keep], rtol=0, atol=1e-5)
    assert torch.count_nonzero(out_g[~keep]) == 0
    # batch rows are independent
    alone, _ = block(x_kv[1:], x_q[1:], mask[1:])
    torch.testing.assert_close(alone[0], out[1], rtol=0, atol=1e-5)
    # the comparison is sensitive: garbage inside the valid part does change the outputs
    g_kv[1, :, 5] += 50
    assert (block(g_kv, g_q, mask)[0][keep] - out[keep]).abs().max() > 1e-3


def test_padded_length_does_not_matter():
    torch.manual_seed(7)
    block = CDPBlock(D, H, 2, window=4).eval()
    _randomise_wa(block, 1.0)
    x_kv, x_q = torch.randn(1, D, 26), torch.randn(1, D, 26)
    x_kv[..., 22:] = 0
    x_q[..., 22:] = 0
    short, _ = block(x_kv, x_q, _mask([22], 26))
    long, _ = block(F.pad(x_kv, (0, 30)), F.pad(x_q, (0, 30)), _mask([22], 56))
    torch.testing.assert_close(long[..., :11], short[..., :11], rtol=0, atol=1e-5)


# ---- 14. shapes on every level -------------------------------------------------------

@pytest.mark.parametrize("length", [256, 224])
def test_backbone_levels_shapes_and_masks(length):
    torch.manual_seed(8)
    backbone = LoCoBackbone(12, 6, D, H, 3, 224, window=8).eval()
    _randomise_wa(backbone)
    mask = _mask([length, 150], length)
    with torch.no_grad():
        feats_v, feats_a, masks, (f_v, f_a) = backbone(
            torch.randn(2, 12, length) * mask, torch.randn(2, 6, length) * mask, mask)
    assert f_v.shape == f_a.shape == (2, D, length)
    assert len(feats_v) == len(feats_a) == len(masks) == 6
    for level in range(6):
        t_l = length // 2 ** level
        assert feats_v[level].shape == feats_a[level].shape == (2, D, t_l)
        assert torch.equal(masks[level], mask[:, :, ::2 ** level])
        for x in (feats_v[level], feats_a[level]):
            assert torch.isfinite(x).all()
            assert torch.count_nonzero(x * ~masks[level]) == 0
    if length == 224:   # levels not a multiple of W = 8
        assert [m.shape[-1] for m in masks[3:]] == [28, 14, 7]


def test_strided_block_halves_the_length():
    block = CDPBlock(D, H, 2, window=8)
    out, out_mask = block(torch.randn(1, D, 14), torch.randn(1, D, 14), _mask([11], 14))
    assert out.shape == (1, D, 7) and out_mask.tolist() == [[[True] * 6 + [False]]]


# ---- 15. WA learns from the detection loss ---------------------------------------------

def test_wa_convs_get_gradients_from_zero_init():
    torch.manual_seed(9)
    model = LoCoDetector(input_dim_v=12, input_dim_a=6, embd_dim=D, num_classes=3, head_dim=8,
                         max_seq_len=64, use_lcc=False)
    was = [m for m in model.modules() if isinstance(m, WindowAdaptation)]
    assert len(was) == 12
    assert all(torch.count_nonzero(p) == 0 for wa in was for p in wa.parameters())
    mask = _mask([64, 45], 64)[:, 0]
    out = model(torch.randn(2, 12, 64), torch.randn(2, 6, 64), mask)
    points = concat_points(out.points)
    targets = [assign_targets(points, torch.tensor([[3.0, 30.0], [10.0, 62.0]]),
                              torch.tensor([0, 2]), 3),
               assign_targets(points, torch.tensor([[5.0, 40.0]]), torch.tensor([1]), 3)]
    losses = detection_losses(out, torch.stack([t[0] for t in targets]),
                              torch.stack([t[1] for t in targets]), LossNormalizer())
    losses["final_loss"].backward()
    for wa in was:
        assert wa.scale.weight.grad.abs().sum() > 0
        assert wa.offset.weight.grad.abs().sum() > 0
