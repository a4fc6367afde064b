"""A small synthetic run folder (``sims/{split}.npy`` + manifests, ``complete.json`` + ``metrics.json`` so it counts
as finished) for tests and demos.

Development helper only: the pipeline never calls it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.sims_io import build_manifest, save_sims
from utils.io import write_json
from utils.outputs import write_run_record


def make_synthetic_run(run_dir: str | Path, n_clips: dict[str, int] | None = None, k: int = 5, seed: int = 0,
                       dim: int = 32, signal: float = 0.6, complete: bool = True) -> Path:
    """A small run folder whose caption quality genuinely varies (for tests and demos).

    Each caption has a hidden quality q; its embedding is ``q·audio_clip + (1−q)·noise`` and its text mentions the
    clip's sound class more precisely when q is high, so text, score and variation features all carry signal.
    """
    rng = np.random.default_rng(seed)
    n_clips = n_clips or {"val": 60, "test": 80}
    run_dir = Path(run_dir)
    classes = ["dog", "rain", "car", "bird", "water", "door", "wind", "crowd", "engine", "bell", "train", "music"]
    good = ["loudly", "barking", "dripping", "passing", "chirping", "flowing", "slamming", "howling", "cheering"]
    vague = ["something", "some", "noise", "sound", "happens", "there", "thing"]
    for split, n in n_clips.items():
        audio = rng.normal(size=(n, dim))
        audio /= np.linalg.norm(audio, axis=1, keepdims=True)
        cls = rng.integers(0, len(classes), n)
        q = rng.beta(2, 2, size=(n, k))
        noise = rng.normal(size=(n, k, dim))
        noise /= np.linalg.norm(noise, axis=2, keepdims=True)
        text = signal * q[..., None] * audio[:, None, :] + (1 - signal * q[..., None]) * noise
        text /= np.linalg.norm(text, axis=2, keepdims=True)
        sims = (text.reshape(n * k, dim) @ audio.T).astype(np.float32)
        caps = []
        for i in range(n):
            row = []
            for j in range(k):
                if q[i, j] > 0.5:
                    words = ["a", classes[cls[i]]] + list(rng.choice(good, 1 + int(4 * q[i, j])))
                else:
                    words = list(rng.choice(vague, 2 + int(3 * (1 - q[i, j])))) + (["a", classes[cls[i]]] if rng.random() < 0.3 else [])
                row.append(" ".join(words))
            caps.append(row)
        man = build_manifest(split, [f"clip{i:04d}.wav" for i in range(n)], caps, {"synthetic_seed": seed}, k)
        save_sims(run_dir / "sims", split, sims, man)
    if complete:
        write_run_record(run_dir, "qpp.synthetic_run")
        write_json(run_dir / "metrics.json", {"synthetic": True})
    return run_dir
