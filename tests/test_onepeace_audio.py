"""ONE-PEACE audio encoder: parity with the original code on a small configuration.

Fixture: tests/fixtures/onepeace/audio_small.pt, made by make_audio_fixture.py next to
it (the original OFA-Sys/ONE-PEACE modules, width 48, 2 layers, 4 heads, seeded random
weights, CPU float32).

Kinds (see tests/helpers.py): key selection, layout checks, the token mask and the
relative-position buckets are exact by construction (integers and names; the buckets'
log is compared by hash, see ``token_buckets``). The network and the waveform
LayerNorm are float tolerance: reductions, convolutions and GEMMs round differently
with the CPU, SIMD width and thread count. Measured: the port in float64 against the
original in float32 differs by 8.5e-6 on the tokens (largest magnitude 4.05), 1.4e-6
on CLS and 1.7e-7 on the unit-norm embedding; one thread against two, 1.1e-7 on the
embedding. Tolerances are about ten times those: 1e-4 on tokens and CLS, 2e-6 on the
embedding (float32 ulps at 0.3 are 3e-8).
"""
import hashlib

import numpy as np
import pytest
import torch

from extractors.onepeace_audio import (
    AUDIO_KEY_PREFIXES,
    FULL_SIZE,
    MAX_SAMPLES,
    OnePeaceAudio,
    audio_keys,
    from_state_dict,
    load_onepeace_audio,
    num_tokens,
    prepare_window,
    token_buckets,
    token_padding_mask,
)
from weights.errors import InputError, WeightsError

from helpers import report, ulps

TOKEN_TOL = 1e-4
EMBEDDING_TOL = 2e-6


@pytest.fixture(scope="module")
def ref(fixtures):
    return torch.load(fixtures / "onepeace" / "audio_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(ref):
    return from_state_dict(ref["state_dict"])


def test_fixture_is_small(fixtures):
    assert (fixtures / "onepeace" / "audio_small.pt").stat().st_size < 1_000_000


def test_audio_keys_are_the_ones_the_original_uses(ref):
    # The fixture's state_dict holds what autograd found the original's audio forward using.
    picked = audio_keys(ref["all_keys"])
    assert sorted(picked) == sorted(ref["state_dict"])
    assert all(k.startswith(AUDIO_KEY_PREFIXES) for k in picked)
    left = set(ref["all_keys"]) - set(picked)
    assert {"encoder_wrapper.audio_adapter.rp_bucket", "encoder_wrapper.audio_adapter.mask_embedding",
            "encoder_wrapper.fusion_model.version", "decoder_wrapper.audio_adapter.cls_embedding",
            "encoder_wrapper.fusion_model.layers.0.text_ffn.0.wi_0.weight"} <= left


def test_loads_strictly_with_sizes_from_shapes(ref, model):
    assert set(model.state_dict()) == set(ref["state_dict"])
    adapter = model.encoder_wrapper.audio_adapter
    assert model.embed_dim == 48 and len(model.encoder_wrapper.fusion_model.layers) == 2
    layer = model.encoder_wrapper.fusion_model.layers[0]
    assert layer.self_attn.heads == 4 and layer.audio_ffn[0].wi_0.out_features == 96
    assert [b[0].out_channels for b in adapter.embed_audios[0].conv_layers] == [16] * 7
    pos = adapter.embed_positions.get_submodule("1")[0]
    assert (pos.kernel_size, pos.groups, len(list(adapter.embed_positions.children()))) == ((19,), 16, 5)
    assert adapter.bucket_size == 16 and not model.training
    # the whole checkpoint loads too: the other branches' keys are left out
    full = {k: torch.zeros(1) for k in ref["all_keys"]} | ref["state_dict"]
    torch.testing.assert_close(from_state_dict(full).audio_proj.weight, ref["state_dict"]["audio_proj.weight"])


def test_relative_position_buckets_are_the_originals(ref):
    for size in (16, 512):
        got = token_buckets(size).contiguous().numpy().tobytes()
        assert hashlib.sha256(got).hexdigest() == ref["rp_bucket_sha256"][size], size


def test_padded_batch_matches_original(ref, model, one_thread):
    with torch.no_grad():
        tokens = model.tokens(ref["input"], ref["padding_mask"])
        emb = model(ref["input"], ref["padding_mask"])
    report("onepeace_audio", "max_abs_tokens", (tokens - ref["tokens"]).abs().max())
    report("onepeace_audio", "max_abs_embedding", (emb - ref["embedding"]).abs().max())
    assert (tokens - ref["tokens"]).abs().max() <= TOKEN_TOL
    assert (tokens[:, 0] - ref["cls"]).abs().max() <= TOKEN_TOL
    assert (emb - ref["embedding"]).abs().max() <= EMBEDDING_TOL
    assert (emb.norm(dim=1) - 1).abs().max() <= ulps(1.0)


def test_one_second_windows_match_original(ref, model, one_thread):
    windows = ref["input"][1:, :16000]
    with torch.no_grad():
        emb = model(windows)
        cls = model.tokens(windows, torch.zeros(2, 50, dtype=torch.bool))[:, 0]
    report("onepeace_audio", "max_abs_window_embedding", (emb - ref["windows_embedding"]).abs().max())
    assert (cls - ref["windows_cls"]).abs().max() <= TOKEN_TOL
    assert (emb - ref["windows_embedding"]).abs().max() <= EMBEDDING_TOL
    assert (emb.norm(dim=1) - 1).abs().max() <= ulps(1.0)
    # As in the original, padding is only masked in attention: the convs see it, so a
    # clip padded in a batch does not give its embedding alone.
    assert (ref["embedding"][1:] - ref["windows_embedding"]).abs().max() > 1e-3


def test_prepare_window_is_process_audio(ref):
    for clip, row in zip(ref["clips"], ref["input"]):
        got = prepare_window(clip.numpy())
        assert got.dtype == torch.float32 and len(got) == max(len(clip), 16000)
        assert (got - row[:len(got)]).abs().max() <= ulps(row)
    short = prepare_window(ref["clips"][2].numpy())  # 7000 samples: normalised, then repeated
    assert torch.equal(short[7000:14000], short[:7000]) and torch.equal(short[14000:], short[:2000])
    quiet = ref["clips"][1].numpy().astype(np.float64)  # variance 1.2e-4: the eps 1e-5 shows
    one_s = prepare_window(quiet)
    v = quiet.var()
    assert abs(float(one_s.mean())) <= 1e-6
    assert abs(float(one_s.double().var(unbiased=False)) - v / (v + 1e-5)) <= 1e-5
    # each window on its own: its level only matters through the eps under the variance
    x = ref["clips"][0].numpy()
    v = x.astype(np.float64).var()
    gain = np.sqrt((v + 1e-5) / (v + 1e-7))
    torch.testing.assert_close(prepare_window(10 * x), ref["input"][0] * float(gain), rtol=1e-5, atol=1e-5)
    assert not prepare_window(np.zeros(16000)).any()
    assert len(prepare_window(np.ones(MAX_SAMPLES + 5))) == MAX_SAMPLES
    with pytest.raises(InputError, match="empty"):
        prepare_window(np.zeros(0))
    with pytest.raises(ValueError, match="mono"):
        prepare_window(np.zeros((2, 16000)))


def test_token_counts_and_padding_mask(ref):
    assert [num_tokens(n) for n in (399, 400, 16000, 17600)] == [0, 1, 49, 54]
    lengths = [len(prepare_window(c.numpy())) for c in ref["clips"]]
    assert torch.equal(token_padding_mask(lengths), ref["padding_mask"])


def test_input_length_limits(model):
    with pytest.raises(InputError, match="400 to 327759 samples"):
        model(torch.zeros(1, 399))
    assert num_tokens(327759) == 1023 and num_tokens(327760) == 1024
    with pytest.raises(InputError, match="1024 audio tokens"):  # refused before any work
        model(torch.zeros(1, 327760))
    with pytest.raises(ValueError, match="padding mask"):
        model(torch.zeros(2, 16000), torch.ones(2, 49, dtype=torch.bool))


def _one_line_error(state, match):
    with pytest.raises(WeightsError, match=match) as err:
        from_state_dict(state)
    assert "\n" not in str(err.value)


def test_wrong_checkpoints_are_one_line_weights_errors(ref, tmp_path):
    sd = dict(ref["state_dict"])
    _one_line_error({k: v for k, v in sd.items() if not k.endswith("layers.1.gamma_2")},
                    r"missing encoder_wrapper\.fusion_model\.layers\.1\.gamma_2")
    _one_line_error({k: v for k, v in sd.items() if k != "audio_proj.weight"}, "missing audio_proj.weight")
    _one_line_error(sd | {"encoder_wrapper.fusion_model.layers.0.attn_ln.weight": torch.ones(48)},
                    r"unexpected encoder_wrapper\.fusion_model\.layers\.0\.attn_ln\.weight")
    bad = sd | {"audio_proj.bias": torch.zeros(47)}
    _one_line_error(bad, r"audio_proj\.bias has shape \[47\]")
    _one_line_error({"module." + k: v for k, v in sd.items()}, "no ONE-PEACE audio encoder keys")
    key = "encoder_wrapper.audio_adapter.embed_audios.0.conv_layers.0.0.weight"
    _one_line_error(sd | {key: torch.zeros(16, 1, 9)}, "kernels")
    heads = "encoder_wrapper.audio_adapter.rel_pos_table_list.0.weight"
    _one_line_error(sd | {heads: torch.zeros(34, 5)}, "unexpected shapes")  # 48 wide, 5 heads
    # the older name of the relative position table loads, as the original's upgrade renames it
    old = {k.replace("rel_pos_table_list.0.", "rel_pos_table."): v for k, v in sd.items()}
    torch.save(old, tmp_path / "audio.pt")
    assert torch.equal(load_onepeace_audio(tmp_path / "audio.pt").encoder_wrapper.audio_adapter
                       .rel_pos_table_list[0].weight, sd["encoder_wrapper.audio_adapter.rel_pos_table_list.0.weight"])


def test_full_size_builds_on_meta():
    # 40 layers x 37.78 M (attention 4 D^2, GeGLU FFN 3 D F, norms) + adapter 19.0 M + proj 2.4 M
    with torch.device("meta"):
        m = OnePeaceAudio(**FULL_SIZE)
    n = sum(p.numel() for p in m.parameters())
    assert 1.50e9 < n < 1.56e9, n
    assert m.encoder_wrapper.audio_adapter.rel_pos_table_list[0].weight.shape == (1026, 24)
    assert num_tokens(16000) == 49
