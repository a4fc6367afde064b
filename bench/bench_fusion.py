"""Benchmark of fusion + metrics: ours vs the fork's way (argsort-of-argsort, apply_along_axis) vs ranx.

    .venv/bin/python bench/bench_fusion.py [--large 50000x10000] [--no-ranx]
    .venv/bin/python bench/bench_fusion.py --skip-clotho --large 100000x20000 --tmp /work/tmp   # ~8 GB on disk

Needs requirements/requirements-bench.txt (ranx) for the ranx column. Every comparison is measured side by
side in this one run (best of --repeat), and every pair of outputs is checked for identical rankings.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion.registry import fuse  # noqa: E402
from retrieval.metrics import clip_major_gt_cols, gt_ranks_a2t, gt_ranks_t2a, metrics_from_ranks  # noqa: E402


def large_shape(text: str) -> tuple[int, int] | None:
    """``--large ROWSxCOLS`` (rows a multiple of cols: K captions per clip) or ``none``."""
    from utils.cli import int_list

    if text == "none":
        return None
    rows, cols = int_list(1, sep="x", length=2)(text)
    if rows % cols:
        raise argparse.ArgumentTypeError(f"{text}: rows must be a multiple of columns (K caption rows per clip)")
    return rows, cols


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def make_sims(n, k, seed=0, out=None):
    rng = np.random.default_rng(seed)
    sims = out if out is not None else np.empty((n * k, n), dtype=np.float32)
    step = max(1, 2**26 // (n * 4))
    for start in range(0, n * k, step):
        stop = min(start + step, n * k)
        block = rng.standard_normal((stop - start, n), dtype=np.float32)
        block[np.arange(stop - start), np.arange(start, stop) // k] += 2.0
        sims[start:stop] = block
    return sims


# ----- the fork's way ---------------------------------------------------------------------------------------
def fork_rank_rows(sims):
    return np.apply_along_axis(lambda row: np.argsort(np.argsort(-row)), 1, sims) + 1


def fork_rrf(sims, k):
    return (1.0 / (fork_rank_rows(sims) + 60)).reshape(-1, k, sims.shape[1]).sum(1)


def fork_borda(sims, k):
    return (sims.shape[1] + 1 - fork_rank_rows(sims)).reshape(-1, k, sims.shape[1]).sum(1)


def fork_isr(sims, k):
    return (1.0 / fork_rank_rows(sims) ** 2).reshape(-1, k, sims.shape[1]).sum(1)


def fork_reduce(how):
    return lambda sims, k: getattr(np, how)(np.asarray(sims, dtype=np.float64).reshape(-1, k, sims.shape[1]), axis=1)


def argsort_gt_ranks(sims, gt):
    """Metric reference: rank of the GT column from a full argsort-of-argsort of every row."""
    return np.argsort(np.argsort(-sims, axis=1), axis=1)[np.arange(sims.shape[0]), gt].astype(np.float64)


def same_ranking(a, b, top=10):
    """Identical top-``top`` orderings of every row (tie-free data)."""
    ta = np.argsort(-a, axis=1, kind="stable")[:, :top]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :top]
    return bool(np.array_equal(ta, tb))


# ----- ranx ---------------------------------------------------------------------------------------------------
def ranx_fuse(sims, k, method):
    from ranx import Run, fuse as rfuse

    n_q, n = sims.shape[0] // k, sims.shape[1]
    docs = [f"d{j}" for j in range(n)]
    runs = []
    for c in range(k):
        rows = sims[c::k]
        runs.append(Run({f"q{i}": dict(zip(docs, rows[i].tolist())) for i in range(n_q)}, name=f"cap{c}"))
    fused = rfuse(runs, norm=None, method=method)
    out = np.full((n_q, n), -np.inf)
    col = {d: j for j, d in enumerate(docs)}
    for i in range(n_q):
        for d, s in fused[f"q{i}"].items():
            out[i, col[d]] = s
    return out


def bench_clotho(args):
    n, k = 1045, 5
    sims = make_sims(n, k)
    gt = clip_major_gt_cols(n, k)
    mb = sims.nbytes / 1e6
    print(f"CLOTHO-size matrix ({n * k}, {n}) float32 = {mb:.1f} MB; best of {args.repeat}")
    print(f"{'what':<34} {'ours (ms)':>10} {'fork (ms)':>10} {'fork/ours':>9} {'same':>5}")

    t_ours, r_ours = best_of(lambda: gt_ranks_t2a(sims, gt), args.repeat)
    t_ref, r_ref = best_of(lambda: argsort_gt_ranks(sims, gt), args.repeat)
    print(f"{'metrics (t2a GT ranks)':<34} {1e3 * t_ours:>10.1f} {1e3 * t_ref:>10.1f} {t_ref / t_ours:>9.1f} "
          f"{str(np.array_equal(r_ours, r_ref)):>5}")
    refs = {"combsum": fork_reduce("sum"), "combmax": fork_reduce("max"), "combmin": fork_reduce("min"),
            "combmed": fork_reduce("median"), "rrf": fork_rrf, "borda": fork_borda, "isr": fork_isr}
    ours = {}
    for name in ["combsum", "combmnz", "combmax", "combmin", "combmed", "rrf", "borda", "isr", "weighted_combsum"]:
        params = {"weights": np.ones(n * k)}
        t, out = best_of(lambda: fuse(name, sims, k, params=params, dtype=np.float64), args.repeat)
        ours[name] = (t, out)
        if name in refs:
            t_ref, ref = best_of(lambda: refs[name](sims, k), 1 if name in ("rrf", "borda", "isr") else args.repeat)
            print(f"{name:<34} {1e3 * t:>10.1f} {1e3 * t_ref:>10.1f} {t_ref / t:>9.1f} {str(same_ranking(out, ref)):>5}")
        else:
            print(f"{name:<34} {1e3 * t:>10.1f} {'-':>10} {'-':>9} {'-':>5}")

    t_sum = ours["combsum"][0]
    t_f32, _ = best_of(lambda: fuse("combsum", sims, k), args.repeat)
    t_np, _ = best_of(lambda: sims.sum(), args.repeat)
    t_cp, _ = best_of(lambda: sims.copy(), args.repeat)
    print(f"combsum bandwidth: ours float32 out {mb / 1e3 / t_f32:.1f} GB/s (float64 out {mb / 1e3 / t_sum:.1f} GB/s) | "
          f"np.sum {mb / 1e3 / t_np:.1f} GB/s | copy {mb / 1e3 / t_cp:.1f} GB/s (read only)")

    if not args.no_ranx:
        try:
            import ranx  # noqa: F401
        except ImportError:
            print("ranx not installed (pip install -r requirements/requirements-bench.txt): skipped")
            return
        print(f"{'vs ranx fuse (Run building incl.)':<34} {'ours (ms)':>10} {'ranx (ms)':>10} {'ranx/ours':>9} {'same':>5}")
        for name, method in [("combsum", "sum"), ("rrf", "rrf"), ("combmax", "max"), ("isr", "isr")]:
            ranx_fuse(sims[: k * 20, :20], k, method)  # warm numba's JIT so its compile time is not counted
            t_rx, out_rx = best_of(lambda: ranx_fuse(sims, k, method), 1)
            t = ours[name][0]
            print(f"{name:<34} {1e3 * t:>10.1f} {1e3 * t_rx:>10.1f} {t_rx / t:>9.0f} "
                  f"{str(same_ranking(ours[name][1], out_rx)):>5}")


def bench_large(args):
    from bench.bench_metrics import PeakMemory

    n_rows, n = args.large
    k = n_rows // n
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "large.npy"
        start = time.perf_counter()
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n * k, n))
        make_sims(n, k, out=mm)
        mm.flush()
        del mm
        print(f"\nlarge matrix ({n * k}, {n}) float32 = {n * k * n * 4 / 1e9:.2f} GB written to {path} in "
              f"{time.perf_counter() - start:.0f} s; memmapped from disk, chunked")
        sims = np.load(path, mmap_mode="r")
        gt = clip_major_gt_cols(n, k)
        with PeakMemory() as mem:
            for name, fn in (("metrics t2a (GT ranks)", gt_ranks_t2a), ("metrics a2t (GT ranks)", gt_ranks_a2t)):
                start = time.perf_counter()
                ranks = fn(sims, gt)
                dt = time.perf_counter() - start
                m = metrics_from_ranks(ranks)
                print(f"{name:<34} {dt:>8.2f} s  ({sims.nbytes / 1e9 / dt:.2f} GB/s of input)  R1 {m['R1']:.2f} "
                      f"R10 {m['R10']:.2f}")
            diag = np.arange(n)
            for name in args.large_methods.split(","):
                start = time.perf_counter()
                fused = fuse(name, sims, k, progress=False)
                dt = time.perf_counter() - start
                t0 = time.perf_counter()
                m = metrics_from_ranks(gt_ranks_t2a(fused, diag))
                m_a2t = metrics_from_ranks(gt_ranks_a2t(fused, diag))
                dt_m = time.perf_counter() - t0
                print(f"{name:<34} {dt:>8.2f} s  ({sims.nbytes / 1e9 / dt:.2f} GB/s of input); fused ({n}, {n}) "
                      f"metrics both directions {dt_m:.2f} s: t2a R1 {m['R1']:.2f} R10 {m['R10']:.2f}, "
                      f"a2t R1 {m_a2t['R1']:.2f}")
                del fused
        print(mem.line())
        print("(file-backed pages of the memmap are page cache, reclaimable; the 2 GB budget is for allocations)")


def main(argv=None):
    from utils.cli import ArgumentParser, positive_int

    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=positive_int, default=3, help="best of this many runs (default 3)")
    p.add_argument("--large", type=large_shape, default="50000x10000",
                   help="ROWSxCOLS of the large memmapped matrix (rows a multiple of cols), or 'none'")
    p.add_argument("--large-methods", default="combsum,combmax,combmnz,rrf",
                   help="fusion methods run on the large matrix (comma-separated)")
    p.add_argument("--skip-clotho", action="store_true", help="only the large-matrix part")
    p.add_argument("--tmp", default=None, help="folder for the large memmap (default the system temp)")
    p.add_argument("--no-ranx", action="store_true", help="skip the ranx comparison")
    args = p.parse_args(argv)
    from fusion.registry import FUSERS
    from utils.errors import UserError

    unknown = [m for m in args.large_methods.split(",") if m not in FUSERS]
    if unknown:  # before the large matrix is written
        raise UserError(f"--large-methods {unknown[0]!r}: unknown fusion method; valid: {', '.join(FUSERS)}")
    if not args.skip_clotho:
        bench_clotho(args)
    if args.large is not None:
        bench_large(args)


if __name__ == "__main__":
    from utils.errors import run_cli

    sys.exit(run_cli(main))
