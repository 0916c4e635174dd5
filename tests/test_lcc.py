"""LoCo's LCC loss (davel.detectors.lcc): LOCO.md §5.3 items 1-8."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from davel.detectors.lcc import (
    LCCHead,
    correspondence_loss,
    correspondence_target,
    csm_mean_std,
    csm_std,
    gaussian_prior,
    lcc_loss,
)
from davel.detectors.loco import LoCoDetector

SQRT2 = math.sqrt(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_loco(**kwargs) -> LoCoDetector:
    torch.manual_seed(0)
    return LoCoDetector(input_dim_v=12, input_dim_a=6, embd_dim=16, num_classes=3, head_dim=8,
                        max_seq_len=64, **kwargs)


def _reference_loss(v: torch.Tensor, a: torch.Tensor, target: torch.Tensor,
                    tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 literally: ``v, a [M, P]``, ``target [M, M]``; (v2a, a2v)."""
    v2a = -(F.log_softmax(v @ a.T / tau, dim=1) * target).sum(dim=1).mean()
    a2v = -(F.log_softmax(a @ v.T / tau, dim=1) * target).sum(dim=1).mean()
    return v2a, a2v


# ---- 1. Eq. 4 ---------------------------------------------------------------

def test_gaussian_prior_values():
    g = gaussian_prior(5, 1.0)
    torch.testing.assert_close(g[0, :4], torch.tensor([0.39894228, 0.31069657, 0.14676267,
                                                       0.04204820]), rtol=0, atol=1e-7)
    torch.testing.assert_close(g.sum(dim=1), torch.tensor([0.90576, 1.20915, 1.31386, 1.20915,
                                                           0.90576]), rtol=0, atol=1e-5)
    assert torch.equal(g, g.T)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.0, 10.0])
def test_gaussian_prior_interior_row_sum_is_sqrt2(sigma):
    row = gaussian_prior(256, sigma).double()[128].sum().item()
    # Poisson summation: sum_k exp(-k^2 / (4 s^2)) / (s sqrt(2 pi))
    #                    = sqrt2 (1 + 2 exp(-4 pi^2 s^2) + ...)
    poisson = SQRT2 * (1 + 2 * math.exp(-4 * math.pi ** 2 * sigma ** 2))
    assert row == pytest.approx(poisson, abs=1e-6)
    # LOCO.md's "sqrt2 within 1e-4" holds from sigma = 1; at 0.5 the gap is 1.46e-4
    assert abs(row - SQRT2) < (2e-4 if sigma == 0.5 else 1e-4)


def test_gaussian_prior_mean_row_sums():
    assert gaussian_prior(256, 1.0).sum(dim=1).mean().item() == pytest.approx(1.40825, abs=1e-5)
    assert gaussian_prior(224, 1.0).sum(dim=1).mean().item() == pytest.approx(1.40739, abs=1e-5)


# ---- 2. Eq. 5 and the Table IV variants --------------------------------------

def test_target_is_block_diagonal():
    mask = torch.ones(3, 4, dtype=torch.bool)
    g = correspondence_target(mask, 1.5, "gaussian")
    blocks = g.view(3, 4, 3, 4)
    for b in range(3):
        for c in range(3):
            if b == c:
                torch.testing.assert_close(blocks[b, :, c], gaussian_prior(4, 1.5), rtol=0, atol=0)
            else:
                assert torch.count_nonzero(blocks[b, :, c]) == 0
    assert torch.equal(correspondence_target(mask, 7.0, "fixed_gaussian"),
                       torch.block_diag(*[gaussian_prior(4, 7.0)] * 3))
    assert torch.equal(correspondence_target(mask, 1.0, "diagonal"), torch.eye(12))
    soft = correspondence_target(mask, 1.0, "softened")
    torch.testing.assert_close(soft, 0.8 * torch.eye(12) + 0.2 / 11, rtol=0, atol=1e-7)


def test_target_restricted_to_valid_segments():
    mask = torch.arange(5)[None] < torch.tensor([[5], [3]])
    g = correspondence_target(mask, 1.0, "gaussian").view(2, 5, 2, 5)
    torch.testing.assert_close(g[1, :3, 1, :3], gaussian_prior(3, 1.0), rtol=0, atol=0)
    assert torch.count_nonzero(g[1, 3:]) == 0 and torch.count_nonzero(g[:, :, 1, 3:]) == 0
    soft = correspondence_target(mask, 1.0, "softened")
    assert soft[0, 1].item() == pytest.approx(0.2 / 7)      # 8 valid segments


def test_head_sigma_kinds():
    assert isinstance(LCCHead(16, 8, target="gaussian").sigma, torch.nn.Parameter)
    fixed = LCCHead(16, 8, target="fixed_gaussian")
    assert "sigma" not in dict(fixed.named_parameters()) and "sigma" in fixed.state_dict()
    with pytest.raises(ValueError):
        LCCHead(16, 8, target="laplace")


# ---- 3-6. loss values ---------------------------------------------------------

@pytest.mark.parametrize("tau", [0.07, 0.3])
def test_constant_features_give_log_m_times_mean_row_sum(tau):
    torch.manual_seed(0)
    head = LCCHead(16, 8, tau_init=tau)
    f_v = torch.randn(16, 1).expand(2, 16, 4)
    f_a = torch.randn(16, 1).expand(2, 16, 4)
    loss, diag = lcc_loss(f_v, f_a, torch.ones(2, 1, 4, dtype=torch.bool), head)
    assert math.log(8) * 1.0327740 == pytest.approx(2.1475931, abs=1e-6)
    assert loss.item() == pytest.approx(2.1475931, abs=1e-5)
    assert diag["v2a"].item() == pytest.approx(2.1475931, abs=1e-5)


def test_one_hot_aligned_features():
    e = torch.eye(8).view(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    _, v2a, a2v = correspondence_loss(e, e, mask, 0.1, 1.0)
    g = correspondence_target(mask, 1.0)
    expected = -(g.diagonal().sum() / 0.1 - g.sum() * math.log(math.exp(10) + 7)) / 8
    assert expected.item() == pytest.approx(6.338644, abs=1e-5)
    assert v2a.item() == pytest.approx(6.338644, abs=1e-5)
    assert a2v.item() == pytest.approx(6.338644, abs=1e-5)


def test_equal_streams_give_equal_directions():
    torch.manual_seed(1)
    x = F.normalize(torch.randn(3, 5, 8), dim=-1)
    mask = torch.arange(5)[None] < torch.tensor([[5], [2], [4]])
    _, v2a, a2v = correspondence_loss(x, x, mask, 0.2, 1.3)
    torch.testing.assert_close(v2a, a2v, rtol=0, atol=1e-6)
    head = LCCHead(8, 4)
    head.proj_A.load_state_dict(head.proj_V.state_dict())
    f = torch.randn(3, 8, 5)
    _, diag = lcc_loss(f, f.clone(), mask, head)
    torch.testing.assert_close(diag["v2a"], diag["a2v"], rtol=0, atol=1e-6)
    # different streams do differ (the check above can fail)
    _, diag = lcc_loss(f, torch.randn(3, 8, 5), mask, head)
    assert abs(diag["v2a"].item() - diag["a2v"].item()) > 1e-4


@pytest.mark.parametrize("kind", ["gaussian", "diagonal", "softened"])
def test_masked_loss_equals_loss_on_valid_segments(kind):
    torch.manual_seed(2)
    lengths = [6, 3, 4]
    v = F.normalize(torch.randn(3, 6, 8), dim=-1)
    a = F.normalize(torch.randn(3, 6, 8), dim=-1)
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    sigma = 1.7
    loss, v2a, a2v = correspondence_loss(v, a, mask, 0.1, sigma, kind)

    v_cat = torch.cat([v[b, :n] for b, n in enumerate(lengths)])
    a_cat = torch.cat([a[b, :n] for b, n in enumerate(lengths)])
    m = sum(lengths)
    if kind == "gaussian":
        target = torch.block_diag(*[gaussian_prior(n, sigma) for n in lengths])
    elif kind == "diagonal":
        target = torch.eye(m)
    else:
        target = 0.8 * torch.eye(m) + 0.2 / (m - 1)
    ref_v2a, ref_a2v = _reference_loss(v_cat, a_cat, target, 0.1)
    torch.testing.assert_close(v2a, ref_v2a, rtol=0, atol=1e-5)
    torch.testing.assert_close(a2v, ref_a2v, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, (ref_v2a + ref_a2v) / 2, rtol=0, atol=1e-5)

    # what padded segments hold does not matter
    v2, a2 = v.clone(), a.clone()
    v2[~mask] = 5.0
    a2[~mask] = -3.0
    torch.testing.assert_close(correspondence_loss(v2, a2, mask, 0.1, sigma, kind)[0], loss,
                               rtol=0, atol=1e-6)


def test_unmasked_loss_is_algorithm_1():
    torch.manual_seed(3)
    v = F.normalize(torch.randn(2, 5, 8), dim=-1)
    a = F.normalize(torch.randn(2, 5, 8), dim=-1)
    mask = torch.arange(5)[None] < torch.tensor([[5], [2]])
    loss, _, _ = correspondence_loss(v, a, mask, 0.1, 1.0, mask_padding=False)
    target = correspondence_target(torch.ones(2, 5, dtype=torch.bool), 1.0)
    ref = _reference_loss(v.reshape(10, 8), a.reshape(10, 8), target, 0.1)
    torch.testing.assert_close(loss, sum(ref) / 2, rtol=0, atol=1e-5)
    masked, _, _ = correspondence_loss(v, a, mask, 0.1, 1.0)
    assert abs(masked.item() - loss.item()) > 1e-3


def test_padded_projections_are_zero_without_masking():
    torch.manual_seed(4)
    head = LCCHead(8, 4)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    mask = torch.arange(5)[None] < torch.tensor([[5], [2]])
    v, a = head.project(torch.zeros(2, 8, 5), torch.zeros(2, 8, 5), mask)
    assert torch.count_nonzero(v[1, 2:]) == 0 and torch.count_nonzero(a[1, 2:]) == 0
    assert torch.count_nonzero(v[1, :2]) > 0   # biases make the valid zero rows non-zero


# ---- 7. gradients, tau clamp -----------------------------------------------------

def test_sigma_and_tau_gradients():
    torch.manual_seed(5)
    f_v, f_a = torch.randn(2, 16, 6), torch.randn(2, 16, 6)
    mask = torch.arange(6)[None] < torch.tensor([[6], [4]])
    head = LCCHead(16, 8, target="gaussian")
    loss, _ = lcc_loss(f_v, f_a, mask, head)
    loss.backward()
    for p in (head.sigma, head.tau):
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad.abs() > 1e-6

    fixed = LCCHead(16, 8, target="fixed_gaussian")
    loss, _ = lcc_loss(f_v, f_a, mask, fixed)
    loss.backward()
    assert fixed.sigma.grad is None and not fixed.sigma.requires_grad
    assert fixed.tau.grad is not None


def test_tau_is_clamped_and_sigma_floored():
    head = LCCHead(16, 8)
    f = torch.randn(1, 16, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        head.tau.fill_(5.0)
        head.sigma.fill_(0.001)
    _, diag = lcc_loss(f, f, mask, head)
    assert head.tau.item() == pytest.approx(0.5) and diag["tau"].item() == pytest.approx(0.5)
    assert diag["sigma"].item() == pytest.approx(0.05)
    with torch.no_grad():
        head.tau.fill_(1e-6)
    lcc_loss(f, f, mask, head)
    assert head.tau.item() == pytest.approx(0.001)


def _grad_sum(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_lcc_gradients_reach_only_the_stem_and_head():
    model = _tiny_loco()
    with torch.no_grad():   # non-zero WA so that every pyramid parameter is in play
        for name, p in model.named_parameters():
            if ".wa." in name:
                p.normal_(0, 0.1)
    v, a = torch.randn(2, 12, 64), torch.randn(2, 6, 64)
    mask = torch.arange(64)[None] < torch.tensor([[64], [37]])
    out, losses, _ = model.forward_train(v, a, mask)
    losses["lcc_loss"].backward(retain_graph=True)
    bb = model.backbone
    for stem in (bb.embd_V, bb.embd_A, bb.embd_norm_V, bb.self_att_V, bb.self_att_A):
        assert _grad_sum(stem) > 0
    assert _grad_sum(model.lcc.proj_V) > 0 and _grad_sum(model.lcc.proj_A) > 0
    assert model.lcc.tau.grad is not None and model.lcc.sigma.grad is not None
    for rest in (bb.ori_cross_att_Va, bb.ori_cross_att_Av, bb.cross_att_Va, bb.cross_att_Av,
                 model.decoder, model.cls_head, model.reg_head):
        assert _grad_sum(rest) == 0.0
    # while the detection outputs do reach the pyramid (the check above can fail)
    model.zero_grad()
    sum(x.sum() for x in out.cls_logits).backward()
    assert _grad_sum(bb.cross_att_Va) > 0 and _grad_sum(model.decoder) > 0


# ---- 8. CSM "Mean of std" -----------------------------------------------------------

def test_csm_std_constructed_cases():
    const = torch.randn(1, 8, 1).expand(2, 8, 6)
    torch.testing.assert_close(csm_std(const, const * 2), torch.zeros(2), rtol=0, atol=1e-6)

    u = torch.randn(8)
    alt = torch.stack([u if t % 2 == 0 else -u for t in range(6)], dim=1)[None]   # [1, 8, 6]
    assert csm_std(alt, alt).item() == pytest.approx(1.0, abs=1e-6)
    # population, not sample std (which would be sqrt(36 / 35) = 1.0142)
    assert (alt[0].T @ alt[0] / u.norm() ** 2).flatten().std().item() == pytest.approx(1.0142,
                                                                                     abs=1e-4)
    eye = torch.eye(4)[None]
    assert csm_std(eye, eye).item() == pytest.approx(math.sqrt(3) / 4, abs=1e-7)
    assert math.sqrt(3) / 4 == pytest.approx(0.4330127, abs=1e-7)


def test_csm_std_ignores_padded_steps():
    torch.manual_seed(6)
    f_v, f_a = torch.randn(1, 8, 5), torch.randn(1, 8, 5)
    alone = csm_std(f_v, f_a)
    pad_v = torch.cat([f_v, torch.randn(1, 8, 3)], dim=2)
    pad_a = torch.cat([f_a, torch.randn(1, 8, 3)], dim=2)
    batch_v = torch.cat([pad_v, torch.randn(1, 8, 8)])
    batch_a = torch.cat([pad_a, torch.randn(1, 8, 8)])
    mask = torch.arange(8)[None] < torch.tensor([[5], [8]])
    stds = csm_std(batch_v, batch_a, mask)
    torch.testing.assert_close(stds[0], alone[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(stds[1], csm_std(batch_v[1:], batch_a[1:])[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(csm_mean_std(batch_v, batch_a, mask[:, None]), stds.mean())
    assert abs(csm_std(pad_v, pad_a).item() - alone.item()) > 1e-4   # unmasked would differ
