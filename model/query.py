"""Typed text -> the model's text input; a trained run's model; its audio and text embeddings (docs/SEARCH.md).

Text features follow the run's ``experts.text_feat``, made the way its training captions were made:

* ``minilm``: the offline MiniLM's token vectors of the lowercased word tokens (``data.text_features``). WordPiece
  covers every word, so no word is unknown.
* ``w2v`` on the synthetic set (its folder holds ``synthetic-meta.json``): the generator's own deterministic word
  table (``data.synthetic_vocab.WordVectors`` with the set's spec). It gives every word a vector (an unseen word gets
  its own hash-seeded vector, exactly as the generator would), so no word is unknown either.
* ``w2v`` on real CLOTHO: the GoogleNews vectors the archive was made with, read from ``--word2vec FILE``. A word
  absent from it (also in Title case) is dropped, as the original's preparation did after its lemma / spelling
  fallbacks; the dropped words are reported; a query with no known word is an error.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from data.clotho import TEXT_DIMS, root_feat_dir
from model.build import build_model
from utils.errors import UserError
from utils.outputs import RUN_MODEL, require_complete_run

GOOGLENEWS_HINT = ("pass --word2vec PATH to the GoogleNews vectors (GoogleNews-vectors-negative300.bin or .bin.gz, "
                   "https://s3.amazonaws.com/dl4j-distribution/GoogleNews-vectors-negative300.bin.gz)")
AUDIO_CHUNK = 256


# ----------------------------------------------------------------------------------------------------------------
# a run's model
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunModel:
    run_dir: Path
    config: dict
    model: torch.nn.Module
    config_hash: str


def load_run_model(run_dir: str | Path) -> RunModel:
    """The best checkpoint of a complete run, in eval mode on the CPU."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    ckpt_path = run_dir / RUN_MODEL
    cfg_path = run_dir / "config.json"
    require_complete_run(run_dir, [cfg_path.name, ckpt_path.name])  # finished, recorded, these files as recorded
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{cfg_path}: invalid JSON ({err.msg})") from None
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt / foreign file
        raise UserError(f"{ckpt_path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise UserError(f"{ckpt_path}: does not match {cfg_path} ({str(err).splitlines()[0]})") from None
    model.eval()
    return RunModel(run_dir, config, model, str(ckpt.get("config_hash", "")))


def layout_of(model) -> tuple[list[str], list[int], bool]:
    """(experts in the model's order, embedding size of each, renormalise missing experts?)."""
    mods = list(model.modalities)
    return mods, [int(model.out_dims[m]) for m in mods], not model.keep_missing_modalities


@torch.no_grad()
def encode_audio(model, experts: dict[str, np.ndarray], ind: dict[str, np.ndarray],
                 chunk: int = AUDIO_CHUNK, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Clips' expert features -> ``(N, D)`` concatenated unit-norm expert embeddings and ``(N, M)`` availability."""
    from tqdm import tqdm

    mods = list(model.modalities)
    n = len(next(iter(ind.values())))
    dims = [int(model.out_dims[m]) for m in mods]
    out = np.empty((n, sum(dims)), dtype=np.float32)
    off = np.cumsum([0, *dims])
    for start in tqdm(range(0, n, chunk), desc="encode audio", unit="block", disable=not progress, leave=False):
        sl = slice(start, start + chunk)
        enc = model.encode_audio({m: torch.as_tensor(np.asarray(experts[m][sl], dtype=np.float32)) for m in mods},
                                 {m: torch.as_tensor(np.asarray(ind[m][sl], dtype=bool)) for m in mods})
        for i, m in enumerate(mods):
            out[sl, off[i]:off[i + 1]] = enc[m].float().numpy()
    avail = np.stack([np.asarray(ind[m], dtype=bool) for m in mods], axis=1)
    return out, avail


@torch.no_grad()
def encode_text(model, text: np.ndarray, text_lens: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """``(P, L, Dt)`` token features -> per-expert ``(P, D_m)`` text embeddings and ``(P, M)`` MoE weights."""
    emb, weights = model.encode_text(torch.as_tensor(text[:, None], dtype=torch.float32),
                                     torch.as_tensor(np.asarray(text_lens)[:, None], dtype=torch.int64))
    return [emb[m].float().numpy() for m in model.modalities], weights.float().numpy()


# ----------------------------------------------------------------------------------------------------------------
# text -> token features
# ----------------------------------------------------------------------------------------------------------------
def no_words_message(i: int, query) -> str:
    return f"query {i} ({query!r}): no words (give a description, e.g. \"a dog barks\")"


def check_queries(queries: Sequence[str]) -> None:
    """Every query has at least one word (``data.text_features.tokenize``: letters / digits); otherwise one line
    naming the first that has none. Both search modes call this before any model is loaded or index built."""
    from data.text_features import tokenize

    if not queries:
        raise UserError("QUERY: give at least one text to search for")
    for i, q in enumerate(queries, start=1):
        if not isinstance(q, str) or not q.strip():
            raise UserError(f"query {i}: empty text")
        if not tokenize(q):
            raise UserError(no_words_message(i, q))


def minilm_limit() -> int:
    """Word pieces MiniLM reads of one text (its max_seq_length less [CLS] and [SEP]); the rest is cut."""
    from data.text_features import load_minilm

    return int(load_minilm().max_seq_length) - 2


def minilm_truncation_note(i: int, text: str, cap: int, reader: str) -> str | None:
    """The note for query ``i`` when ``text`` has more than ``cap`` MiniLM word pieces (None: it fits)."""
    from data.text_features import load_minilm

    tok = load_minilm().tokenizer
    counts = [len(tok.tokenize(w)) for w in text.split()]  # per word: no "longer than the model" warning
    total = sum(counts)
    if total <= cap:
        return None
    words = int(np.searchsorted(np.cumsum(counts), cap, side="right"))
    return (f"query {i} truncated: {reader} reads at most {cap} word pieces; kept the first {cap} of its {total} "
            f"(its first {words} of {len(counts)} words)")


def words_truncation_note(i: int, n: int, cap: int, reader: str, what: str = "words") -> str | None:
    if n <= cap:
        return None
    return f"query {i} truncated: {reader} reads at most {cap} words; kept the first {cap} of its {n} {what}"


@dataclasses.dataclass
class EncodedQueries:
    text: np.ndarray        # float32 (P, L, Dt), zero padded
    lens: np.ndarray        # int64 (P,)
    dropped: list[list[str]]  # per query, the words that have no vector (w2v only)
    notes: list[str] = dataclasses.field(default_factory=list)  # queries cut to the text limit


class QueryEncoder:
    """Turn typed queries into the text features the run was trained on (see the module docstring)."""

    def __init__(self, config: dict, word2vec: str | Path | None = None):
        self.text_feat = config["experts"]["text_feat"]
        if self.text_feat not in TEXT_DIMS:
            raise UserError(f"config: experts.text_feat: unknown {self.text_feat!r}")
        self.dim = TEXT_DIMS[self.text_feat]
        self.max_tokens = int(config["data_loader"]["args"]["max_tokens"]["text"])
        self.word2vec = Path(word2vec) if word2vec else None
        self._synthetic = None
        if self.text_feat == "w2v" and self.word2vec is None:
            meta = root_feat_dir(config) / "synthetic-meta.json"
            if not meta.is_file():
                raise UserError(f"run trained on word2vec text features (experts.text_feat=w2v) of "
                                f"{root_feat_dir(config)}, which is not the synthetic set: {GOOGLENEWS_HINT}")
            self._synthetic = _synthetic_words(meta)
        self.source = ("minilm" if self.text_feat == "minilm" else
                       "synthetic word table" if self._synthetic is not None else f"word2vec {self.word2vec}")

    def tokens(self, query: str) -> list[str]:
        if self.text_feat == "minilm":
            from data.text_features import tokenize
            return tokenize(query)
        if self._synthetic is not None:
            from data.synthetic_vocab import _tokenize  # the generator's own tokeniser: same tokens as its captions
            return _tokenize(query)
        from data.text_features import tokenize
        return tokenize(query)

    def encode(self, queries: Sequence[str]) -> EncodedQueries:
        check_queries(queries)
        toks = []
        for i, q in enumerate(queries, start=1):
            t = self.tokens(q)
            if not t:
                raise UserError(no_words_message(i, q))
            toks.append(t)
        limit = f"the run (data_loader.args.max_tokens.text = {self.max_tokens})"
        if self.text_feat == "minilm":
            from data.text_features import token_embeddings
            texts = [" ".join(t) for t in toks]
            vecs = token_embeddings(texts, progress=False)
            dropped = [[] for _ in toks]
            cap, reader = min(self.max_tokens, minilm_limit()), limit if self.max_tokens <= minilm_limit() else "MiniLM"
            notes = [minilm_truncation_note(i, t, cap, reader) for i, t in enumerate(texts, start=1)]
        elif self._synthetic is not None:
            vecs = [self._synthetic.embed(t) for t in toks]
            dropped = [[] for _ in toks]
            notes = [words_truncation_note(i, len(v), self.max_tokens, limit) for i, v in enumerate(vecs, start=1)]
        else:
            vecs, dropped = self._googlenews(toks, queries)
            notes = [words_truncation_note(i, len(v), self.max_tokens, limit, "words with a vector")
                     for i, v in enumerate(vecs, start=1)]
        text = np.zeros((len(toks), self.max_tokens, self.dim), dtype=np.float32)
        lens = np.zeros(len(toks), dtype=np.int64)
        for i, v in enumerate(vecs):
            n = min(len(v), self.max_tokens)  # keep the first tokens, as the loader does
            text[i, :n] = v[:n]
            lens[i] = n
        return EncodedQueries(text, lens, dropped, [n for n in notes if n])

    def _googlenews(self, toks, queries):
        from data.word2vec import read_word2vec_binary

        wanted = {w for t in toks for w in t} | {w.title() for t in toks for w in t}
        table, dim = read_word2vec_binary(self.word2vec, wanted)
        if dim != self.dim:
            raise UserError(f"{self.word2vec}: {dim}-d vectors, the run needs {self.dim}-d")
        vecs, dropped = [], []
        for i, t in enumerate(toks):
            kept = [table.get(w, table.get(w.title())) for w in t]
            dropped.append([w for w, v in zip(t, kept) if v is None])
            kept = [v for v in kept if v is not None]
            if not kept:
                raise UserError(f"query {i + 1} ({queries[i]!r}): none of its words is in {self.word2vec}")
            vecs.append(np.stack(kept))
        return vecs, dropped


def _synthetic_words(meta_path: Path):
    from data.synthetic_generator import SyntheticSpec
    from data.synthetic_vocab import WordVectors

    try:
        spec = json.loads(meta_path.read_text())["spec"]
    except (json.JSONDecodeError, KeyError) as err:
        raise UserError(f"{meta_path}: unreadable synthetic meta ({err})") from None
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in fields}
    return WordVectors(SyntheticSpec(**kw))
