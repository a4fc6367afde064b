"""The ``lexical`` block: TF-IDF/SVD, caption length and IDF/SCQ statistics of the caption queries.

Fitted transforms: :class:`LexicalFeaturizer` is fitted on the fitting captions only (per fold), so that no statistic
of the evaluation captions leaks into the features.
"""
from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


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
