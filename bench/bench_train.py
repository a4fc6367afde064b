"""Benchmark full training runs (20 epochs + test) of each precision mode side by side (CLOTHO-size synthetic set).

    python bench/bench_train.py [--precisions float32,bf16] [--epochs 20] [--threads N] [--step-rounds 4]
    python bench/bench_train.py --epochs 3 --step-rounds 2        # quick iteration
    python bench/bench_train.py --steps-only --device 0           # per-step timings only (no data set needed)

Each precision mode trains in its own child process (so that its peak RSS is its own), one after the other, with
the same config, seed and thread count. Printed per mode: the process wall time (the child process from start to
exit, as ``time python train.py`` sees it: interpreter start, imports, data loading, epochs, test evaluation,
writing; the ratios and the target use it) and the part inside ``fit()``, process CPU time, mean epoch (train +
val + checkpoint), train step, test evaluation time, peak RSS and the test metrics; then the ratios against the
first mode and against the original's figures, which are quoted as measured by the issue author with the original
code on this 2-core CPU (162 s wall, 3.9 GiB peak; CE, seed 0, 20 epochs + test, same synthetic set). Targets:
<= 54 s (3x the original) and <= 2 GB.

``--step-rounds N`` (default 3) first times training steps of every mode back to back in one process, on random
batches of the training shapes (N rounds of 3 steps per mode, interleaved): on a shared, loaded machine these
per-step ratios are the robust number, the absolute times are not. The run folders go to bench/out/saved/
(git-ignored) and are deleted unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "bench"):  # the project, and step_setup.py beside this file (also when imported)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from utils.openmp_env import configure_openmp_waiting  # noqa: E402 - as train.py: before torch loads OpenMP
from step_setup import cpu_seconds  # noqa: E402

configure_openmp_waiting()

ORIGINAL = {"total_s": 162.0, "peak_gib": 3.9}  # the issue author's measurement of the original code (see above)
TARGET_S, TARGET_GB = 54.0, 2.0


def _parser() -> argparse.ArgumentParser:
    from utils.cli import ArgumentParser, nonneg_int, positive_int, thread_count

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/clotho-synthetic/train-vggish-vggsound.json"),
                   help="training config (default: CE on the CLOTHO-size synthetic set, the issue's comparison)")
    p.add_argument("--precisions", default="float32,bf16", help="comma-separated modes to compare (first = baseline)")
    p.add_argument("--epochs", type=positive_int, default=20,
                   help="epochs per run (default 20: the original's figures are for 20; other values are not "
                        "compared with the target)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or a CUDA index")
    p.add_argument("--threads", type=thread_count, default=None, help="torch CPU threads (default: all available)")
    p.add_argument("--custom_args", default=None, help="extra config overrides")
    p.add_argument("--step-rounds", type=nonneg_int, default=3, help="rounds of back-to-back step timings (0: skip)")
    p.add_argument("--steps-only", action="store_true", help="only the back-to-back step timings (no full runs)")
    p.add_argument("--keep", action="store_true", help="keep the run folders (default: delete them afterwards)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: train this precision, print JSON
    return p


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    if args.one:
        print(json.dumps(_train_one(args, args.one)))
        return
    modes = [m.strip() for m in args.precisions.split(",") if m.strip()]
    from trainer.precision import PRECISIONS
    bad = [m for m in modes if m not in PRECISIONS]
    if bad or not modes:
        from utils.errors import UserError
        raise UserError(f"--precisions {args.precisions}: {', '.join(bad) or 'none given'}: expected some of "
                        f"{', '.join(PRECISIONS)}")
    print(f"config {args.config}, {args.epochs} epochs + test, device {args.device}, threads "
          f"{args.threads or 'all'}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    if args.step_rounds > 0 or args.steps_only:
        _step_bench(modes, args)
    if args.steps_only:
        return
    from data.clotho import ensure_data
    from utils.config import load_config

    ensure_data(load_config(args.config, args.custom_args))  # generate the synthetic set first if missing (not timed)
    results = {}
    for mode in modes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", mode, "--config", args.config,
               "--epochs", str(args.epochs), "--device", args.device]
        for flag, value in (("--threads", args.threads), ("--custom_args", args.custom_args)):
            if value is not None:
                cmd += [flag, str(value)]
        t0 = time.perf_counter()  # the whole child process, as `time python train.py` sees it
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        process_s = time.perf_counter() - t0
        results[mode] = json.loads(out.strip().splitlines()[-1])
        results[mode]["process_s"] = process_s
        if not args.keep:
            shutil.rmtree(results[mode]["run"], ignore_errors=True)
        print(f"  {mode}: {process_s:.1f} s process, {results[mode]['total_s']:.1f} s in fit()", flush=True)
    _report(modes, results, args)


# ---------------------------------------------------------------------------------------------- one full run
def _train_one(args, precision: str) -> dict:
    import torch

    from data.clotho import ensure_data
    from trainer.runtime import resolve_device
    from trainer.trainer import fit
    from utils.config import load_config

    out = REPO / "bench" / "out" / "saved"
    custom = f"trainer.save_dir={out},trainer.epochs={args.epochs},trainer.precision={precision}"
    if args.custom_args:
        custom += "," + args.custom_args
    config = load_config(args.config, custom)
    device = resolve_device(args.device)
    ensure_data(config)  # generate the synthetic set first if missing (not timed)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    run = fit(config, args.config, device, quiet=True, threads=args.threads)
    total, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    m = json.loads((run / "metrics.json").read_text())
    tm, hist = m["timings"], m["history"]
    steps = sum(h["steps"] for h in hist)
    res = {
        "precision": precision, "total_s": total, "cpu_s": cpu, "threads": torch.get_num_threads(),
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
        "data_load_s": tm["data_load_s"], "epoch_s": sum(h["epoch_s"] for h in hist) / len(hist),
        "train_s": tm["train_s"] / len(hist), "val_s": tm["val_s"] / len(hist),
        "checkpoint_s": tm["checkpoint_s"] / len(hist), "step_s": tm["train_s"] / steps,
        "steps_per_s": steps / tm["train_s"], "test_eval_s": tm["eval_s"]["test"],
        "best_epoch": m["best_epoch"], "test": m["test"], "numerics": m.get("numerics"),
    }
    res["run"] = str(run)
    return res




# ---------------------------------------------------------------------------------------------- per-step timings
def _step_bench(modes: list[str], args) -> None:
    """Training steps of each mode back to back (same model, same random batch of the training shapes)."""
    import torch

    from step_setup import build_step

    bench = build_step(args.config, args.custom_args, args.device, args.threads, modes)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(max(1, args.step_rounds)):
        for mode in modes:
            bench.step(mode)  # warm-up after the switch
            times[mode] += [bench.step(mode) for _ in range(3)]
    base = _median([w for w, _ in times[modes[0]]])
    print(f"training steps back to back (batch {bench.batch_size}, {args.step_rounds} rounds x 3 steps per mode, "
          f"{torch.get_num_threads()} threads):")
    for mode in modes:
        wall, cpu = _median([w for w, _ in times[mode]]), _median([c for _, c in times[mode]])
        print(f"  {mode:8s} median {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU   "
              f"x{base / wall:.2f} vs {modes[0]}", flush=True)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


# ---------------------------------------------------------------------------------------------- report
def _report(modes: list[str], results: dict, args) -> None:
    base = results[modes[0]]
    print(f"\nfull runs: {args.epochs} epochs + test, one child process per mode (wall / CPU: user+sys of all threads)")
    head = f"{'':22s}" + "".join(f"{m:>14s}" for m in modes) + f"{'original':>14s}"
    print(head)
    rows = [
        ("process wall (s)", "process_s", "{:.1f}", ORIGINAL["total_s"]),
        ("  in fit() (s)", "total_s", "{:.1f}", None),
        ("process CPU (s)", "cpu_s", "{:.1f}", None),
        ("peak RSS (GiB)", "peak_gib", "{:.2f}", ORIGINAL["peak_gib"]),
        ("data load (s)", "data_load_s", "{:.1f}", None),
        ("epoch mean (s)", "epoch_s", "{:.2f}", None),
        ("  train (s)", "train_s", "{:.2f}", None),
        ("  val (s)", "val_s", "{:.2f}", None),
        ("  checkpoint (s)", "checkpoint_s", "{:.2f}", None),
        ("train step (ms)", "step_s", "{:.0f}", None),
        ("test eval (s)", "test_eval_s", "{:.2f}", None),
    ]
    for label, key, fmt, orig in rows:
        scale = 1000 if key == "step_s" else 1
        cells = "".join(f"{fmt.format(results[m][key] * scale):>14s}" for m in modes)
        print(f"{label:22s}{cells}{(fmt.format(orig) if orig is not None else '-'):>14s}")
    for d in ("t2a", "a2t"):
        cells = "".join(f"{results[m]['test'][d]['R1']:>6.2f}/{results[m]['test'][d]['R10']:<7.2f}" for m in modes)
        print(f"{'test ' + d + ' R1/R10':22s}{cells}")
    print()
    scale = 20 / args.epochs  # ratios against the original only mean something for its 20 epochs
    for m in modes:
        r = results[m]
        vs_orig = ORIGINAL["total_s"] / r["process_s"]
        note = "" if args.epochs == 20 else f" (only {args.epochs} epochs: not comparable, x{scale:.1f} work left out)"
        print(f"{m:8s} x{base['process_s'] / r['process_s']:.2f} wall vs {modes[0]}, "
              f"x{base['step_s'] / r['step_s']:.2f} per train step; x{vs_orig:.2f} vs the original's 162 s{note}; "
              f"target <= {TARGET_S:.0f} s: "
              f"{('met' if r['process_s'] <= TARGET_S else 'not met') if args.epochs == 20 else 'not judged'}; "
              f"peak {r['peak_gib'] * 2**30 / 1e9:.2f} GB (target <= {TARGET_GB:.0f} GB)")


if __name__ == "__main__":
    from utils.errors import run_cli

    sys.exit(run_cli(main))
