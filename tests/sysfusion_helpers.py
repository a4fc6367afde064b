"""Tiny run folders whose systems share one latent truth (for the fusion-of-systems tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.sims_io import build_manifest, save_sims
from utils.io import write_json
from utils.outputs import write_run_record


def latent(n: int, k: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    audio = rng.normal(size=(n, dim))
    text = np.repeat(audio, k, axis=0) + 1.2 * rng.normal(size=(n * k, dim))
    return audio, text


def system_sims(audio, text, quality: float, seed: int) -> np.ndarray:
    """Cosine-like sims of a system: the true similarity blurred by system-specific noise (quality 0 = pure noise)."""
    rng = np.random.default_rng(seed)
    true = text @ audio.T / audio.shape[1]
    return (quality * true + (1 - quality) * rng.normal(scale=true.std(), size=true.shape)).astype(np.float32)


def make_run(root: Path, name: str, sims_by_split: dict[str, np.ndarray], k: int, captions=None) -> Path:
    run = root / name / "2026-01-01_00-00-00_seed-0"
    for split, sims in sims_by_split.items():
        n = sims.shape[1]
        caps = captions[split] if captions else [[f"{split} clip {i} caption {j}" for j in range(k)] for i in range(n)]
        man = build_manifest(split, [f"{split}_clip{i:03d}.wav" for i in range(n)], caps, {"run": name}, k)
        save_sims(run / "sims", split, sims, man)
    write_run_record(run, "tests")
    write_json(run / "metrics.json", {"synthetic": True})
    return run


def three_systems(root: Path, n: int = 40, k: int = 5, noise_perfect_on_test: bool = False) -> list[Path]:
    """'good' and 'fair' are genuine (independent noise), 'noise' is pure noise on val; on test 'noise' is
    optionally perfect, which a val-learned weight must not notice."""
    data = {split: latent(n, k, 16, seed) for split, seed in (("val", 1), ("test", 2))}
    runs = []
    for i, (name, quality) in enumerate((("good", 0.7), ("fair", 0.5), ("noise", 0.0))):
        by_split = {}
        for split, (audio, text) in data.items():
            sims = system_sims(audio, text, quality, 10 * i + (split == "test"))
            if name == "noise" and split == "test" and noise_perfect_on_test:
                sims = np.repeat(np.eye(n, dtype=np.float32), k, axis=0)
            by_split[split] = sims
        runs.append(make_run(root, name, by_split, k))
    return runs
