"""The QPP feature matrix: feature groups, their blocks per split, and the fit/eval matrices every model gets.

The predictors come in three groups, one module per block (docs/QPP.md §Features has every formula):

* ``text`` (pre-retrieval, from the caption only): ``minilm``, the MiniLM sentence embedding (384-d,
  :mod:`qpp.caption_embeddings`); ``lexical`` (:mod:`qpp.lexical_features`), TF-IDF (uni+bigrams) fitted on the
  **fitting captions only**, reduced by TruncatedSVD (64-d) fitted on the same captions; caption length in tokens;
  IDF statistics over the fitting captions (avg/max/min IDF, avg/max/sum SCQ, OOV share).
* ``score`` (post-retrieval, from the caption's row of sims; :mod:`qpp.score_features`): top-1, top-1 − top-2,
  NQC-style std of the top-k, WIG-style mean(top-k) − mean(row), SMV, row mean/std — on raw cosines and on the
  per-row z-scored row.
* ``variation`` (query variations = the other K−1 captions of the same clip; :mod:`qpp.variation_features`): top-k
  overlap, Spearman correlation of score rows, Pearson correlation to the leave-one-out centroid row, top-1
  agreement, pseudo-relevance rank.

Everything is vectorised over queries (row blocks, ``np.argpartition`` for top-k); no Python loop per query.
Stateless blocks (``minilm``, ``score``, ``variation``, caption length) are computed once per split; fitted blocks
(TF-IDF/SVD, IDF stats) through :class:`LexicalFeaturizer` fitted on the fitting captions.
"""
from __future__ import annotations

import numpy as np

from qpp.caption_embeddings import sentence_embeddings
from qpp.lexical_features import LexicalFeaturizer
from qpp.score_features import SCORE_NAMES, score_features
from qpp.variation_features import VARIATION_NAMES, variation_features

FEATURE_GROUPS = ("text", "minilm", "lexical", "score", "variation")
GROUP_HELP = {
    "text": "all pre-retrieval features (minilm + lexical)",
    "minilm": "MiniLM sentence embedding only (the fork's features)",
    "lexical": "TF-IDF/SVD + length + IDF/SCQ stats (fitted on the fitting captions)",
    "score": "post-retrieval score-distribution features of the caption's sims row",
    "variation": "agreement with the other captions of the same clip",
}
NEEDS_CAPTIONS = {"text", "minilm", "lexical"}


def expand_groups(groups) -> list[str]:
    """Validate group names; ``text`` stands for ``minilm`` + ``lexical``. Returns the base blocks, in order."""
    blocks: list[str] = []
    for g in groups:
        if g not in FEATURE_GROUPS:
            raise ValueError(g)
        for b in (("minilm", "lexical") if g == "text" else (g,)):
            if b not in blocks:
                blocks.append(b)
    return blocks


class SplitFeatures:
    """Stateless feature blocks of one split, computed lazily and once."""

    def __init__(self, sims: np.ndarray, captions: list[str], k: int, cache_dir=None, device: str = "cpu"):
        self.sims, self.captions, self.k = sims, list(captions), k
        self.cache_dir, self.device = cache_dir, device
        self._blocks: dict[str, np.ndarray] = {}

    def block(self, name: str) -> np.ndarray:
        if name not in self._blocks:
            if name == "minilm":
                self._blocks[name] = sentence_embeddings(self.captions, self.cache_dir, self.device).astype(np.float64)
            elif name == "score":
                self._blocks[name] = score_features(self.sims)
            elif name == "variation":
                self._blocks[name] = variation_features(self.sims, self.k)
            else:
                raise KeyError(name)
        return self._blocks[name]


def block_names(name: str, lexical: LexicalFeaturizer | None = None, dim: int = 384) -> list[str]:
    if name == "minilm":
        return [f"minilm_{i}" for i in range(dim)]
    if name == "score":
        return list(SCORE_NAMES)
    if name == "variation":
        return list(VARIATION_NAMES)
    if name == "lexical":
        return lexical.names()
    raise KeyError(name)


def build_matrix(blocks: list[str], fit: SplitFeatures, fit_rows: np.ndarray, ev: SplitFeatures,
                 ev_rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(X_fit, X_eval, names)`` for the given blocks; the lexical block is fitted on ``fit``'s rows only."""
    xf, xe, names = [], [], []
    for b in blocks:
        if b == "lexical":
            fit_caps = [fit.captions[i] for i in fit_rows]
            lex = LexicalFeaturizer(seed=seed).fit(fit_caps)
            xf.append(lex.transform(fit_caps))
            xe.append(lex.transform([ev.captions[i] for i in ev_rows]))
            names += lex.names()
        else:
            a, e = fit.block(b)[fit_rows], ev.block(b)[ev_rows]
            xf.append(a)
            xe.append(e)
            names += block_names(b, dim=a.shape[1])
    x_fit, x_eval = np.hstack(xf), np.hstack(xe)
    flatten_constant_columns(x_fit, x_eval)
    return x_fit, x_eval, names


def flatten_constant_columns(x_fit: np.ndarray, x_eval: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Set every feature that is constant over the fitting rows (up to rounding) to that constant, on both sides.

    Such a feature carries nothing a model can learn, but when its fitting values differ only by rounding (a top-50
    statistic when the fitting collection has <= 50 clips: std ~1e-17), a standardising model (linear, mlp) divides
    by that noise and its predictions blew up to ~1e14 on the evaluation rows, where the feature does vary. In place;
    returns the mask of flattened columns.
    """
    if len(x_fit) == 0:
        return np.zeros(x_fit.shape[1], dtype=bool)
    span = x_fit.max(axis=0) - x_fit.min(axis=0)
    constant = span <= rtol * np.maximum(1.0, np.abs(x_fit).max(axis=0))
    if constant.any():
        level = x_fit[:, constant].mean(axis=0)
        x_fit[:, constant] = level
        x_eval[:, constant] = level
    return constant
