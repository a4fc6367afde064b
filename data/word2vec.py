"""Reader (and a writer, for tests) of the word2vec binary format, e.g. GoogleNews-vectors-negative300.bin[.gz].

Format (Mikolov's word2vec ``-binary 1``): an ASCII header ``"<vocab size> <dim>\\n"``, then per word the word's
UTF-8 bytes, one space, ``dim`` little-endian float32 values, and (usually) a newline. The GoogleNews file holds
3,000,000 words × 300 (3.6 GB), so the reader streams it once and keeps only the words asked for, stopping as soon
as all of them are found: a query costs one partial pass over the file, never the whole table in memory.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from utils.errors import UserError
from utils.io import atomic_path

_CHUNK = 1 << 22


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_word2vec_binary(path: str | os.PathLike, words: Iterable[str]) -> tuple[dict[str, np.ndarray], int]:
    """``({word: float32 (dim,)}, dim)`` for those of ``words`` that the file holds (exact, case-sensitive)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: word2vec file not found")
    wanted = set(words)
    found: dict[str, np.ndarray] = {}
    try:
        with _open(path) as fh:
            header = fh.readline(256)
            try:
                vocab, dim = (int(x) for x in header.split())
            except ValueError:
                raise UserError(f"{path}: not a word2vec binary file (header {header[:40]!r}, expected "
                                "'<vocab size> <dim>')") from None
            if vocab < 0 or dim <= 0:
                raise UserError(f"{path}: bad word2vec header {header.strip()!r}")
            width = 4 * dim
            buf, pos = b"", 0
            for i in range(vocab):
                if not wanted - found.keys():
                    break
                while True:  # word bytes up to the space, then the vector
                    space = buf.find(b" ", pos)
                    if space >= 0 and len(buf) - space - 1 >= width:
                        break
                    more = fh.read(_CHUNK)
                    if not more:
                        raise UserError(f"{path}: truncated at word {i + 1} of {vocab}")
                    buf, pos = buf[pos:] + more, 0
                word = buf[pos:space].lstrip(b"\n").decode("utf-8", errors="replace")
                start = space + 1
                if word in wanted:
                    found[word] = np.frombuffer(buf, dtype="<f4", count=dim, offset=start).astype(np.float32)
                pos = start + width
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"{path}: cannot read word2vec file ({type(err).__name__}: {err})") from None
    for word, vec in found.items():
        if not np.isfinite(vec).all():
            raise UserError(f"{path}: word {word!r} has a non-finite vector")
    return found, dim


def write_word2vec_binary(path: str | os.PathLike, vectors: Mapping[str, np.ndarray]) -> Path:
    """Write ``vectors`` in the word2vec binary format (``.gz`` compressed when the name ends so); atomic."""
    path = Path(path)
    dims = {np.asarray(v).shape for v in vectors.values()}
    if len(dims) != 1:
        raise ValueError(f"vectors must share one shape, got {sorted(dims)}")
    (dim,) = dims.pop()
    with atomic_path(path) as tmp:
        with (gzip.open(tmp, "wb") if path.suffix == ".gz" else open(tmp, "wb")) as fh:
            fh.write(f"{len(vectors)} {dim}\n".encode())
            for word, vec in vectors.items():
                fh.write(word.encode("utf-8") + b" " + np.asarray(vec, dtype="<f4").tobytes() + b"\n")
    return path
