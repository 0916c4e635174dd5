"""Model, optimiser, schedule and EMA of training (davel.train.optim)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from davel.train import TrainConfig
from davel.train.optim import WarmupCosine, build_model, make_ema, make_optimizer, make_scheduler

from helpers import DIM_AUD, DIM_RGB, TINY


def official_lrs(base, warmup, total, steps, eta_min=1e-8):
    """The repos' chainable LinearWarmupCosineAnnealingLR recurrence, transcribed."""
    lrs, lr = [], 0.0
    for k in range(steps):
        if k == 0:
            lr = 0.0
        elif k < warmup:
            lr = lr + base / (warmup - 1)
        elif k == warmup:
            lr = base
        elif (k - 1 - total) % (2 * (total - warmup)) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / (total - warmup))) / 2
        else:
            lr = ((1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
                  / (1 + math.cos(math.pi * (k - warmup - 1) / (total - warmup))) * (lr - eta_min) + eta_min)
        lrs.append(lr)
    return lrs


def test_scheduler_equals_official_recurrence():
    base, warmup, total = 1e-4, 25, 225  # 5 warm-up + 40 epochs of 5 steps
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = make_scheduler(opt, warmup, total)
    ours = []
    for _ in range(total):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ref = official_lrs(base, warmup, total, total)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    assert ours[0] == 0.0 and ours[warmup - 1] == pytest.approx(base) and ours[-1] < 1e-7
    assert WarmupCosine(0, 10, 1.0)(0) == 1.0  # no warm-up: starts at the peak


def test_optimizer_decays_only_conv_and_linear_weights():
    model = build_model(TrainConfig(model="unav", **TINY), 2 * DIM_RGB, DIM_AUD, 2)
    opt = make_optimizer(model, 1e-4, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    others = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0
    assert decayed | others == set(names.values()) and not decayed & others
    modules = dict(model.named_modules())
    assert decayed == {n for n in names.values() if n.endswith(".weight")
                       and isinstance(modules[n[:-len(".weight")]], (torch.nn.Conv1d, torch.nn.Linear))}
    assert any(n.endswith("drop_path_attn.scale") for n in others)
    assert any(n.endswith("ln11.weight") for n in others) and "reg_head.scale.0.scale" in others


def test_fresh_model_init_and_drop_path_only_in_training():
    model = build_model(TrainConfig(model="unav", **TINY), 2 * DIM_RGB, DIM_AUD, 3, empty_classes=[2])
    bias = model.cls_head.cls_head.conv.bias
    assert bias[0].item() == pytest.approx(-math.log(99)) and bias[2].item() == pytest.approx(-math.log(1e6 - 1))
    assert model.backbone.embd_V[0].conv.bias is None or model.backbone.embd_V[0].conv.bias.abs().sum() == 0
    v, a = torch.randn(2, 2 * DIM_RGB, 32), torch.randn(2, DIM_AUD, 32)
    mask = torch.ones(2, 32, dtype=torch.bool)
    with torch.no_grad():
        for m in model.modules():  # make the residual branches matter
            if hasattr(m, "drop_prob"):
                m.scale.fill_(1.0)
        model.eval()
        e1, e2 = model(v, a, mask).cls_logits[0], model(v, a, mask).cls_logits[0]
        model.train()
        torch.manual_seed(0)
        t1 = model(v, a, mask).cls_logits[0]
        torch.manual_seed(1)
        t2 = model(v, a, mask).cls_logits[0]
    assert torch.equal(e1, e2) and not torch.allclose(t1, t2)


def test_ema_update_rule():
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model, 0.9)
    assert torch.equal(ema.module.weight, model.weight)
    old = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * old + 0.1 * model.weight.detach())
