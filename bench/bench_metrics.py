"""Benchmark of the metrics: ours vs the original's sort-based algorithm, qrels metrics vs ir-measures, and
streaming evaluation at collection scale.

    .venv/bin/python bench/bench_metrics.py                       # CLOTHO size: both directions + qrels
    .venv/bin/python bench/bench_metrics.py --sims data/saved/<experiment>/<run>   # a trained model's test sims
    .venv/bin/python bench/bench_metrics.py --stream 100000x1000000 --dim 16 --fraction 0.02
    .venv/bin/python bench/bench_metrics.py --ranx                # also: ranx reads our TREC files (slow JIT)

Every comparison is measured side by side in this one process (best of --repeat, methods interleaved) and
every pair of outputs is checked for equality. Timings on a shared machine are noisy: read the ratios.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.metrics import clip_major_gt_cols, gt_ranks_a2t, gt_ranks_t2a, metrics_from_ranks  # noqa: E402
from retrieval.qrels import Qrels  # noqa: E402
from retrieval.qrels_metrics import qrels_metrics  # noqa: E402
from retrieval.streaming import embedding_scorer, stream_gt_ranks  # noqa: E402
from utils.cli import ArgumentParser, float_in, int_list, positive_int, thread_count  # noqa: E402
from utils.errors import run_cli  # noqa: E402


# ----- the original's sort-based algorithm, re-implemented straightforwardly --------------------------------------
def original_t2a_ranks(sims, gt_cols):
    """t2v_metrics: sort each row's distances, find the GT distance by exact equality, average tied positions."""
    dists = -np.asarray(sims)
    n_q = dists.shape[0]
    sorted_dists = np.sort(dists, axis=1)
    gt_dists = dists[np.arange(n_q), gt_cols][:, None]
    rows, cols = np.where((sorted_dists - gt_dists) == 0)
    if rows.size == n_q:  # no ties: one position per row
        return cols.astype(np.float64)
    return np.bincount(rows, weights=cols, minlength=n_q) / np.bincount(rows, minlength=n_q)  # averaging


def original_a2t_ranks(sims, gt_cols):
    """v2t_metrics: per clip, sort its distances to all captions, rank each of its captions (averaging ties),
    keep the minimum (VSE convention)."""
    dists = -np.asarray(sims).T
    captions_of = [[] for _ in range(dists.shape[0])]
    for q, c in enumerate(np.asarray(gt_cols).tolist()):
        captions_of[c].append(q)
    ranks = np.empty(dists.shape[0])
    for i, row in enumerate(dists):
        sorted_row = np.sort(row)
        ranks[i] = min(np.where((sorted_row - row[j]) == 0)[0].mean() for j in captions_of[i])
    return ranks


# ----- memory -------------------------------------------------------------------------------------------------
class PeakMemory:
    """Peak of numpy/Python allocations (tracemalloc) and of anonymous resident memory (/proc, sampled)."""

    def __init__(self, interval=0.01):
        self.interval, self.peak_anon, self.peak_rss = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def _status():
        fields = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "VmRSS:")):
                    key, value = line.split(":")
                    fields[key] = int(value.split()[0]) * 1024
        return fields

    def _sample(self):
        while not self._stop.is_set():
            s = self._status()
            self.peak_anon = max(self.peak_anon, s.get("RssAnon", 0))
            self.peak_rss = max(self.peak_rss, s.get("VmRSS", 0))
            self._stop.wait(self.interval)

    def __enter__(self):
        tracemalloc.start()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    def line(self):
        return (f"peak numpy/Python allocations {self.peak_traced / 2**20:.0f} MiB (tracemalloc); peak anonymous "
                f"RSS {self.peak_anon / 2**20:.0f} MiB, peak RSS incl. file-backed pages {self.peak_rss / 2**20:.0f} MiB")


def timed_interleaved(fns: dict, repeat: int, once=()):
    """Best time of each function, the functions interleaved round by round (fair on a loaded machine)."""
    best, out = {k: float("inf") for k in fns}, {}
    for r in range(repeat):
        for name, fn in fns.items():
            if r and name in once:
                continue
            start = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, out


# ----- sections -------------------------------------------------------------------------------------------------
def bench_directions(args):
    if args.sims:  # a real run's test matrix: <run>/sims/test.npy (+ its manifest)
        from retrieval.sims_io import load_sims

        sims, manifest = load_sims(args.sims, mmap=False)
        gt = manifest.gt_cols()
        what = f"{args.sims}"
    else:
        n, k = 1045, 5
        rng = np.random.default_rng(0)
        sims = rng.standard_normal((n * k, n), dtype=np.float32)
        sims[np.arange(n * k), clip_major_gt_cols(n, k)] += 2.0
        gt = clip_major_gt_cols(n, k)
        what = "random scores"
    print(f"test matrix {sims.shape} {sims.dtype}, {what}; best of {args.repeat}, interleaved")
    print(f"{'direction':<10} {'ours (ms)':>10} {'original (ms)':>14} {'original/ours':>14} {'same ranks':>11}")
    for name, ours, ref in (("t2a", gt_ranks_t2a, original_t2a_ranks), ("a2t", gt_ranks_a2t, original_a2t_ranks)):
        for label, data in (("", sims), (" (ties)", np.round(sims, 1))):
            t, out = timed_interleaved({"ours": lambda: ours(data, gt), "orig": lambda: ref(data, gt)}, args.repeat)
            same = np.array_equal(out["ours"], out["orig"])
            print(f"{name + label:<10} {1e3 * t['ours']:>10.2f} {1e3 * t['orig']:>14.2f} "
                  f"{t['orig'] / t['ours']:>14.1f} {str(same):>11}")


def _random_qrels(rng, n_q, n_docs, max_rel):
    counts = rng.integers(1, max_rel + 1, n_q)
    rows = np.repeat(np.arange(n_q), counts)
    cols = np.concatenate([rng.choice(n_docs, size=c, replace=False) for c in counts])
    return Qrels.from_triples(rows, cols, rng.integers(1, 3, rows.size).astype(float), n_q, n_docs)


def bench_qrels(args):
    import ir_measures
    from ir_measures import AP, RR, Success, nDCG

    from retrieval.trec import top_k

    n_q, n_docs = 5225, 1045
    rng = np.random.default_rng(1)
    qrels = _random_qrels(rng, n_q, n_docs, 6)
    sims = rng.standard_normal((n_q, n_docs)).astype(np.float32)
    sims[qrels.rows(), qrels.cols] += 1.5
    depth = 100
    print(f"\nqrels metrics, ({n_q}, {n_docs}) float32, 1-6 relevant clips per query (graded 1-2, "
          f"{qrels.cols.size} judgements); ir-measures (pytrec_eval) gets each query's top {depth}")
    ids_d = [f"d{j}" for j in range(n_docs)]

    def build_dicts():
        cols, scores = top_k(sims, depth)
        run = {f"q{i}": dict(zip([ids_d[c] for c in cols[i]], scores[i].tolist())) for i in range(n_q)}
        dense_rows = qrels.rows()
        judged: dict = {}
        for r, c, g in zip(dense_rows.tolist(), qrels.cols.tolist(), qrels.gains.tolist()):
            judged.setdefault(f"q{r}", {})[ids_d[c]] = int(g)
        return run, judged

    measures = [Success @ 1, Success @ 5, Success @ 10, AP @ 10, AP @ 16, nDCG @ 10]
    t, out = timed_interleaved({
        "ours": lambda: qrels_metrics(sims, qrels),
        "dicts": build_dicts,
    }, args.repeat)
    run, judged = out["dicts"]
    t_irm, res = timed_interleaved({"irm": lambda: ir_measures.calc_aggregate(measures, judged, run)}, 1)
    ours, oracle = out["ours"], res["irm"]
    keys = {Success @ 1: "R1", Success @ 5: "R5", Success @ 10: "R10", AP @ 10: "mAP10", AP @ 16: "mAP16",
            nDCG @ 10: "nDCG10"}
    same = all(abs(ours[key] - 100 * oracle[m]) < 1e-6 for m, key in keys.items())
    print(f"{'ours: all metrics from the matrix':<44} {1e3 * t['ours']:>9.1f} ms")
    print(f"{'ir-measures: calc_aggregate on dicts':<44} {1e3 * t_irm['irm']:>9.1f} ms  "
          f"({t_irm['irm'] / t['ours']:.0f}x ours)")
    print(f"{'  + building its run/qrels dicts (top-k)':<44} {1e3 * t['dicts']:>9.1f} ms  "
          f"({(t_irm['irm'] + t['dicts']) / t['ours']:.0f}x ours in total)")
    print("values: " + ", ".join(f"{key} {ours[key]:.2f}" for key in keys.values()) + f"; equal to ir-measures: {same}")


def bench_stream(args):
    n_q, n_c = args.stream
    run_q = max(1, int(round(n_q * args.fraction)))
    rng = np.random.default_rng(2)
    print(f"\nstreaming evaluation: {n_q} queries x {n_c} clips, random {args.dim}-d float32 embeddings; "
          f"{args.workers} worker thread(s); running the first {run_q} queries ({100 * run_q / n_q:.3g} %) against all {n_c} clips")
    clips = rng.standard_normal((n_c, args.dim), dtype=np.float32)
    gt = (np.arange(n_q, dtype=np.int64) * n_c) // n_q          # query i describes clip i·N/Q (sorted, like CLOTHO)
    queries = clips[gt[:run_q]] + 1.5 * rng.standard_normal((run_q, args.dim), dtype=np.float32)
    scorer = embedding_scorer(queries, clips)
    from threadpoolctl import threadpool_limits

    with PeakMemory() as mem, threadpool_limits(1 if args.workers > 1 else None):
        start = time.perf_counter()
        ranks = stream_gt_ranks(scorer, (run_q, n_c), gt[:run_q], "t2a", progress=True, workers=args.workers)
        dt = time.perf_counter() - start
    m = metrics_from_ranks(ranks)
    full = dt * n_q / run_q
    print(f"t2a: {dt:.1f} s for {run_q} x {n_c} = {run_q * n_c / dt / 1e9:.2f} G scores/s (matrix product + "
          f"counts); R1 {m['R1']:.2f} R10 {m['R10']:.2f} MedR {m['MedR']:.1f}")
    if run_q < n_q:
        print(f"EXTRAPOLATED to all {n_q} queries: {full:.0f} s = {full / 60:.1f} min (linear in queries)")
    print(mem.line())
    print(f"the full score matrix would be {n_q * n_c * 4 / 1e9:.0f} GB float32; embeddings "
          f"{(clips.nbytes + queries.nbytes) / 2**20:.0f} MiB")


def bench_ranx(args):
    import ir_measures
    import ranx

    from retrieval.qrels import load_qrels
    from retrieval.trec import write_qrels_from_matrix, write_trec_run

    rng = np.random.default_rng(3)
    n_q, n_docs = 200, 300
    qrels = _random_qrels(rng, n_q, n_docs, 5)
    sims = rng.standard_normal((n_q, n_docs)).astype(np.float32)
    qids, docs = [f"clip {i}.wav#0" for i in range(n_q)], [f"clip {j}.wav" for j in range(n_docs)]
    with tempfile.TemporaryDirectory() as tmp:
        run_path = write_trec_run(Path(tmp) / "run.trec", sims, qids, docs, "ours", depth=n_docs)
        qrels_path = write_qrels_from_matrix(Path(tmp) / "qrels.trec", qrels, qids, docs)
        assert np.array_equal(load_qrels(qrels_path, query_ids=qids, doc_ids=docs).to_dense(), qrels.to_dense())
        ours = qrels_metrics(sims, qrels)
        start = time.perf_counter()
        rq, rr = ranx.Qrels.from_file(str(qrels_path), kind="trec"), ranx.Run.from_file(str(run_path), kind="trec")
        rx = ranx.evaluate(rq, rr, ["ndcg@10", "map@10", "hit_rate@5"])
        t_rx = time.perf_counter() - start
        irm = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], ir_measures.read_trec_qrels(str(qrels_path)),
                                         ir_measures.read_trec_run(str(run_path)))
    print(f"\nranx reads our TREC files ({t_rx:.0f} s incl. numba JIT): nDCG@10 {100 * rx['ndcg@10']:.4f} "
          f"(ours {ours['nDCG10']:.4f}, ir-measures {100 * irm[ir_measures.nDCG @ 10]:.4f}); hit_rate@5 "
          f"{100 * rx['hit_rate@5']:.4f} (ours R5 {ours['R5']:.4f}); ranx map@10 {100 * rx['map@10']:.4f} "
          f"(ours, DCASE / trec_eval denominator, mAP10 {ours['mAP10']:.4f})")


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=positive_int, default=5, help="best of this many runs (default 5)")
    p.add_argument("--sims", default=None, help="time the two directions on this matrix (a run folder or .npy with "
                   "manifest, e.g. a train.py run's sims/test.npy) instead of random scores")
    p.add_argument("--stream", type=int_list(1, sep="x", length=2), default=None,
                   help="QxN: stream-evaluate Q queries against N clips (e.g. 100000x1000000)")
    p.add_argument("--dim", type=positive_int, default=16, help="embedding size for --stream (default 16)")
    p.add_argument("--fraction", type=float_in(0.0, 1.0, low_open=True), default=1.0,
                   help="share (0, 1] of the --stream queries to run (extrapolated)")
    p.add_argument("--workers", type=thread_count, default=1,
                   help="threads for --stream (BLAS limited to 1 per thread)")
    p.add_argument("--ranx", action="store_true", help="check that ranx reads our TREC run/qrels files (slow JIT)")
    p.add_argument("--only-stream", action="store_true", help="skip the CLOTHO-size sections")
    args = p.parse_args(argv)
    if not args.only_stream:
        bench_directions(args)
        bench_qrels(args)
    if args.ranx:
        bench_ranx(args)
    if args.stream:
        bench_stream(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
