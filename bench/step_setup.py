"""One CE training step on a random batch of the training shapes, as bench_train.py and bench_step.py time it.

The model, optimiser and loss are built from the config exactly as ``train.py`` builds them; the batch is random
(no data set needed) and stored the way the trainer stores features for each precision mode (bf16: a bfloat16 copy).
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class StepBench:
    model: object
    optimizer: object
    batch_size: int
    step: Callable[[str], tuple[float, float]]  # step(mode) -> (wall, process CPU) s of forward + backward + update


def build_step(config_path: str, custom_args: str | None, device_spec: str, threads: int | None,
               modes: list[str], model_wrapper: Callable | None = None) -> StepBench:
    """``model_wrapper(model)`` (e.g. ``torch.compile``) wraps the model used for the forward pass."""
    import torch

    from data.clotho import EXPERT_DIMS, TEXT_DIMS
    from model.build import build_model
    from model.loss import MaxMarginRankingLoss
    from trainer.export import TensorSplit
    from trainer.optim import build_optimizer
    from trainer.precision import autocast, prepare_model, prepare_optimizer, store_features
    from trainer.runtime import configure_torch, resolve_device
    from utils.config import load_config

    config = load_config(config_path, custom_args)
    device = resolve_device(device_spec)
    configure_torch(device, threads)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    optimizer = build_optimizer(config, model.parameters())
    criterion = MaxMarginRankingLoss()
    forward = model_wrapper(model) if model_wrapper else model
    a = config["data_loader"]["args"]
    B, T = int(a["batch_size"]), a["max_tokens"]
    g = torch.Generator().manual_seed(0)
    experts = {m: torch.randn(B, T[m], EXPERT_DIMS[m], generator=g).to(device) for m in model.modalities}
    ind = {m: torch.ones(B, dtype=torch.bool, device=device) for m in model.modalities}
    text = torch.randn(B, 1, T["text"], TEXT_DIMS[config["experts"]["text_feat"]], generator=g).to(device)
    lens = torch.full((B, 1), T["text"], device=device)
    batch = TensorSplit("bench", [str(i) for i in range(B)], [], experts, ind, text, lens)
    inputs = {mode: store_features(batch, mode) for mode in modes}

    def step(mode: str) -> tuple[float, float]:
        prepare_model(model, mode)
        prepare_optimizer(optimizer, mode)
        mode_experts, mode_text = inputs[mode].experts, inputs[mode].text
        c0, t0 = cpu_seconds(), time.perf_counter()
        with autocast(mode, device):
            sims = forward(mode_experts, ind, mode_text, lens)
        criterion(sims).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, cpu_seconds() - c0

    return StepBench(model, optimizer, B, step)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from utils.errors import UserError, run_cli

    def _not_a_command(argv=None):
        raise UserError("bench/step_setup.py is the shared setup of bench_train.py and bench_step.py, not a command "
                        "(python bench/bench_step.py --help)")

    sys.exit(run_cli(_not_a_command))
