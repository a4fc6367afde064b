"""Choose experts by measurement: speed (x real time per CPU core) and audio-to-audio retrieval quality by label.

On a collection made by ``scripts/make_real_collection.py`` (labels.json: clip -> class from the file names), each
expert embeds every clip (one thread, short clips zero-padded to one patch); a clip is the mean of its rows, centred
on the collection mean and L2-normalised. Every clip of a class with >= 2 clips queries all the others by cosine:
P@1 (the nearest clip has its class) and mAP over the full ranking, with their chance levels (a random order).
``aisfx`` (CC BY 4.0; not an extract expert) is measured through its own package code when it is installed::

    python scripts/bench_experts.py --collection data/real-audio-collection [--experts yamnet,soundnet,aisfx]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.cli import ArgumentParser  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def label_retrieval(vectors: np.ndarray, labels: list[str]) -> dict[str, float]:
    """P@1 and mAP (percent) of clip-to-clip retrieval by class label, and their chance levels."""
    x = vectors - vectors.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    lab = np.array(labels)
    p1, aps, chance = [], [], []
    for i in range(len(lab)):
        rel = (lab == lab[i])
        rel[i] = False
        if lab[i].startswith("other:") or not rel.any():
            continue
        order = np.argsort(-sims[i], kind="stable")[:-1]  # drop the query itself (last, -inf)
        hits = rel[order]
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        p1.append(float(hits[0]))
        chance.append(rel.sum() / (len(lab) - 1))
    return {"queries": len(p1), "P@1": 100 * float(np.mean(p1)), "mAP": 100 * float(np.mean(aps)),
            "chance P@1": 100 * float(np.mean(chance))}


def embed_with(name: str, clips, rels: list[str], folder: Path) -> tuple[list[np.ndarray], float]:
    """Per clip (T, D) rows and the CPU seconds the expert spent (front end + model)."""
    if name == "aisfx":
        return _embed_aisfx(rels, folder)
    from data.audio import fit_length
    from data.experts.registry import load_expert

    expert = load_expert(name, threads=1)
    t0 = time.process_time()
    inputs = [expert.frontend(fit_length(c, c.at(expert.sample_rate), expert.min_samples, name, True)[0])
              for c in clips]
    out = []
    for start in range(0, len(inputs), 16):
        out += expert.embed(inputs[start:start + 16])
    return out, time.process_time() - t0


def _embed_aisfx(rels: list[str], folder: Path) -> tuple[list[np.ndarray], float]:
    import torch
    from aisfx import inference
    from aisfx.preprocessing import spectrogram_normalize
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    weights, ds_dict = torch.load(inference.get_path_modelWeights(), map_location="cpu", weights_only=False)
    model = inference.load_bestModel(weights, ds_dict, "cpu")
    t0 = time.process_time()
    out = []
    for rel in rels:
        spec = compute_spectrogram(str(folder / rel), inference.SAMPLE_RATE, inference.SPEC_BLOCK_LENGTH,
                                   inference.SPEC_HOP_LENGTH, inference.MEL_BINS, inference.F_MIN, inference.F_MAX)
        spec = spectrogram_normalize(spec).T  # frames x mels
        if len(spec) < inference.EMB_BLOCK_LENGTH + 1:
            spec = np.vstack([spec, np.zeros((inference.EMB_BLOCK_LENGTH + 1 - len(spec), spec.shape[1]))])
        out.append(np.asarray(inference.model_get_embedding(spec, 0.5, True, model, "cpu")))
    return out, time.process_time() - t0


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", required=True, help="folder with audio/ and labels.json")
    parser.add_argument("--experts", default="yamnet,soundnet,aisfx", help="comma-separated experts to measure "
                        "(default yamnet,soundnet,aisfx)")
    args = parser.parse_args(argv)
    import torch

    from data.audio import decode

    torch.set_num_threads(1)
    folder = Path(args.collection) / "audio"
    labels = json.loads((Path(args.collection) / "labels.json").read_text())["clips"]
    rels = sorted(labels)
    t0 = time.process_time()
    clips = [decode(folder / rel) for rel in rels]
    decode_cpu = time.process_time() - t0
    seconds = sum(c.seconds for c in clips)
    print(f"{len(rels)} clips, {seconds / 60:.1f} min; decoding {seconds / decode_cpu:.0f}x real time per core")
    pooled = {}
    for name in args.experts.split(","):
        try:
            rows, cpu = embed_with(name, clips, rels, folder)
        except ImportError as err:
            print(f"{name}: not measured ({err})")
            continue
        pooled[name] = np.stack([r.mean(axis=0) for r in rows])
        quality = label_retrieval(pooled[name], [labels[r] for r in rels])
        print(f"{name}: dim {pooled[name].shape[1]}, {seconds / cpu:.0f}x real time per core (front end + model); "
              + ", ".join(f"{k} {v:.1f}" for k, v in quality.items()))
    names = list(pooled)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.concatenate([_unit(pooled[a]), _unit(pooled[b])], axis=1)
            quality = label_retrieval(both, [labels[r] for r in rels])
            print(f"{a}+{b} (concatenated, each centred and normalised): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in quality.items()))


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


if __name__ == "__main__":
    sys.exit(run_cli(main))
