"""Ranger (RAdam + Lookahead) with decoupled weight decay, and the StepLR schedule (docs/TRAINING.md).

``torch.optim.RAdam(decoupled_weight_decay=True)`` already is the RAdam half of Ranger 9.3.19
(utils/ranger.py of the original), term for term:

* decoupled weight decay ``p <- p - wd·lr·p`` applied before the update, to every parameter with a gradient
  (BN and biases included);
* rectification when rho_t > 5 (Ranger's ``N_sma > N_sma_threshhold=5``); otherwise a bias-corrected momentum step;
* the same eps placement: ``lr · r_t · sqrt(1-b2^t)/(1-b1^t) · m / (sqrt(v) + eps)``.

With betas (0.95, 0.999) both switch to the rectified update at step 6. What torch lacks is Lookahead
(k=6, alpha=0.5, slow weights per parameter, initialised from the weights before the first update); it is added
here. Its slow weights live in the optimizer state, so ``state_dict``/``load_state_dict`` round-trip them.

Speed: on CPU torch's single-tensor RAdam allocates several parameter-sized temporaries per parameter per step
(~0.9 s/step for the 22M-parameter CE model on 2 cores, i.e. most of a training run). ``Ranger.step`` therefore
applies the *same* update (same state layout: ``step``/``exp_avg``/``exp_avg_sq``) in place with one reusable
scratch buffer (``fused=True``, the default); ``fused=False`` calls ``torch.optim.RAdam.step`` itself.
tests/test_optim.py checks the two agree to float rounding over 20 steps.
"""
from __future__ import annotations

import math
import sys
from typing import Iterable

import torch

from utils.errors import UserError


class Ranger(torch.optim.RAdam):
    def __init__(self, params: Iterable, lr: float = 1e-3, alpha: float = 0.5, k: int = 6,
                 betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5, weight_decay: float = 0.0,
                 foreach: bool | None = None, fused: bool = True):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid slow update rate: {alpha}")
        if k < 1:
            raise ValueError(f"invalid lookahead steps: {k}")
        skip_dynamo_import()
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True, foreach=foreach)
        for group in self.param_groups:
            group.setdefault("la_alpha", alpha)
            group.setdefault("la_k", k)
        self.fused = fused
        self.one_kernel = False  # set_one_kernel
        self._scratch: torch.Tensor | None = None

    def set_one_kernel(self, enabled: bool) -> "Ranger":
        """Run the rectified RAdam updates through torch's one-pass fused AdamW kernel (CPU and CUDA).

        The same update with other float rounding (so only the reduced-precision modes use it): with
        ``lr' = lr·r_t``, ``eps' = eps/sqrt(1-b2^t)`` and ``wd' = wd/r_t``, AdamW's
        ``p·(1-lr'·wd') - lr'/(1-b1^t) · m/(sqrt(v)/sqrt(1-b2^t) + eps')`` is exactly RAdam's rectified step
        with decoupled decay. One pass over (p, g, m, v) instead of seven; the state layout is unchanged.
        """
        self.one_kernel = bool(enabled)
        return self

    @torch.no_grad()
    def step(self, closure=None):
        # Lookahead's slow weights start at the weights before the very first update.
        pending = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and "slow_buffer" not in self.state[p]:
                    pending[p] = p.detach().clone()
        if self.fused:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            self._radam_step_inplace()
        else:
            loss = super().step(closure)
        for p, slow in pending.items():
            self.state[p]["slow_buffer"] = slow
        for group in self.param_groups:
            alpha, k = group["la_alpha"], group["la_k"]
            for p in group["params"]:
                state = self.state[p]
                if p.grad is None or "slow_buffer" not in state:
                    continue
                if int(state["step"]) % k == 0:
                    slow = state["slow_buffer"]
                    slow.lerp_(p, alpha)  # slow += alpha * (fast - slow)
                    p.copy_(slow)
        return loss

    def _scratch_like(self, p: torch.Tensor) -> torch.Tensor:
        n = p.numel()
        s = self._scratch
        if s is None or s.numel() < n or s.device != p.device or s.dtype != p.dtype:
            s = torch.empty(n, dtype=p.dtype, device=p.device)
            self._scratch = s
        return s[:n].view_as(p)

    @torch.no_grad()
    def _radam_step_inplace(self) -> None:
        """torch.optim.RAdam's update (decoupled weight decay), in place, with no per-step allocation."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, eps = float(group["lr"]), group["weight_decay"], group["eps"]
            batched: dict[tuple[float, torch.device], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "exp_avg" not in state:  # same initial state as torch.optim.RAdam
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                if self.one_kernel and _rho(beta2, step) > 5.0 and p.dtype == grad.dtype and not grad.is_sparse:
                    batched.setdefault((step, p.device), []).append(p)
                    continue
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if wd != 0:
                    p.mul_(1 - lr * wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                rho_inf = 2 / (1 - beta2) - 1
                rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
                if rho_t > 5.0:
                    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    denom = torch.sqrt(exp_avg_sq, out=self._scratch_like(p)).add_(eps)
                    p.addcdiv_(exp_avg, denom, value=-lr * rect * math.sqrt(bias_correction2) / bias_correction1)
                else:
                    p.add_(exp_avg, alpha=-lr / bias_correction1)
            for (step, _), params in batched.items():
                self._rectified_step_one_kernel(params, step, lr, wd, eps, beta1, beta2)

    def _rectified_step_one_kernel(self, params, step, lr, wd, eps, beta1, beta2) -> None:
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = _rho(beta2, step)
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        bc2_sqrt = math.sqrt(1 - beta2 ** step)
        states = [self.state[p] for p in params]
        steps = [s["step"].to(p.device) for p, s in zip(params, states)]  # read only (CUDA wants them there)
        torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                            [s["exp_avg_sq"] for s in states], [], steps,
                            lr=lr * rect, beta1=beta1, beta2=beta2, weight_decay=wd / rect, eps=eps / bc2_sqrt,
                            amsgrad=False, maximize=False)


# torch.optim.Optimizer methods that import torch._dynamo on their first call (torch._disable_dynamo)
DYNAMO_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def skip_dynamo_import() -> bool:
    """Spare a training process the import of torch._dynamo (~1.1 s on the 2-core CPU here); True when applied.

    torch wraps these Optimizer methods in ``torch._disable_dynamo``, which imports torch._dynamo on the first
    call only to mark the method as "never compile", caching the marked function on it. This toolkit never
    calls torch.compile, so each method is marked as its own plain self instead (the same call, no import).
    Nothing happens when torch._dynamo is already loaded (someone compiles in this process: torch's way stays).
    """
    if "torch._dynamo" in sys.modules:
        return False
    applied = False
    for name in DYNAMO_GUARDED:
        plain = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if callable(plain):
            if getattr(plain, "__dynamo_disable", None) is None:
                setattr(plain, "__dynamo_disable", plain)  # the attribute torch._disable_dynamo caches
            applied = True
    return applied


def _rho(beta2: float, step: float) -> float:
    """RAdam's length of the approximated SMA at ``step``; the update is rectified when it exceeds 5."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * step * (beta2 ** step) / (1 - beta2 ** step)


def build_optimizer(config: dict, params: Iterable) -> torch.optim.Optimizer:
    opt = config.get("optimizer", {})
    kind = opt.get("type", "Ranger")
    args = opt.get("args", {})
    if kind != "Ranger":
        raise UserError(f"config: optimizer.type: only 'Ranger' is supported, got {kind!r}")
    return Ranger(params, lr=float(args.get("lr", 0.01)), weight_decay=float(args.get("weight_decay", 1e-3)))


def build_scheduler(config: dict, optimizer: torch.optim.Optimizer):
    sched = config.get("lr_scheduler", {})
    kind = sched.get("type", "StepLR")
    args = sched.get("args", {})
    if kind != "StepLR":
        raise UserError(f"config: lr_scheduler.type: only 'StepLR' is supported, got {kind!r}")
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(args.get("step_size", 1)),
                                           gamma=float(args.get("gamma", 0.95)))
