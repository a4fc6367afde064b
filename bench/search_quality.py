"""Search quality, index build time and query latency of a run on the SYNTHETIC set, judged by its latent events.

    .venv/bin/python bench/search_quality.py --run data/saved/clotho-synthetic-train-vggish-vggsound/<run-id>

The synthetic generator records which latent sound events every clip holds (``synthetic-meta.json``). Three query
sets over the run's test clips, relevance from those events (never from captions):

* ``event``: each event type present in >= 1 test clip, queried with each of its 2-4 English phrasings (the
  generator's own, e.g. "a dog barks", "a hound barks"); relevant = clips holding that event;
* ``pair``: two events that co-occur in >= 3 test clips, "<phrasing A> while <phrasing B>" (3 phrasings: different
  phrasings of A and B); relevant = clips holding both;
* ``vague``: each category's vague phrasings ("an animal makes noise"); relevant = any event of the category.

Per query set: P@1, P@10 (share of the top 10 holding the queried sounds), AP@10 (normalised by min(10, #relevant))
for one phrasing at a time, and for an event's phrasings fused (CombSum, RRF), each with its chance level (the
expected value for a uniformly random ranking: P@k = share of relevant clips; AP@10 by simulation). Timings:
index build (encode + save), one query's text encoding + scoring (median over queries, in-process), and the full
``search.py`` command (process start, model load, saved index). The machine is shared: timings are noisy.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.clotho import root_feat_dir  # noqa: E402
from data.synthetic_vocab import VAGUE, _parse_events  # noqa: E402
from fusion import methods  # noqa: E402
from model.query import QueryEncoder, encode_text, load_run_model  # noqa: E402
from model.run_index import build_run_index, run_split_fingerprint  # noqa: E402
from retrieval.index_store import IndexStore  # noqa: E402
from retrieval.trec import top_k  # noqa: E402


def precision_ap(scores: np.ndarray, rel: np.ndarray, k: int = 10) -> dict:
    """Per query P@1, P@k and AP@k of ``(Q, N)`` scores against boolean ``(Q, N)`` relevance."""
    cols, _ = top_k(scores, k)
    hits = np.take_along_axis(rel, cols, axis=1).astype(np.float64)
    prec_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    denom = np.minimum(rel.sum(axis=1), k)
    return {"P1": hits[:, 0], f"P{k}": hits.mean(axis=1), f"AP{k}": (prec_at * hits).sum(axis=1) / denom}


def chance(rel: np.ndarray, k: int = 10, draws: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    share = rel.mean(axis=1)
    ap = np.mean([precision_ap(rng.random(rel.shape), rel, k)[f"AP{k}"] for _ in range(draws)], axis=0)
    return {"P1": share, f"P{k}": share, f"AP{k}": ap}


def summarise(per_query: dict) -> dict:
    return {m: round(100 * float(np.mean(v)), 2) for m, v in per_query.items()}


def main(argv=None):
    from utils.cli import ArgumentParser, positive_int, thread_count_or_0

    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a complete run trained on the synthetic set")
    ap.add_argument("--split", default="test", help="the run's split whose clips are searched (default test)")
    ap.add_argument("--out", default=None, help="JSON output (default RUN/search_quality.json)")
    ap.add_argument("--cli-repeats", type=positive_int, default=3, help="timed search.py invocations")
    ap.add_argument("--threads", type=thread_count_or_0, default=0, help="torch threads (default: torch's own)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    rm = load_run_model(args.run)
    meta_path = root_feat_dir(rm.config) / "synthetic-meta.json"
    meta = json.loads(meta_path.read_text())["clips"]
    res: dict = {"run": str(rm.run_dir), "split": args.split}

    # ---- index build (fresh) and load
    t0 = time.perf_counter()
    index, seconds = build_run_index(rm, args.split)
    store = IndexStore(rm.run_dir / "index" / f"split-{args.split}")
    store.create(index, run_split_fingerprint(rm, args.split))
    res["index_build_s"] = round(time.perf_counter() - t0, 3)
    res["index_build_encode_s"] = round(seconds, 3)
    t0 = time.perf_counter()
    index = store.load()
    res["index_load_s"] = round(time.perf_counter() - t0, 4)
    n = len(index)
    res["clips"] = n
    clip_events = [set(meta[c]["events"]) for c in index.clip_ids]

    events = _parse_events()  # (category, [phrasings]); meta names an event by its first phrasing
    name_to_phr = {p[0]: p for _, p in events}
    cat_of = {p[0]: cat for cat, p in events}
    present = sorted({e for ev in clip_events for e in ev})
    enc = QueryEncoder(rm.config)

    def score(texts):
        q = enc.encode(texts)
        emb, w = encode_text(rm.model, q.text, q.lens)
        return index.scores(emb, w)

    # ---- query sets: (need id, phrasings, relevance row)
    sets = {"event": [], "pair": [], "vague": []}
    for e in present:
        sets["event"].append((e, name_to_phr[e], np.array([e in ev for ev in clip_events])))
    pair_counts = {}
    for ev in clip_events:
        for a, b in itertools.combinations(sorted(ev), 2):
            pair_counts[(a, b)] = pair_counts.get((a, b), 0) + 1
    for (a, b), cnt in sorted(pair_counts.items()):
        if cnt >= 3:
            pa, pb = name_to_phr[a], name_to_phr[b]
            phr = [f"{pa[i % len(pa)]} while {pb[(i + 1) % len(pb)]}" for i in range(3)]
            sets["pair"].append((f"{a} + {b}", phr, np.array([a in ev and b in ev for ev in clip_events])))
    for cat, phr in VAGUE.items():
        rel = np.array([any(cat_of[e] == cat for e in ev) for ev in clip_events])
        if rel.any():
            sets["vague"].append((cat, phr, rel))

    for name, needs in sets.items():
        texts = [p for _, phr, _ in needs for p in phr]
        owner = np.repeat(np.arange(len(needs)), [len(phr) for _, phr, _ in needs])
        s = score(texts)
        rel_rows = np.stack([rel for _, _, rel in needs])
        single = precision_ap(s, rel_rows[owner])
        single_chance = chance(rel_rows[owner])
        fused = {"combsum": [], "rrf": []}
        for i in range(len(needs)):
            rows = s[owner == i]
            fused["combsum"].append(methods.combsum(rows, len(rows))[0])
            fused["rrf"].append(methods.rrf(rows, len(rows), k=60)[0])
        entry = {"needs": len(needs), "queries": len(texts),
                 "relevant_per_need_mean": round(float(rel_rows.sum(axis=1).mean()), 1),
                 "single_phrasing": summarise(single), "chance": summarise(single_chance)}
        for m, rows in fused.items():
            entry[f"fused_{m}"] = summarise(precision_ap(np.stack(rows), rel_rows))
        entry["chance_per_need"] = summarise(chance(rel_rows))
        res[name] = entry
        print(f"{name:>6}: {len(needs)} needs, {len(texts)} phrasings, ~{entry['relevant_per_need_mean']} relevant "
              f"clips each | single {entry['single_phrasing']} | combsum {entry['fused_combsum']} | rrf "
              f"{entry['fused_rrf']} | chance {entry['chance_per_need']}")

    # ---- latency: one query at a time, in-process (text encoding + one product + top-k)
    lat = []
    for _, phr, _ in sets["event"][:40]:
        t0 = time.perf_counter()
        top_k(score([phr[0]]), 10)
        lat.append(time.perf_counter() - t0)
    res["query_latency_ms_median"] = round(1e3 * float(np.median(lat)), 2)
    cli = []
    for _ in range(args.cli_repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "search.py", "--run", str(rm.run_dir), "--json",
                        *(["--threads", str(args.threads)] if args.threads else []),
                        "a dog barks", "rain falls on a tin roof"], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        cli.append(time.perf_counter() - t0)
    res["cli_seconds_median"] = round(float(np.median(cli)), 2) if cli else None
    print(f"index build {res['index_build_s']}s (encode {res['index_build_encode_s']}s), load "
          f"{res['index_load_s']}s, one query {res['query_latency_ms_median']} ms in-process, search.py command "
          f"{res['cli_seconds_median']}s")
    out = Path(args.out) if args.out else rm.run_dir / "search_quality.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    from utils.errors import run_cli

    sys.exit(run_cli(main))
