"""Label relevance for a trained run on a real collection: does the top clip share the query caption's class?

CLOTHO's metrics count only a caption's own clip as relevant; captions written from labels repeat across the clips of
a class, so this script scores ``sims/<split>.npy`` with every clip of the query's class relevant (labels.json of
``scripts/make_real_collection.py``): R@1, mAP@10 (AP normalised by min(#relevant, 10)) and R@1's chance level::

    python scripts/eval_labels.py --run data/saved/real-audio-train-yamnet-soundnet/<run-id> \\
        --labels data/CLOTHO-real-audio/collection/labels.json [--split test]

``--zero-shot ROOT_FEAT`` instead scores the YAMNet zero-shot search (``data.experts.yamnet.zero_shot_scores``) of
an extracted archive: one query per class of labels.json's ``queries`` (its description), over every clip.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.cli import ArgumentParser, float_in  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def label_metrics(sims: np.ndarray, query_classes: list[str], clip_classes: list[str]) -> dict[str, float]:
    clip_classes = np.asarray(clip_classes)
    r1, ap, chance = [], [], []
    for row, cls in zip(sims, query_classes):
        rel = clip_classes == cls
        hits = rel[np.argsort(-row, kind="stable")]
        ranks = np.flatnonzero(hits[:10]) + 1
        r1.append(float(hits[0]))
        ap.append(float((np.arange(1, len(ranks) + 1) / ranks).sum() / min(rel.sum(), 10)))
        chance.append(float(rel.mean()))
    return {"queries": len(r1), "R1": float(100 * np.mean(r1)), "mAP10": float(100 * np.mean(ap)),
            "chance_R1": float(100 * np.mean(chance))}


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder with sims/<split>.npy + .json")
    parser.add_argument("--zero-shot", metavar="ROOT_FEAT", help="score YAMNet zero-shot search of this archive")
    parser.add_argument("--labels", required=True,
                        help="labels.json of the collection (scripts/make_real_collection.py)")
    parser.add_argument("--split", default="test", help="--run: the split whose sims are scored (default test)")
    parser.add_argument("--temperature", type=float_in(1e-6), default=0.05,  # cos / 1e-6 cannot overflow
                        help="softmax temperature of the zero-shot class scores (>= 1e-6; default 0.05)")
    args = parser.parse_args(argv)
    if bool(args.run) == bool(args.zero_shot):
        parser.error("give --run or --zero-shot")
    if args.zero_shot:
        import hickle

        from data.experts import yamnet
        from data.text_features import sentence_embeddings

        labels = json.loads(Path(args.labels).read_text())
        scores = hickle.load(str(Path(args.zero_shot) / "aggregated_yamnet" / "yamnet-classes.hickle"))
        clips = sorted(scores)
        classes = list(labels["queries"])
        queries = sentence_embeddings([labels["queries"][c] for c in classes], progress=False)
        sims = yamnet.zero_shot_scores(queries, yamnet.class_name_embeddings(), np.stack([scores[c] for c in clips]),
                                       temperature=args.temperature)
        result = label_metrics(sims, classes, [labels["clips"][c] for c in clips])
        print(", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
        return
    from retrieval.sims_io import load_sims  # the readers' checks: finished, recorded, manifest agrees

    sims, manifest = load_sims(Path(args.run), args.split)
    labels = json.loads(Path(args.labels).read_text())["clips"]
    queries = [labels[q.rsplit("#", 1)[0]] for q in manifest.query_ids]
    result = label_metrics(np.asarray(sims), queries, [labels[c] for c in manifest.clip_ids])
    print(", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))


if __name__ == "__main__":
    sys.exit(run_cli(main))
