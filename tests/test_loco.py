"""LoCo detector (davel.detectors.loco) and thop-convention counts: LOCO.md §5.3 items 16-18."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from davel.detectors.base import SINGLE_PASS_MAX
from davel.detectors.ccnet import CCNetDetector
from davel.detectors.counting import count_params, count_params_macs
from davel.detectors.loco import LoCoDetector
from davel.detectors.output import DetectorOutput
from davel.detectors.unav import UnAVDetector
from davel.errors import WeightsError

C = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kwargs) -> LoCoDetector:
    torch.manual_seed(0)
    kwargs = {"input_dim_v": 12, "input_dim_a": 6, "embd_dim": 16, "num_classes": C,
              "head_dim": 8, "max_seq_len": 64, **kwargs}
    return LoCoDetector(**kwargs)


def _trained_like(model: LoCoDetector) -> LoCoDetector:
    """Non-zero WA and biases, as after training (fresh ones are all zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".wa." in name:
                p.normal_(0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


def _inputs(length: int, lengths: list[int], seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    v = torch.randn(len(lengths), 12, length, generator=gen) * mask[:, None]
    a = torch.randn(len(lengths), 6, length, generator=gen) * mask[:, None]
    return v, a, mask


def _outputs(out: DetectorOutput) -> list[torch.Tensor]:
    return [*out.cls_logits, *out.offsets]


def _assert_same(out1: DetectorOutput, out2: DetectorOutput, atol: float = 0.0) -> None:
    for x, y in zip(_outputs(out1), _outputs(out2)):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


# ---- 16. forward ------------------------------------------------------------------------

@pytest.mark.parametrize("length", [224, 256])
def test_forward_levels_and_shapes(length):
    model = _trained_like(_tiny(max_seq_len=224))
    assert model.padded_length(length) == length
    v, a, mask = _inputs(length, [length, 100])
    with torch.no_grad():
        out = model(v, a, mask)
    assert isinstance(out, DetectorOutput) and len(out.cls_logits) == 6
    for level in range(6):
        t_l = length // 2 ** level
        assert out.cls_logits[level].shape == (2, t_l, C)
        assert out.offsets[level].shape == (2, t_l, C, 2)
        assert torch.equal(out.masks[level], mask[:, ::2 ** level])
        assert out.points[level].shape == (t_l, 4)
        assert bool((out.offsets[level] >= 0).all())
    assert out.points[5][:, 1:].tolist()[0] == [64, 10000, 32]


def test_eval_output_does_not_involve_lcc(monkeypatch):
    with_lcc = _trained_like(_tiny())
    without = _tiny(use_lcc=False).eval()
    sd = {k: t for k, t in with_lcc.state_dict().items() if not k.startswith("lcc.")}
    without.load_state_dict(sd, strict=True)
    v, a, mask = _inputs(64, [64, 30])

    def refuse(*args, **kwargs):
        raise AssertionError("LCC ran in forward")

    monkeypatch.setattr(with_lcc.lcc, "project", refuse)
    with torch.no_grad():
        _assert_same(with_lcc(v, a, mask), without(v, a, mask))
    with pytest.raises(AssertionError, match="LCC ran"):
        with_lcc.forward_train(v, a, mask)


def test_forward_train_contract():
    model = _tiny(lcc_weight=0.25).train()
    v, a, mask = _inputs(64, [64, 30])
    out, losses, logs = model.forward_train(v, a, mask)
    assert set(losses) == {"lcc_loss"} and set(logs) == {"lcc_loss", "sigma", "tau"}
    assert losses["lcc_loss"].requires_grad
    assert losses["lcc_loss"].item() == pytest.approx(0.25 * logs["lcc_loss"], rel=1e-6)
    assert logs["sigma"] == pytest.approx(1.0) and logs["tau"] == pytest.approx(0.07)
    # the detection output is forward's
    model.eval()
    with torch.no_grad():
        _assert_same(model.forward_train(v, a, mask)[0], model(v, a, mask))
    out, losses, logs = _tiny(use_lcc=False).forward_train(v, a, mask)
    assert losses == {} and logs == {} and len(out.cls_logits) == 6


def test_padding_invariance_and_batch_independence():
    model = _trained_like(_tiny(max_seq_len=128))
    # 29 steps: every level of the 64-step batch holds a padded step (at a level
    # without one, the convs' right edges see the tensor's zero padding instead)
    v, a, mask = _inputs(64, [64, 29])
    with torch.no_grad():
        ref = model(v, a, mask)
        # whatever the padded steps hold
        v_g, a_g = v.clone(), a.clone()
        v_g[1, :, 29:] = 100.0
        a_g[1, :, 29:] = -7.0
        _assert_same(model(v_g, a_g, mask), ref)
        # however far the batch is padded
        longer = model(torch.nn.functional.pad(v, (0, 64)), torch.nn.functional.pad(a, (0, 64)),
                       torch.nn.functional.pad(mask, (0, 64)))
        for level in range(6):
            t_l = 64 // 2 ** level
            valid = ref.masks[level][1]
            for x, y in zip((ref.cls_logits[level], ref.offsets[level]),
                            (longer.cls_logits[level], longer.offsets[level])):
                torch.testing.assert_close(y[1, :t_l][valid], x[1][valid], rtol=0, atol=1e-5)
        # one video alone gives what it gives in the batch
        alone = model(v[1:], a[1:], mask[1:])
        for x, y in zip(_outputs(alone), _outputs(ref)):
            torch.testing.assert_close(x[0], y[1], rtol=0, atol=1e-5)
        # the comparisons are sensitive: a change at a valid step does show
        v_g[1, :, 10] += 5.0
        assert (model(v_g, a_g, mask).cls_logits[0] - ref.cls_logits[0]).abs().max() > 1e-4


def test_fresh_init():
    model = _tiny()
    biases = [m.bias for m in model.modules()
              if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear)) and m.bias is not None]
    cls_bias = model.cls_head.cls_head.conv.bias
    assert all(torch.count_nonzero(b) == 0 for b in biases if b is not cls_bias)
    assert torch.allclose(cls_bias, torch.full((C,), -math.log(99)))
    wa = [p for n, p in model.named_parameters() if ".wa." in n]
    assert len(wa) == 48 and all(torch.count_nonzero(p) == 0 for p in wa)


def test_padded_length_and_single_pass():
    model = _tiny(max_seq_len=224)
    assert [model.padded_length(t) for t in (1, 224, 225, 300, 412)] == [224, 224, 256, 320, 416]
    assert model.max_single_pass() == SINGLE_PASS_MAX == 2048
    assert UnAVDetector(input_dim_v=24, input_dim_a=8, embd_dim=16, head_dim=16, num_classes=5,
                        dependency_dim=4).max_single_pass() == SINGLE_PASS_MAX
    base = _tiny(num_levels=1, attention="global")
    assert base.num_levels == 1 and base.regression_range == ((0, 10000),)
    assert base.padded_length(70) == 70
    with torch.no_grad():
        out = base.eval()(*_inputs(64, [64, 20]))
    assert len(out.cls_logits) == 1 and out.offsets[0].shape == (2, 64, C, 2)


def test_variants_run():
    v, a, mask = _inputs(64, [64, 41])
    for kwargs in ({"attention": "fixed"}, {"attention": "global"}, {"cdp_mode": "window"},
                   {"decoder": "tdm", "dependency_dim": 4}, {"lcc_target": "softened"},
                   {"cdp_window": 4}):
        out, losses, _ = _tiny(**kwargs).forward_train(v, a, mask)
        assert len(out.cls_logits) == 6 and torch.isfinite(losses["lcc_loss"])
    with pytest.raises(ValueError):
        _tiny(attention="deformable")
    with pytest.raises(ValueError):
        _tiny(decoder="detr")


# ---- 17. Table VII counts (thop convention) ------------------------------------------------

ONE_PEACE = {"input_dim_v": 1536, "input_dim_a": 1536, "max_seq_len": 256}
TABLE_VII = {  # row: (constructor kwargs, params M, GMACs)
    "base": ({"num_levels": 1, "attention": "global", "use_lcc": False}, 71.35, 18.26),
    "base+GB": ({"attention": "global", "use_lcc": False}, 102.90, 31.25),
    "base+CDP": ({"attention": "adaptive", "use_lcc": False}, 102.95, 31.25),
    "base+GB+LCC": ({"attention": "global", "use_lcc": True}, 103.68, 31.45),
    "full": ({}, 103.73, 31.45),
}


def _meta_inputs(dim_v: int, dim_a: int, length: int):
    return (torch.empty(1, dim_v, length, device="meta"),
            torch.empty(1, dim_a, length, device="meta"),
            torch.ones(1, length, dtype=torch.bool, device="meta"))


def _count(cls, dims=(1536, 1536), length=256, **kwargs) -> tuple[int, int]:
    with torch.device("meta"):
        model = cls(**kwargs).eval()
    model.to("meta")   # UnAV's positional table is made on the CPU
    return count_params_macs(model, *_meta_inputs(*dims, length))


@pytest.fixture(scope="module")
def loco_counts() -> dict[str, tuple[int, int]]:
    return {row: _count(LoCoDetector, **ONE_PEACE, **kw) for row, (kw, _, _) in TABLE_VII.items()}


def test_counter_pinned_by_unav():
    params, macs = _count(UnAVDetector, **ONE_PEACE)
    assert params == 140_793_900
    assert macs / 1e9 == pytest.approx(60.2838, abs=5e-5)


@pytest.mark.parametrize("row", list(TABLE_VII))
def test_table_vii_rows(loco_counts, row):
    params, macs = loco_counts[row]
    _, table_params, table_gmacs = TABLE_VII[row]
    assert abs(params / 1e6 - table_params) < 0.015
    assert abs(macs / 1e9 - table_gmacs) < 0.015


def test_table_vii_differences(loco_counts):
    # CDP - GB: 12 layers x 2 x Conv1d(512, 4, 1)
    assert loco_counts["base+CDP"][0] - loco_counts["base+GB"][0] == 49_248
    lcc_params = loco_counts["full"][0] - loco_counts["base+CDP"][0]
    lcc_macs = loco_counts["full"][1] - loco_counts["base+CDP"][1]
    assert lcc_params == loco_counts["base+GB+LCC"][0] - loco_counts["base+GB"][0] == 787_968
    assert lcc_macs / 1e9 == pytest.approx(0.2013, abs=5e-5)
    # the 10 strided global blocks
    assert loco_counts["base+GB"][0] - loco_counts["base"][0] == 31_549_440
    with torch.device("meta"):
        assert count_params(LoCoDetector(**ONE_PEACE).lcc) == 787_968


def test_i3d_vggish_counts():
    params, macs = _count(LoCoDetector, dims=(2048, 128), length=224)
    assert params / 1e6 == pytest.approx(102.3610, abs=5e-5)
    assert macs / 1e9 == pytest.approx(27.2097, abs=5e-5)


# ---- 18. checkpoints ------------------------------------------------------------------------

VARIANTS = {
    "adaptive": {},
    "global": {"attention": "global"},
    "fixed": {"attention": "fixed"},
    "no_lcc": {"use_lcc": False},
    "tdm": {"decoder": "tdm", "dependency_dim": 4},
    "base": {"num_levels": 1, "attention": "global", "use_lcc": False},
}


def _hints(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k in LoCoDetector.config_hints}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_from_state_dict_round_trip(variant):
    kwargs = VARIANTS[variant]
    model = _trained_like(_tiny(**kwargs))
    sd = model.state_dict()
    assert LoCoDetector.matches_state_dict(sd)
    assert any(k.startswith("lcc.") for k in sd) == kwargs.get("use_lcc", True)
    rebuilt = LoCoDetector.from_state_dict({f"module.{k}": t for k, t in sd.items()},
                                           max_seq_len=64, **_hints(kwargs))
    assert not rebuilt.training
    assert rebuilt.state_dict().keys() == sd.keys()
    assert all(rebuilt.state_dict()[k] is not None and torch.equal(rebuilt.state_dict()[k], t)
               for k, t in sd.items())
    assert rebuilt.num_levels == model.num_levels and rebuilt.attention == model.attention
    assert rebuilt.backbone.pos_embd.device.type == "cpu"
    assert torch.equal(rebuilt.backbone.pos_embd, model.backbone.pos_embd)
    v, a, mask = _inputs(64, [64, 29])
    with torch.no_grad():
        _assert_same(rebuilt(v, a, mask), model(v, a, mask))


def test_from_state_dict_checks_hints_against_keys():
    adaptive = _tiny().state_dict()
    global_sd = _tiny(attention="global", use_lcc=False).state_dict()
    with pytest.raises(WeightsError, match="Window Adaptation"):
        LoCoDetector.from_state_dict(adaptive, max_seq_len=64, attention="global")
    with pytest.raises(WeightsError, match="Window Adaptation"):
        LoCoDetector.from_state_dict(global_sd, max_seq_len=64, attention="adaptive")
    with pytest.raises(WeightsError, match="LCC"):
        LoCoDetector.from_state_dict(global_sd, max_seq_len=64, use_lcc=True)
    with pytest.raises(WeightsError, match="decoder"):
        LoCoDetector.from_state_dict(adaptive, max_seq_len=64, decoder="tdm")
    assert LoCoDetector.from_state_dict(global_sd, max_seq_len=64).attention == "global"
    with pytest.raises(WeightsError, match="does not match"):
        LoCoDetector.from_state_dict({k: t for k, t in adaptive.items() if "lcc.tau" not in k},
                                     max_seq_len=64)


def test_matches_state_dict_tells_the_three_kinds_apart():
    torch.manual_seed(0)
    unav = UnAVDetector(input_dim_v=12, input_dim_a=6, embd_dim=16, num_classes=C, head_dim=8,
                        dependency_dim=4).state_dict()
    ccnet = CCNetDetector(input_dim_v=12, input_dim_a=6, embd_dim=16, num_classes=C, head_dim=8,
                          mtgc_dim=4, max_seq_len=64).state_dict()
    assert not LoCoDetector.matches_state_dict(unav)
    assert not LoCoDetector.matches_state_dict(ccnet)
    assert not LoCoDetector.matches_state_dict({f"module.{k}": t for k, t in unav.items()})
    for kwargs in VARIANTS.values():
        sd = _tiny(**kwargs).state_dict()
        assert LoCoDetector.matches_state_dict(sd)
        assert LoCoDetector.matches_state_dict({f"module.{k}": t for k, t in sd.items()})
    # the global variant has exactly UnAV's backbone keys: only decoder. / lcc. tell them apart
    loco_global = _tiny(attention="global").state_dict()
    assert ({k for k in loco_global if k.startswith("backbone.")}
            == {k for k in unav if k.startswith("backbone.")})
    with pytest.raises(WeightsError):
        LoCoDetector.from_state_dict(unav)


def test_config_hints_are_constructor_and_loader_arguments():
    required = {"n_head", "max_seq_len", "attention", "cdp_window", "cdp_mode", "decoder",
                "use_lcc", "lcc_weight", "lcc_target", "lcc_mask_padding", "tau_init",
                "sigma_init", "use_abs_pe"}
    assert LoCoDetector.kind == "loco"
    assert required <= set(LoCoDetector.config_hints)
    init = inspect.signature(LoCoDetector.__init__).parameters
    assert all(name in init for name in LoCoDetector.config_hints)
    # the loader takes every hint, and nothing else
    every = {"n_head": 4, "max_seq_len": 64, "use_abs_pe": True,
             **{o.name: o.default for o in LoCoDetector.options}, "cdp_window": 4}
    assert set(every) == set(LoCoDetector.config_hints)
    LoCoDetector.from_state_dict(_tiny(cdp_window=4).state_dict(), **every)
    with pytest.raises(TypeError, match="unexpected hints: not_a_hint"):
        LoCoDetector.from_state_dict(_tiny().state_dict(), max_seq_len=64, not_a_hint=1)
    model = LoCoDetector.from_state_dict(_tiny(cdp_window=4).state_dict(), max_seq_len=64,
                                         cdp_window=4, lcc_weight=0.3, lcc_mask_padding=False)
    assert model.lcc_weight == 0.3 and not model.lcc_mask_padding
    assert model.backbone.ori_cross_att_Va.attn.window == 4
