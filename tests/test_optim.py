"""Ranger = RAdam (decoupled weight decay) + Lookahead; StepLR; state_dict round trip."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from trainer.optim import Ranger, build_optimizer, build_scheduler


def test_decoupled_weight_decay_on_a_toy_param():
    lr, wd = 0.01, 1e-3
    p = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = Ranger([p], lr=lr, weight_decay=wd)
    p.grad = torch.zeros(2)  # zero gradient: only the decay moves the weight
    opt.step()
    expected = torch.tensor([2.0, -4.0]) * (1 - wd * lr)
    torch.testing.assert_close(p.detach(), expected)


def test_first_steps_are_bias_corrected_momentum_then_rectified():
    lr, b1, b2 = 0.01, 0.95, 0.999
    p = torch.nn.Parameter(torch.zeros(1))
    opt = Ranger([p], lr=lr, weight_decay=0.0, k=1000)
    g = 0.5
    m = v = 0.0
    x = 0.0
    for t in range(1, 8):
        p.grad = torch.tensor([g])
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho > 5:  # Ranger's N_sma > 5: first true at t = 6
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            x -= lr * r * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (math.sqrt(v) + 1e-5)
        else:
            x -= lr * m / (1 - b1 ** t)
        assert (rho > 5) == (t >= 6)
        assert float(p.detach()) == pytest.approx(x, rel=1e-5)


def test_lookahead_every_k_steps():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = Ranger([p], lr=0.1, weight_decay=0.0, k=2, alpha=0.5)
    ref = torch.optim.RAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.1, betas=(0.95, 0.999), eps=1e-5)
    q = ref.param_groups[0]["params"][0]
    for step in range(1, 4):  # a sync at step 2 (and 4)
        p.grad = torch.ones(1)
        q.grad = torch.ones(1)
        opt.step()
        ref.step()
        if step == 2:  # slow weights start at 0: p <- 0 + 0.5 * (fast - 0)
            assert float(p.detach()) == pytest.approx(0.5 * float(q.detach()), rel=1e-6)
            with torch.no_grad():
                q.copy_(p)
        else:
            assert float(p.detach()) == pytest.approx(float(q.detach()), rel=1e-6)


def _toy_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 1))


def _train(model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_inplace_update_matches_torch_radam_plus_lookahead():
    a, b = _toy_model(), _toy_model()
    fused = Ranger(a.parameters(), lr=0.01, weight_decay=1e-3, fused=True)
    torch_impl = Ranger(b.parameters(), lr=0.01, weight_decay=1e-3, fused=False)
    _train(a, fused, 20)
    _train(b, torch_impl, 20)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_resumes_exactly():
    cfg = {"optimizer": {"type": "Ranger", "args": {"lr": 0.01, "weight_decay": 1e-3}},
           "lr_scheduler": {"type": "StepLR", "args": {"step_size": 1, "gamma": 0.95}}}
    full = _toy_model()
    opt = build_optimizer(cfg, full.parameters())
    sched = build_scheduler(cfg, opt)
    _train(full, opt, 9)  # 9 steps: crosses a lookahead sync (6) and the rectification switch
    sched.step()
    snap_model = copy.deepcopy(full.state_dict())
    snap_opt, snap_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    assert any("slow_buffer" in s for s in snap_opt["state"].values())
    _train(full, opt, 7, seed=2)

    resumed = _toy_model(seed=5)
    resumed.load_state_dict(snap_model)
    opt2 = build_optimizer(cfg, resumed.parameters())
    sched2 = build_scheduler(cfg, opt2)
    opt2.load_state_dict(snap_opt)
    sched2.load_state_dict(snap_sched)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01 * 0.95)
    _train(resumed, opt2, 7, seed=2)
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(pa, pb)


def test_steplr_decays_per_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = Ranger([p], lr=0.01)
    sched = build_scheduler({"lr_scheduler": {"type": "StepLR", "args": {"step_size": 1, "gamma": 0.95}}}, opt)
    for e in range(1, 4):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.95 ** (e - 1))
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()


def test_ranger_does_not_import_torch_dynamo():
    """Optimizer methods wrapped in torch._disable_dynamo would import torch._dynamo (~1.1 s) on first use."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch; from trainer.optim import Ranger; m = torch.nn.Linear(3, 2); o = Ranger(m.parameters());"
            "m(torch.ones(4, 3)).sum().backward(); o.step(); o.zero_grad(); o.load_state_dict(o.state_dict());"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["False"]
    code = ("import sys, torch, torch._dynamo; from trainer.optim import skip_dynamo_import;"
            "p = torch.optim.Optimizer.zero_grad.__wrapped__; print(skip_dynamo_import(), hasattr(p, '__dynamo_disable'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]  # with torch._dynamo loaded (someone compiles), torch's own way is kept


def test_documented_defaults():
    """Ranger 9.3.19 as docs/TRAINING.md: Lookahead k=6, alpha=0.5; betas (0.95, 0.999); eps 1e-5; the config's
    lr / weight decay reach the groups."""
    opt = build_optimizer({"optimizer": {"type": "Ranger", "args": {"lr": 0.02, "weight_decay": 2e-3}}},
                          [torch.nn.Parameter(torch.zeros(1))])
    g = opt.param_groups[0]
    assert (g["la_k"], g["la_alpha"], g["betas"], g["eps"]) == (6, 0.5, (0.95, 0.999), 1e-5)
    assert (g["lr"], g["weight_decay"], g["decoupled_weight_decay"]) == (0.02, 2e-3, True)


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_lookahead_interpolates_with_alpha(alpha):
    """At the k-th step: p <- slow + alpha (fast - slow), slow = the weights before the first update."""
    p = torch.nn.Parameter(torch.full((1,), 3.0))
    opt = Ranger([p], lr=0.1, weight_decay=0.0, k=3, alpha=alpha)
    q = torch.nn.Parameter(torch.full((1,), 3.0))
    ref = torch.optim.RAdam([q], lr=0.1, betas=(0.95, 0.999), eps=1e-5)
    for _ in range(3):
        p.grad, q.grad = torch.ones(1), torch.ones(1)
        opt.step()
        ref.step()
    assert float(p.detach()) == pytest.approx(3.0 + alpha * (float(q.detach()) - 3.0), rel=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_parameters_of_several_dtypes_step_like_each_alone(fused):
    """The in-place path's scratch buffer is reused across parameters: a float32 and a float64 parameter in one
    optimizer update exactly as each does in an optimizer of its own."""
    torch.manual_seed(0)
    a32, a64 = torch.nn.Parameter(torch.randn(50)), torch.nn.Parameter(torch.randn(40, dtype=torch.float64))
    b32, b64 = (torch.nn.Parameter(t.detach().clone()) for t in (a32, a64))
    both = Ranger([a32, a64], lr=0.01, weight_decay=1e-3, fused=fused)  # the float32 one first, and larger
    alone = [Ranger([b], lr=0.01, weight_decay=1e-3, fused=fused) for b in (b32, b64)]
    for _ in range(8):  # past the rectification switch (step 6)
        for x, y in ((a64, b64), (a32, b32)):
            x.grad = torch.randn_like(x)
            y.grad = x.grad.clone()
        both.step()
        for o in alone:
            o.step()
    assert torch.equal(a64, b64) and torch.equal(a32, b32)


def test_one_kernel_matches_the_in_place_update_where_eps_matters():
    """Gradients of size ~eps: the one-kernel path's eps' = eps / sqrt(1 - b2^t) must reproduce RAdam's
    sqrt(v / (1 - b2^t)) + eps placement (unit-size gradients, as in test_precision, cannot see eps)."""
    torch.manual_seed(1)
    ps = [torch.nn.Parameter(torch.randn(64, 8)), torch.nn.Parameter(torch.randn(8))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    start = [p.detach().clone() for p in ps]
    a = Ranger(ps, lr=0.01, weight_decay=1e-3)
    b = Ranger(qs, lr=0.01, weight_decay=1e-3).set_one_kernel(True)
    for _ in range(10):
        for p, q in zip(ps, qs):
            g = 1e-5 * torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q, s in zip(ps, qs, start):
        moved = (p.detach() - s).abs().max()
        assert float(moved) > 1e-5 and float((p - q).detach().abs().max()) < 1e-3 * float(moved)
