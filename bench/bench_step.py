"""Where a training step's time goes, and what torch.compile would change (CE, random batch of the training shapes).

    python bench/bench_step.py --parts                  # torch profiler: matrix products, casts, optimiser, the rest
    python bench/bench_step.py --compile                # eager vs torch.compile: cold cache, warm cache
    python bench/bench_step.py --parts --precision float32

``--parts`` times steps without the profiler first (the profiler's own cost inflates every op), then profiles a few
and splits their time into matrix products (mm/addmm/bmm), dtype casts (copy_), the optimiser's update (the fused
AdamW kernel and the in-place RAdam ops inside ``Ranger.step``) and everything else (element-wise, norms, BN, ...).

``--compile`` runs three child processes one after the other, each building the model and the batch as
bench_train.py does: eager; ``torch.compile(model)`` with an empty inductor cache (cold: the first step compiles);
the same again with the cache the cold run filled (warm). For each: the time to import torch and the project, the
first step, and the median of the following steps. train.py does not compile: docs/TRAINING.md has the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "bench"):  # the project, and step_setup.py beside this file (also when imported)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from utils.openmp_env import configure_openmp_waiting  # noqa: E402 - as train.py: before torch loads OpenMP

configure_openmp_waiting()

CONFIG = str(REPO / "configs/clotho-synthetic/train-vggish-vggsound.json")
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")


def _parser():
    from utils.cli import ArgumentParser, positive_int, thread_count

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", action="store_true", help="split a step's time by kind of work (torch profiler)")
    p.add_argument("--compile", action="store_true", help="eager vs torch.compile (cold and warm cache)")
    p.add_argument("--precision", default="bf16", choices=("float32", "bf16"), help="training precision (default bf16)")
    p.add_argument("--steps", type=positive_int, default=20, help="steps timed after the warm-up (default 20)")
    p.add_argument("--threads", type=thread_count, default=None, help="torch CPU threads (default: all available)")
    p.add_argument("--config", default=CONFIG, help="training config of the model (default CE on the synthetic set)")
    p.add_argument("--one", choices=("eager", "compiled"), help=argparse.SUPPRESS)  # child process
    return p


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.one:
        print(json.dumps(_child(args)))
        return
    if not (args.parts or args.compile):
        args.parts = True
    print(f"CE training step, {args.precision}, batch of the training shapes; load average at start "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    if args.parts:
        _parts(args)
    if args.compile:
        _compare_compile(args)


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _parts(args) -> None:
    from step_setup import build_step
    from torch.profiler import ProfilerActivity, profile

    bench = build_step(args.config, None, "cpu", args.threads, [args.precision])
    for _ in range(5):
        bench.step(args.precision)
    plain = _median([bench.step(args.precision)[0] for _ in range(args.steps)])
    n = 5
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            bench.step(args.precision)
    groups = {"matrix products": 0.0, "casts (copy_)": 0.0, "optimiser update": 0.0, "everything else": 0.0}
    for e in prof.key_averages():
        us = e.self_cpu_time_total
        if e.key in MATMUL:
            groups["matrix products"] += us
        elif e.key == "aten::copy_":
            groups["casts (copy_)"] += us
        elif "adam" in e.key or e.key.startswith("Optimizer.step"):
            groups["optimiser update"] += us
        else:
            groups["everything else"] += us
    total = sum(groups.values())
    opt_inner = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer.step"))
    print(f"step without the profiler: median {plain * 1e3:.1f} ms ({args.steps} steps)")
    print(f"under the profiler (self CPU time of the main thread's ops, per step; {n} steps):")
    for name, us in groups.items():
        print(f"  {name:18s} {us / n / 1e3:7.1f} ms  ({100 * us / total:4.1f} %)")
    print(f"  {'total':18s} {total / n / 1e3:7.1f} ms;  Ranger.step with everything inside it: "
          f"{opt_inner / n / 1e3:.1f} ms")


def _compare_compile(args) -> None:
    cache = tempfile.mkdtemp(prefix="bench-step-inductor-")
    runs = [("eager", "eager", None), ("compiled, cold cache", "compiled", cache),
            ("compiled, warm cache", "compiled", cache)]
    print(f"\neager vs torch.compile(model), {args.precision}, each in its own process (inductor cache {cache}):")
    print(f"{'':22s}{'imports (s)':>12s}{'first step (s)':>16s}{'median step (ms)':>18s}")
    for label, kind, cache_dir in runs:
        env = dict(os.environ)
        if cache_dir:
            env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        cmd = [sys.executable, __file__, "--one", kind, "--precision", args.precision, "--steps", str(args.steps),
               "--config", args.config] + (["--threads", str(args.threads)] if args.threads else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{label}: the child process failed:\n{out.stderr.strip().splitlines()[-1]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:22s}{r['imports_s']:>12.1f}{r['first_step_s']:>16.1f}{r['median_step_ms']:>18.1f}", flush=True)


def _child(args) -> dict:
    import importlib

    import torch

    from step_setup import build_step

    for name in ("model.build", "trainer.optim", "trainer.precision", "trainer.runtime"):
        importlib.import_module(name)  # counted with the imports, as in train.py
    imports = time.perf_counter() - T_START
    wrapper = torch.compile if args.one == "compiled" else None
    bench = build_step(args.config, None, "cpu", args.threads, [args.precision], model_wrapper=wrapper)
    first = bench.step(args.precision)[0]
    for _ in range(3):
        bench.step(args.precision)
    steps = [bench.step(args.precision)[0] for _ in range(args.steps)]
    return {"imports_s": imports, "first_step_s": first, "median_step_ms": 1e3 * _median(steps)}


if __name__ == "__main__":
    from utils.errors import run_cli
    sys.exit(run_cli(main))
