"""Answer typed queries with a trained run: ``python search.py --help`` (docs/SEARCH.md).

    python search.py --run RUN "a dog barks while rain falls" ["rain on a tin roof, a dog" ...]

Every positional text is one phrasing of ONE information need; several phrasings are fused (CombSum by default,
RRF, or QPP-weighted CombSum, ``--fusion``). The audio side of the run's split is indexed once and saved beside the
run (``RUN/index/split-<split>/``); later queries cost one text encoding and one matrix product.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.faiss_index import DEFAULT_EF_SEARCH
from utils.cli import ArgumentParser, nonneg_int, positive_int, thread_count_or_0
from utils.errors import UserError, run_cli

FUSIONS = ("combsum", "rrf", "qpp")
BACKENDS = ("auto", "numpy", "flat", "ivf", "hnsw")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="search.py", formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Search the clips of a trained run with typed text. Each QUERY is one phrasing of the same need; several "
        "phrasings are fused into one ranking. Prints the top-k clips with their scores, ids and captions.\n\n"
        "  python search.py --run data/saved/EXP/RUN \"a dog barks while rain falls\" \"rain on a roof, a dog\"\n"
        "  python search.py --config configs/clotho-synthetic/train-vggish-vggsound.json --k 5 --json \"birds\"\n\n"
        "The audio index of a split is built on first use and saved in RUN/index/split-SPLIT/ (rebuilt when the "
        "checkpoint or the data changes). Exit code 2 with one line on bad input."))
    p.add_argument("queries", nargs="*", metavar="QUERY", help="phrasings of one information need")
    src = p.add_argument_group("what to search (one of)")
    src.add_argument("--run", help="a complete run folder data/saved/<experiment>/<run-id>/")
    src.add_argument("--config", help="a training config: use the newest complete run of its experiment")
    src.add_argument("--audio", metavar="DIR", help="a folder of audio files (zero-shot, or with --run: the run's "
                                                    "experts extracted from the audio)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which split's clips to search (default test)")
    p.add_argument("--k", type=positive_int, default=10, help="how many clips to return (default 10)")
    p.add_argument("--fusion", default="combsum", choices=FUSIONS,
                   help="how several phrasings are fused: combsum (sum of scores, default), rrf (reciprocal rank "
                        "fusion, k=60), qpp (CombSum weighted by the run's QPP stage; see docs/SEARCH.md)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object (schema in docs/SEARCH.md)")
    out.add_argument("--trec", action="store_true", help="print a TREC run: qid Q0 docno rank score tag")
    p.add_argument("--qid", default="q1", help="query id of the TREC output (default q1)")
    p.add_argument("--word2vec", metavar="FILE", help="GoogleNews word2vec binary (.bin / .bin.gz), needed for runs "
                                                      "trained on real CLOTHO w2v features")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="numpy: exact matrix product; flat: FAISS exact; ivf / hnsw: FAISS approximate; auto "
                        "(default): numpy below --faiss-threshold clips, ivf above")
    p.add_argument("--faiss-threshold", dest="faiss_threshold", type=nonneg_int, default=200_000,
                   help="clips from which --backend auto switches to FAISS IVF (default 200000)")
    p.add_argument("--nprobe", type=nonneg_int, default=0,
                   help="IVF cells searched (default 0 = a quarter of the cells: recall@10 0.9625 at 1M clips on the "
                        "hard case of bench/bench_search.py --like)")
    p.add_argument("--ef-search", dest="ef_search", type=positive_int, default=DEFAULT_EF_SEARCH,
                   help=f"HNSW candidates per search (default {DEFAULT_EF_SEARCH}: recall@10 0.978 at 1M clips on the "
                        "hard case of bench/bench_search.py --like; 128 gave 0.643)")
    p.add_argument("--depth", type=positive_int, default=200,
                   help="FAISS back ends: candidates per phrasing, re-scored exactly and fused (default 200)")
    p.add_argument("--rebuild-index", dest="rebuild", action="store_true", help="rebuild the saved index")
    p.add_argument("--vggish-weights", dest="vggish_weights", metavar="PATH",
                   help="--audio with a run using VGGish: the VGGish checkpoint (see docs/EXTRACT.md)")
    p.add_argument("--index-dir", dest="index_dir", metavar="DIR",
                   help="--audio: where feature caches and zero-shot indexes live (default data/saved/audio-index; "
                        "a run's audio index goes to RUN/index/audio-<folder>)")
    p.add_argument("--threads", type=thread_count_or_0, default=0,
                   help="torch CPU threads (default 0: torch's own choice; 1 is faster for single queries on a busy "
                        "machine)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.queries:
        raise UserError("QUERY: give at least one text to search for")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts = dict(k=args.k, fusion=args.fusion, backend=args.backend, faiss_threshold=args.faiss_threshold,
                nprobe=args.nprobe, ef_search=args.ef_search, depth=args.depth, word2vec=args.word2vec,
                rebuild=args.rebuild)
    if args.run and args.config:
        raise UserError("give one of --run RUN or --config CFG, not both")
    run_dir = Path(args.run) if args.run else (_newest_run(args.config) if args.config else None)
    if args.audio:
        result = search_audio(args.audio, args.queries, run_dir=run_dir, vggish_weights=args.vggish_weights,
                              index_root=args.index_dir, **opts)
    elif run_dir is None:
        raise UserError("give --run RUN, --config CFG or --audio DIR")
    else:
        result = search_run(run_dir, args.queries, split=args.split, **opts)
    if args.json:
        print(json.dumps(result, indent=1))
    elif args.trec:
        sys.stdout.write(trec_lines(result, args.qid))
    else:
        sys.stdout.write(text_report(result))
    return result


def _newest_run(config_path: str) -> Path:
    from utils.paths import newest_run_of_config

    if not Path(config_path).is_file():
        raise UserError(f"{config_path}: config not found")
    return newest_run_of_config(config_path)


# ----------------------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------------------
def search_run(run_dir: Path, queries: Sequence[str], *, split: str = "test", word2vec: str | None = None,
               rebuild: bool = False, log=None, **opts) -> dict:
    """Search the split's clips of a run; returns the JSON-able result (see docs/SEARCH.md)."""
    from model.query import QueryEncoder, check_queries, encode_text, load_run_model
    from model.run_index import open_run_index

    log = log or _stderr
    t0 = time.perf_counter()
    check_queries(queries)  # before any model or index
    rm = load_run_model(run_dir)
    _check_fusion_source(opts.get("fusion"), rm.run_dir, queries)
    encoder = QueryEncoder(rm.config, word2vec)  # fails early (e.g. w2v run without --word2vec)
    index, index_info = open_run_index(rm, split, rebuild=rebuild, log=log)
    t_index = time.perf_counter()
    enc = encoder.encode(queries)
    text_emb, weights = encode_text(rm.model, enc.text, enc.lens)
    return answer(index, text_emb, weights, queries, qpp_run=rm.run_dir, dropped=enc.dropped, t0=t0,
                  t_index=t_index, notes=enc.notes, head={"run": str(rm.run_dir), "split": split, "audio": None},
                  text_features=encoder.source, index_info=index_info, **opts)


def search_audio(folder: str, queries: Sequence[str], *, run_dir: Path | None = None, word2vec: str | None = None,
                 vggish_weights: str | None = None, index_root: str | None = None, rebuild: bool = False, log=None,
                 **opts) -> dict:
    """Search a folder of audio: zero-shot, or with a run whose experts are extracted from the audio."""
    from model.audio_search import FolderSearch, check_audio_folder
    from model.query import check_queries, load_run_model

    log = log or _stderr
    t0 = time.perf_counter()
    check_queries(queries)  # before any model or index
    check_audio_folder(folder)
    rm = load_run_model(run_dir) if run_dir is not None else None
    if rm is None and opts.get("fusion") == "qpp" and len(queries) > 1:
        raise UserError("--fusion qpp: needs --run RUN with a complete QPP stage (zero-shot search has none)")
    if rm is not None:
        _check_fusion_source(opts.get("fusion"), rm.run_dir, queries)
    fs = FolderSearch(folder, rm, index_root=index_root, vggish_weights=vggish_weights, log=log, rebuild=rebuild)
    t_index = time.perf_counter()
    text_emb, weights, source, dropped, qnotes = fs.query_side(queries, word2vec)
    notes = ([fs.skipped_note()] if fs.skipped else []) + qnotes
    return answer(fs.index, text_emb, weights, queries, qpp_run=rm.run_dir if rm else None, dropped=dropped,
                  t0=t0, t_index=t_index, notes=notes, text_features=source, index_info=fs.info,
                  head={"run": str(rm.run_dir) if rm else None, "split": None, "audio": str(folder)}, **opts)


def _check_fusion_source(fusion: str | None, run_dir: Path, queries: Sequence[str]) -> None:
    """--fusion qpp needs the run's QPP stage: checked before an index is built (minutes on a large collection)."""
    if fusion == "qpp" and len(queries) > 1:
        from qpp.phrasings import require_qpp_stage

        require_qpp_stage(run_dir)


def answer(index, text_emb, weights, queries, *, k: int = 10, fusion: str = "combsum", backend: str = "auto",
           faiss_threshold: int = 200_000, nprobe: int = 0, ef_search: int = DEFAULT_EF_SEARCH, depth: int = 200,
           qpp_run=None, dropped=(), t0=0.0, t_index=0.0, notes=(), head=None, text_features="",
           index_info=None) -> dict:
    """Score the phrasings on the index (numpy or FAISS + exact re-scoring), fuse them, take the top k."""
    t_text = time.perf_counter()
    if not (np.isfinite(weights).all() and all(np.isfinite(e).all() for e in text_emb)):
        # NaN query vectors would score every clip NaN, reported as "clips have no expert": never let that pass
        raise RuntimeError("non-finite query embeddings (the text side gave NaN / inf)")
    use_faiss = backend in ("flat", "ivf", "hnsw") or (backend == "auto" and len(index) >= faiss_threshold)
    if use_faiss:
        from retrieval.faiss_index import FaissSearcher

        kind = "ivf" if backend == "auto" else backend
        searcher = FaissSearcher(index, kind, nprobe=nprobe, ef_search=ef_search)
        cand, _ = searcher.search(text_emb, weights, max(depth, k))
        cols = np.unique(cand[cand >= 0])
        sims = index.scores_at(text_emb, weights, cols)   # exact scores of every phrasing on the candidates
        used = f"faiss-{kind}"
    else:
        sims = index.scores(text_emb, weights)
        cols = np.arange(len(index))
        used = "numpy"
    t_score = time.perf_counter()
    scorable = ~np.isnan(sims).any(axis=0)  # clips without any expert score NaN in the model: never returned
    sims, cols = sims[:, scorable], cols[scorable]
    notes = list(notes)
    if not scorable.all():
        notes.append(f"{int((~scorable).sum())} clips have no expert and cannot be scored")
    fused, fusion_used, fnotes = fuse_phrasings(sims, fusion, qpp_run, queries)
    notes += fnotes
    from retrieval.trec import top_k

    top_cols, top_scores = top_k(fused[None, :], min(k, fused.size))
    results = []
    for rank, (c, s) in enumerate(zip(top_cols[0].tolist(), top_scores[0].tolist()), start=1):
        clip = int(cols[c])
        results.append({"rank": rank, "clip_id": index.clip_ids[clip], "score": float(s),
                        "phrasing_scores": [float(x) for x in sims[:, c]],
                        "captions": index.captions[clip] if index.captions is not None else []})
    if any(dropped):
        notes.append("words without a vector, dropped: " + ", ".join(sorted({w for d in dropped for w in d})))
    return {**(head or {}), "queries": list(queries), "fusion": fusion_used,
            "backend": used, "k": k, "n_clips": len(index), "text_features": text_features,
            "index": index_info, "results": results, "notes": notes,
            "timings_s": {"load_and_index": round(t_index - t0, 4), "text_encoding": round(t_text - t_index, 4),
                          "scoring": round(t_score - t_text, 4), "total": round(time.perf_counter() - t0, 4)}}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def fuse_phrasings(sims: np.ndarray, fusion: str, run_dir: Path | None, queries: Sequence[str]):
    """``(P, N)`` phrasing scores -> ``(N,)`` fused scores, the method used and notes."""
    from fusion import methods

    p = sims.shape[0]
    if p == 1:
        return sims[0].astype(np.float64), "none (one phrasing)", []
    if fusion == "combsum":
        return methods.combsum(sims, p)[0], "combsum", []
    if fusion == "rrf":
        return methods.rrf(sims, p, k=60)[0], "rrf", []
    from qpp.phrasings import phrasing_weights

    if run_dir is None:
        raise UserError("--fusion qpp: needs --run RUN with a complete QPP stage")

    w, note = phrasing_weights(run_dir, sims, list(queries))
    return methods.weighted_combsum(sims, p, w)[0], "qpp", [note]


def text_report(result: dict) -> str:
    q = result["queries"]
    if result.get("audio"):
        what = f"audio folder {result['audio']} ({'run ' + result['run'] if result['run'] else 'zero-shot'})"
    else:
        what = f"run {result['run']}, split {result['split']}"
    head = (f"{len(q)} phrasing{'s' if len(q) > 1 else ''}, fusion {result['fusion']}; {what}, "
            f"{result['n_clips']} clips, {result['backend']}, {result['timings_s']['total']:.2f}s")
    lines = [head]
    for r in result["results"]:
        lines.append(f"{r['rank']:>3}  {r['score']:8.4f}  {r['clip_id']}")
        lines += [f"       - {c}" for c in r["captions"]]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def trec_lines(result: dict, qid: str) -> str:
    from retrieval.trec import encode_id

    tag = encode_id(f"search-{result['fusion'].split()[0]}")
    q = encode_id(qid)
    return "".join(f"{q} Q0 {encode_id(r['clip_id'])} {r['rank']} {r['score']:.9g} {tag}\n" for r in result["results"])


if __name__ == "__main__":
    sys.exit(run_cli(main))
