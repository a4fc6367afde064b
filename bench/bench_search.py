"""Search at scale: plain numpy product vs FAISS exact (IndexFlatIP) vs FAISS approximate (IVF, HNSW).

    .venv/bin/python bench/bench_search.py [--n 1000000] [--dims 768,768] [--hnsw-n 100000] [--out FILE]

The collection is synthetic: ``--n`` clips with CE's embedding sizes (default 2 experts × 768 = 1536-d, every
expert present, so one query vector ``[w1·e1; w2·e2]`` per query, retrieval/index.py). Per expert, a clip is the
unit-normalised random projection of one of ``--clusters`` latent sound-event centres plus latent noise, so the
collection has the low intrinsic dimension and cluster structure of trained embeddings (``--data random`` gives
isotropic Gaussian vectors instead: the worst case for IVF/HNSW). Queries are drawn the same way (their own noise,
MoE weights from a Dirichlet(2, 2)).

Memory stays near one copy of the collection (n × d × 4 bytes): it is generated in seeded chunks straight into the
FAISS flat index, numpy works on a view of that index's storage, and the approximate indexes are built after the
flat one is freed, from the same chunks regenerated. Measured side by side in one process: build time, resident
memory (VmRSS) added by each index, per-query latency (one query at a time, median) and batched throughput,
recall@k of each approximate setting against the exact top-k. The machine is shared: absolute times are noisy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.faiss_index import (DEFAULT_EF_SEARCH, default_nlist, default_nprobe, default_train_size,  # noqa: E402
                                   empty_faiss, set_search_params)
from retrieval.trec import top_k  # noqa: E402
from utils.cli import ArgumentParser, int_list, nonneg_int, positive_int, thread_count_or_0  # noqa: E402
from utils.errors import run_cli  # noqa: E402

CHUNK = 65536


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class Collection:
    """Seeded, chunk-wise reproducible synthetic embeddings with a latent cluster structure."""

    def __init__(self, dims, clusters=2000, latent=64, noise=0.6, data="clustered", seed=0):
        self.dims, self.data, self.seed, self.noise = list(dims), data, seed, noise
        world = np.random.default_rng([seed, 0])
        self.centres = world.standard_normal((clusters, latent)).astype(np.float32)
        self.proj = [(world.standard_normal((latent, d)) / np.sqrt(latent)).astype(np.float32) for d in dims]

    def _experts(self, rng, n, noise):
        if self.data == "random":
            return [_unit(rng.standard_normal((n, d), dtype=np.float32)) for d in self.dims]
        z = self.centres[rng.integers(0, len(self.centres), n)]
        out = []
        for p in self.proj:
            lat = z + noise * rng.standard_normal(z.shape, dtype=np.float32)
            out.append(_unit(lat @ p))
        return out

    def chunk(self, i, n_total):
        start = i * CHUNK
        n = min(CHUNK, n_total - start)
        return np.hstack(self._experts(np.random.default_rng([self.seed, 1, i]), n, self.noise))

    def chunks(self, n_total):
        for i in range((n_total + CHUNK - 1) // CHUNK):
            yield self.chunk(i, n_total)

    def queries(self, q):
        rng = np.random.default_rng([self.seed, 2])
        emb = self._experts(rng, q, self.noise * 1.2)
        w = rng.dirichlet([2.0] * len(self.dims), size=q).astype(np.float32)
        return np.hstack([w[:, m:m + 1] * e for m, e in enumerate(emb)]).astype(np.float32)


class LikeRun(Collection):
    """Clips drawn from a Gaussian fitted, per expert, to a trained run's saved index (its real audio embeddings:
    same mean and covariance spectrum), unit-normalised per expert; queries are the run's real query vectors for
    its split's captions (the run's text encoder, every expert present)."""

    def __init__(self, run, seed=0):
        from retrieval.index_store import IndexStore

        index = IndexStore(Path(run) / "index" / "split-test").load()
        self.dims, self.seed, self.run, self.index, self.noise = list(index.layout.dims), seed, run, index, None
        off = index.layout.offsets
        self.parts = []
        for m in range(len(self.dims)):
            x = index.emb[index.avail[:, m], off[m]:off[m + 1]].astype(np.float64)
            mean = x.mean(axis=0)
            _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
            self.parts.append((mean.astype(np.float32), (sv[:, None] / np.sqrt(len(x) - 1) * vt).astype(np.float32)))

    def _experts(self, rng, n, noise=None):
        return [_unit(mean + rng.standard_normal((n, basis.shape[0]), dtype=np.float32) @ basis)
                for mean, basis in self.parts]

    def queries(self, q):
        from model.query import QueryEncoder, encode_text, load_run_model
        from retrieval.index import query_vectors

        rm = load_run_model(self.run)
        caps = [c for caps in self.index.captions for c in caps]
        pick = np.random.default_rng([self.seed, 2]).choice(len(caps), size=q, replace=False)
        enc = QueryEncoder(rm.config).encode([caps[i] for i in pick])
        emb, w = encode_text(rm.model, enc.text, enc.lens)
        return query_vectors(self.index.layout, emb, w, np.ones(len(self.dims), bool))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_topk(x, v, k, block=CHUNK * 2):
    """Exact top-k of ``v @ x.T`` walking clip blocks (bounded memory), merging block top-k lists."""
    best_c = np.empty((v.shape[0], 0), np.int64)
    best_s = np.empty((v.shape[0], 0), np.float32)
    for start in range(0, x.shape[0], block):
        s = v @ x[start:start + block].T
        c, sc = top_k(s, k)
        best_c = np.hstack([best_c, c + start])
        best_s = np.hstack([best_s, sc])
        c2, sc2 = top_k(best_s, k)
        best_c, best_s = np.take_along_axis(best_c, c2, 1), sc2
    return best_c, best_s


def latency(fn, queries, single=20, batch=100):
    """(median seconds for one query alone, seconds per query in one batch of ``batch``)."""
    times = []
    for i in range(min(single, len(queries))):
        t0 = time.perf_counter()
        fn(queries[i:i + 1])
        times.append(time.perf_counter() - t0)
    b = queries[:batch]
    t0 = time.perf_counter()
    fn(b)
    return float(np.median(times)), (time.perf_counter() - t0) / len(b)


def recall(found, exact):
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), exact.tolist())]))


def main(argv=None):
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=positive_int, default=1_000_000, help="clips in the collection (default 1,000,000)")
    ap.add_argument("--dims", type=int_list(1), default="768,768",
                    help="embedding size per expert (default CE's 768,768)")
    ap.add_argument("--data", default="clustered", choices=("clustered", "random"),
                    help="clustered (default): cluster structure like trained embeddings; random: isotropic Gaussian")
    ap.add_argument("--like", metavar="RUN", help="instead of --data: clips from a Gaussian fitted to RUN's saved "
                                                  "test index (search.py builds it), queries = RUN's real query "
                                                  "vectors for random test captions")
    ap.add_argument("--clusters", type=positive_int, default=2000, help="latent event centres (clustered data)")
    ap.add_argument("--queries", type=positive_int, default=200, help="queries for recall (default 200)")
    ap.add_argument("--k", type=positive_int, default=10, help="top-k of the recall check (default 10)")
    ap.add_argument("--nlist", type=nonneg_int, default=0, help="IVF cells (default ≈ sqrt(n))")
    ap.add_argument("--train-size", type=nonneg_int, default=0, help="IVF training vectors (default: search.py's, 64 x nlist, at least 10,000)")
    ap.add_argument("--nprobe", type=int_list(1), default=None,
                    help="IVF nprobe values to sweep (default 16,32,64,128 and search.py's default, nlist / 4)")
    ap.add_argument("--hnsw-n", type=nonneg_int, default=50_000, help="clips for the HNSW run (0: skip; its build is "
                                                                  "slow on 2 cores, so by default it runs on a prefix of 50,000)")
    ap.add_argument("--ef-search", type=int_list(1), default=f"16,32,64,128,512,{DEFAULT_EF_SEARCH}",
                    help=f"HNSW efSearch values to sweep ({DEFAULT_EF_SEARCH}: search.py's default)")
    ap.add_argument("--threads", type=thread_count_or_0, default=0, help="FAISS OpenMP threads (default: FAISS's own)")
    ap.add_argument("--out", default="bench/out/bench_search.json", help="JSON results (default: this path)")
    args = ap.parse_args(argv)
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.like:
        col = LikeRun(args.like)
        dims = col.dims
        args.data = f"like {args.like}"
    else:
        dims = args.dims
        col = Collection(dims, args.clusters, data=args.data)
    d, n, k = sum(dims), args.n, args.k
    queries = col.queries(args.queries)
    res = {"n": n, "d": d, "dims": dims, "data": args.data, "queries": args.queries, "k": k,
           "faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads()}
    print(f"collection {n:,} x {d} ({args.data}), {args.queries} queries, k={k}, FAISS {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")

    # ---- flat (exact) index, generated straight into it; numpy works on a view of its storage
    base = rss_gib()
    flat = empty_faiss("flat", d)
    t_gen = t_add = 0.0
    for i in range(0, (n + CHUNK - 1) // CHUNK):
        t0 = time.perf_counter()
        x = col.chunk(i, n)
        t1 = time.perf_counter()
        flat.add(x)
        t_gen += t1 - t0
        t_add += time.perf_counter() - t1
    xb = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    mem_flat = rss_gib() - base
    print(f"generated in {t_gen:.1f}s; flat: add {t_add:.1f}s, +{mem_flat:.2f} GiB")
    t0 = time.perf_counter()
    exact_c, _ = numpy_topk(xb, queries, k)
    res["exact_topk_all_queries_s"] = time.perf_counter() - t0
    one, per = latency(lambda v: numpy_topk(xb, v, k), queries)
    res["numpy"] = {"build_s": 0.0, "memory_gib": mem_flat, "query_s": one, "batched_query_s": per}
    print(f"numpy  : build 0 s (the matrix itself), {mem_flat:.2f} GiB, 1 query {one * 1e3:.1f} ms, "
          f"batched {per * 1e3:.2f} ms/query")
    _, fc = flat.search(queries, k)
    one, per = latency(lambda v: flat.search(v, k), queries)
    res["flat"] = {"build_s": t_add, "memory_gib": mem_flat, "query_s": one, "batched_query_s": per,
                   "recall": recall(fc, exact_c)}
    print(f"flat   : build {t_add:.1f}s, {mem_flat:.2f} GiB, 1 query {one * 1e3:.1f} ms, batched "
          f"{per * 1e3:.2f} ms/query, recall@{k} {res['flat']['recall']:.4f}")
    del xb, flat

    # ---- IVF, from the same chunks regenerated
    nlist = args.nlist or default_nlist(n)  # search.py's defaults throughout
    train_n = min(n, args.train_size or default_train_size(n, nlist))
    base = rss_gib()
    t0 = time.perf_counter()
    train = np.vstack([c for _, c in zip(range((train_n + CHUNK - 1) // CHUNK), col.chunks(n))])[:train_n]
    t_train0 = time.perf_counter()
    ivf = empty_faiss("ivf", d, train=train, nlist=nlist)
    t_train = time.perf_counter() - t_train0
    del train
    t1 = time.perf_counter()
    t_add = 0.0
    for x in col.chunks(n):
        t2 = time.perf_counter()
        ivf.add(x)
        t_add += time.perf_counter() - t2
    t_regen = time.perf_counter() - t1 - t_add
    mem_ivf = rss_gib() - base
    res["ivf"] = {"nlist": nlist, "train_vectors": train_n, "train_s": t_train, "add_s": t_add,
                  "build_s": t_train + t_add, "memory_gib": mem_ivf, "sweep": []}
    print(f"ivf    : nlist {nlist}, train {t_train:.1f}s on {train_n:,}, add {t_add:.1f}s "
          f"(+{t_regen:.1f}s regenerating), +{mem_ivf:.2f} GiB")
    for nprobe in args.nprobe or sorted({16, 32, 64, 128, default_nprobe(nlist)}):
        set_search_params(ivf, nprobe=nprobe)
        _, c = ivf.search(queries, k)
        one, per = latency(lambda v: ivf.search(v, k), queries)
        row = {"nprobe": nprobe, "recall": recall(c, exact_c), "query_s": one, "batched_query_s": per}
        res["ivf"]["sweep"].append(row)
        print(f"  nprobe {nprobe:>4}: recall@{k} {row['recall']:.4f}, 1 query {one * 1e3:.2f} ms, "
              f"batched {per * 1e3:.3f} ms/query")
    del ivf

    # ---- HNSW on a prefix (its build is the slow part on 2 cores)
    if args.hnsw_n:
        m = min(args.hnsw_n, n)
        xs = np.vstack([c for _, c in zip(range((m + CHUNK - 1) // CHUNK), col.chunks(n))])[:m]
        sub_exact, _ = numpy_topk(xs, queries, k)
        base = rss_gib()
        t0 = time.perf_counter()
        hnsw = empty_faiss("hnsw", d)
        hnsw.add(xs)
        t_build = time.perf_counter() - t0
        mem_h = rss_gib() - base
        res["hnsw"] = {"n": m, "M": 32, "efConstruction": 64, "build_s": t_build, "memory_gib": mem_h, "sweep": []}
        one, per = latency(lambda v: numpy_topk(xs, v, k), queries)
        res["hnsw"]["numpy_same_n"] = {"query_s": one, "batched_query_s": per}
        print(f"hnsw   : {m:,} clips, build {t_build:.1f}s, +{mem_h:.2f} GiB (numpy on the same {m:,}: 1 query "
              f"{one * 1e3:.2f} ms)")
        for ef in args.ef_search:
            set_search_params(hnsw, ef_search=ef)
            _, c = hnsw.search(queries, k)
            one, per = latency(lambda v: hnsw.search(v, k), queries)
            row = {"efSearch": ef, "recall": recall(c, sub_exact), "query_s": one, "batched_query_s": per}
            res["hnsw"]["sweep"].append(row)
            print(f"  efSearch {ef:>4}: recall@{k} {row['recall']:.4f}, 1 query {one * 1e3:.2f} ms, "
                  f"batched {per * 1e3:.3f} ms/query")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    sys.exit(run_cli(main))
