"""Benchmark a full training run (20 epochs + test evaluation) on the CLOTHO-size synthetic set.

    python bench/bench_train.py [--config configs/clotho-synthetic/train-vggish-vggsound.json] [--epochs 20]
                                [--device cpu] [--threads N]

Prints data-load time, mean epoch time (train + val + checkpoint), train steps/s, test-evaluation time, total
time for the epochs + test, and peak RSS (resource.getrusage). Targets on the 2-core CPU box: CE 20 epochs + test
<= 80 s, peak RSS <= 2 GB. The run folder goes to bench/out/saved/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: before torch loads OpenMP
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
    from utils.cli import ArgumentParser, positive_int

    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/clotho-synthetic/train-vggish-vggsound.json"))
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: all available)")
    p.add_argument("--custom_args", default=None, help="extra config overrides")
    p.add_argument("--keep", action="store_true", help="keep the run folder (default: delete it afterwards)")
    args = p.parse_args(argv)

    import shutil

    from trainer.trainer import fit, resolve_device
    from utils.config import load_config

    out = REPO / "bench" / "out" / "saved"
    custom = f"trainer.save_dir={out},trainer.epochs={args.epochs}"
    if args.custom_args:
        custom += "," + args.custom_args
    config = load_config(args.config, custom)
    device = resolve_device(args.device)

    from data.clotho import ensure_data
    ensure_data(config)  # generate the synthetic set first if missing (not timed)
    t1 = time.perf_counter()
    run = fit(config, args.config, device, quiet=True, threads=args.threads)  # loads train+val, later test
    total = time.perf_counter() - t1
    m = json.loads((run / "metrics.json").read_text())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux

    tm = m["timings"]
    steps = m["history"][0]["steps"]
    epoch_s = [h["epoch_s"] for h in m["history"]]
    import torch
    print(f"config            {args.config}")
    print(f"device            {device} (torch threads {torch.get_num_threads()})")
    print(f"params            {m['params']:,}")
    print(f"data load         {tm['data_load_s']:.1f} s (train+val before training, test after; included in total)")
    print(f"epoch (train+val) mean {sum(epoch_s) / len(epoch_s):.2f} s, min {min(epoch_s):.2f}, max {max(epoch_s):.2f}"
          f"  (train {tm['train_s'] / len(epoch_s):.2f} + val {tm['val_s'] / len(epoch_s):.2f}"
          f" + checkpoint {tm['checkpoint_s'] / len(epoch_s):.2f})")
    print(f"train steps/s     {sum(h['steps'] for h in m['history']) / tm['train_s']:.2f} ({steps} steps/epoch)")
    print(f"test evaluation   {tm['eval_s']['test']:.2f} s  (all dumps: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in tm["eval_s"].items()) + ")")
    print(f"total             {total:.1f} s for {args.epochs} epochs + test (target <= 80 s for CE on 2 CPU cores)")
    print(f"peak RSS          {peak_gb:.2f} GB (target <= 2 GB)")
    print(f"best epoch        {m['best_epoch']}; test t2a R1 {m['test']['t2a']['R1']:.2f} "
          f"R10 {m['test']['t2a']['R10']:.2f} MedR {m['test']['t2a']['MedR']:.1f}")
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    from utils.errors import run_cli

    sys.exit(run_cli(main))
