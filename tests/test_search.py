"""search.py end to end on a tiny trained CE run: outputs, fusion of phrasings, saved index, query text, bad input."""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil

import numpy as np
import pytest

import search
from utils.errors import UserError, run_cli


@pytest.fixture(scope="module")
def tiny_run(_tiny_config_resolved, tmp_path_factory):
    from tests.conftest import TINY_CONFIG_PATH
    from trainer.trainer import fit

    cfg = copy.deepcopy(_tiny_config_resolved)
    cfg["trainer"]["save_dir"] = str(tmp_path_factory.mktemp("saved"))
    cfg["trainer"]["epochs"] = 1
    return fit(cfg, TINY_CONFIG_PATH, "cpu", quiet=True, threads=1)


def _json(capsys, argv):
    capsys.readouterr()
    assert run_cli(search.main, argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_schema_text_and_trec_outputs(tiny_run, capsys):
    out = _json(capsys, ["--run", str(tiny_run), "--k", "4", "--json", "a dog barks while rain falls", "birds chirp"])
    assert set(out) == {"run", "split", "audio", "queries", "fusion", "backend", "k", "n_clips", "text_features",
                        "index", "results", "notes", "timings_s"}
    assert out["fusion"] == "combsum" and out["backend"] == "numpy" and out["n_clips"] == 32 and out["k"] == 4
    assert out["text_features"] == "synthetic word table" and out["split"] == "test"
    res = out["results"]
    assert [r["rank"] for r in res] == [1, 2, 3, 4]
    assert all(set(r) == {"rank", "clip_id", "score", "phrasing_scores", "captions"} for r in res)
    assert all(len(r["captions"]) == 5 and len(r["phrasing_scores"]) == 2 for r in res)
    scores = [r["score"] for r in res]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose([sum(r["phrasing_scores"]) for r in res], scores, rtol=1e-6)
    test_ids = (tiny_run / "sims" / "test.json").read_text()
    assert all(r["clip_id"] in test_ids for r in res)

    assert run_cli(search.main, ["--run", str(tiny_run), "--k", "3", "a dog barks"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith("1 phrasing, fusion none (one phrasing); run ")
    assert [ln.split()[0] for ln in lines[1:] if not ln.startswith("       - ")] == ["1", "2", "3"]
    assert text.count("       - ") == 15

    assert run_cli(search.main, ["--run", str(tiny_run), "--k", "4", "--trec", "--qid", "my need",
                                 "a dog barks while rain falls", "birds chirp"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [ln[:4] for ln in lines] == [["my%20need", "Q0", r["clip_id"], str(r["rank"])] for r in res]
    assert all(ln[5] == "search-combsum" and len(ln) == 6 for ln in lines)
    np.testing.assert_allclose([float(ln[4]) for ln in lines], scores, rtol=1e-6)


def test_trained_run_index_equals_the_model_similarity_with_missing_experts(tiny_run):
    """The saved sims of the run (trainer.export.compute_sims) and, with experts knocked out, the model itself."""
    from data.clotho import load_clotho
    from model.query import encode_audio, encode_text, load_run_model
    from model.run_index import open_run_index
    from trainer.export import compute_sims

    rm = load_run_model(tiny_run)
    index, _ = open_run_index(rm, "test", log=lambda msg: None)
    split = load_clotho(rm.config, ["test"])["test"]
    n, k = len(split), split.text.shape[1]
    text_emb, w = encode_text(rm.model, split.text.reshape(n * k, *split.text.shape[2:]), split.text_lens.reshape(-1))
    np.testing.assert_allclose(index.scores(text_emb, w), np.load(tiny_run / "sims" / "test.npy"), rtol=0, atol=2e-6)
    for i, gone in ((0, ["audio"]), (3, ["vggsound"]), (4, ["audio", "vggsound"])):
        for m in gone:
            split.experts[m][i] = np.nan
            split.ind[m][i] = False
    emb, avail = encode_audio(rm.model, split.experts, split.ind)
    from retrieval.index import AudioIndex

    holey = AudioIndex(index.layout, split.clip_ids, emb, avail, split.captions)
    np.testing.assert_allclose(holey.scores(text_emb, w), compute_sims(rm.model, split), rtol=0, atol=2e-6,
                               equal_nan=True)
    assert len(holey.groups) == 4


def test_fusion_of_phrasings(tiny_run):
    quiet = dict(log=lambda msg: None)
    one = search.search_run(tiny_run, ["a dog barks"], k=32, **quiet)
    two = search.search_run(tiny_run, ["a dog barks", "a dog barks"], k=32, **quiet)
    assert one["fusion"].startswith("none") and two["fusion"] == "combsum"
    assert [r["clip_id"] for r in two["results"]] == [r["clip_id"] for r in one["results"]]
    np.testing.assert_allclose([r["score"] for r in two["results"]], [2 * r["score"] for r in one["results"]],
                               rtol=0, atol=1e-6)  # batch of 2 vs 1 in the text encoder: float rounding only

    phr = ["a dog barks", "rain falls on a tin roof", "people are talking"]
    rrf = search.search_run(tiny_run, phr, k=32, fusion="rrf", **quiet)
    ids = [r["clip_id"] for r in rrf["results"]]
    s = np.array([r["phrasing_scores"] for r in rrf["results"]]).T  # (3, 32) in rrf order
    ranks = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1) + 1
    expect = (1.0 / (60 + ranks)).sum(axis=0)
    np.testing.assert_allclose([r["score"] for r in rrf["results"]], expect, rtol=1e-6)  # float32 output
    assert np.all(np.diff(expect) <= 1e-12) and len(set(ids)) == 32
    comb = search.search_run(tiny_run, phr, k=32, **quiet)
    cs = np.array([r["phrasing_scores"] for r in comb["results"]]).sum(axis=1)
    assert np.all(np.diff(cs) <= 1e-6)


def test_faiss_back_ends_give_the_numpy_ranking(tiny_run):
    """Candidates from FAISS are re-scored exactly: with every clip a candidate, the fused top-k is identical."""
    phr = ["a dog barks", "rain falls on a tin roof"]
    ref = search.search_run(tiny_run, phr, k=8, log=lambda m: None)
    for backend in ("flat", "ivf"):
        got = search.search_run(tiny_run, phr, k=8, backend=backend, nprobe=64, depth=32, log=lambda m: None)
        assert got["backend"] == f"faiss-{backend}"
        assert [r["clip_id"] for r in got["results"]] == [r["clip_id"] for r in ref["results"]]
        np.testing.assert_allclose([r["score"] for r in got["results"]], [r["score"] for r in ref["results"]],
                                   rtol=0, atol=1e-6)


def test_qpp_fusion_needs_the_stage_and_uses_its_predictor(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("index", "qpp"))
    argv = ["--run", str(run), "--fusion", "qpp", "a dog barks", "birds chirp"]
    assert run_cli(search.main, argv) == 2
    assert "no complete QPP stage" in capsys.readouterr().err
    assert not (run / "index").exists()  # refused before the index was built, not after
    from qpp.run import run_qpp

    run_qpp(run, features=("score", "variation"), models=("linear",), n_resamples=20, plots=False,
            mapping="softmax", temperature=1.0, log=lambda *a: None)
    out = _json(capsys, argv + ["--json", "--k", "32"])
    assert out["fusion"] == "qpp" and out["notes"][0].startswith("qpp weights")
    weights_json = run / "qpp" / "weights.json"
    original = weights_json.read_text()
    weights_json.write_text(original.replace('"mapping": "softmax"', '"mapping": "rank"'))  # edited by hand
    assert run_cli(search.main, argv) == 2  # the stage's completion record catches it, as fusion.py does
    assert "changed since its output set was completed" in capsys.readouterr().err
    weights_json.write_text(original)
    s = np.array([r["phrasing_scores"] for r in out["results"]])
    weights = np.array(out["notes"][0].split(":")[0].replace("qpp weights ", "").split(", "), float)
    assert weights.sum() == pytest.approx(1, abs=2e-3) and weights.min() > 0
    np.testing.assert_allclose(s @ weights, [r["score"] for r in out["results"]], atol=2e-3)


def test_saved_index_is_reused_and_rebuilt_when_stale(tiny_run, capsys):
    argv = ["--run", str(tiny_run), "--json", "a cat meows"]
    shutil.rmtree(tiny_run / "index", ignore_errors=True)
    first = _json(capsys, argv)
    assert first["index"]["status"] == "built"
    assert (tiny_run / "index" / "split-test" / "manifest.json").is_file()
    again = _json(capsys, argv)
    assert again["index"]["status"] == "loaded" and again["results"] == first["results"]
    ckpt = tiny_run / "trained_model.pth"
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new checkpoint
    capsys.readouterr()
    assert run_cli(search.main, argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["index"]["status"] == "built"
    assert "index is stale (model.checkpoint changed); rebuilding" in captured.err
    # a rewrite that keeps size and mtime (bytes swapped, then `touch -d` back) is still a change: ctime moved
    st = ckpt.stat()
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[::-1])
    ckpt.write_bytes(data)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (ckpt.stat().st_size, ckpt.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    capsys.readouterr()
    assert run_cli(search.main, argv) == 0
    assert "index is stale (model.checkpoint changed); rebuilding" in capsys.readouterr().err
    other = _json(capsys, ["--run", str(tiny_run), "--split", "val", "--json", "a cat meows"])
    assert other["index"]["status"] == "built" and other["n_clips"] == 32
    assert sorted(p.name for p in (tiny_run / "index").iterdir()) == ["split-test", "split-val"]


@pytest.mark.parametrize("argv, message", [
    (["--k", "0", "a dog"], "argument --k: 0: must be >= 1"),
    (["   "], "query 1: empty text"),
    (["a dog", ""], "query 2: empty text"),
    ([], "QUERY: give at least one text"),
    (["--fusion", "max", "a dog"], "invalid choice"),
    (["--audio", "/nonexistent/folder", "a dog"], "/nonexistent/folder: audio folder not found"),
    (["--threads", "-1", "a dog"], "argument --threads: -1: must be >= 0"),
    ([".,;"], "no words"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_run, capsys, argv, message):
    capsys.readouterr()
    assert run_cli(search.main, ["--run", str(tiny_run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_unknown_or_incomplete_run_is_exit_2(tiny_run, tmp_path, capsys):
    assert run_cli(search.main, ["--run", str(tmp_path / "nope"), "a dog"]) == 2
    assert "run folder not found" in capsys.readouterr().err
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(tiny_run / "config.json", half / "config.json")
    assert run_cli(search.main, ["--run", str(half), "a dog"]) == 2
    assert "incomplete run (no metrics.json" in capsys.readouterr().err
    assert run_cli(search.main, ["--config", str(tmp_path / "none.json"), "a dog"]) == 2
    assert "config not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ query text
def test_synthetic_queries_get_exactly_the_archive_word_vectors(tiny_config, tiny_data_dir):
    from model.query import QueryEncoder

    root = tiny_data_dir / "structured-symlinks"
    with open(root / "structured-symlinks" / "raw-captions.pkl", "rb") as fh:
        caps = pickle.load(fh)
    with open(root / "text_embeddings" / "w2v.pkl", "rb") as fh:
        w2v = pickle.load(fh)
    cid = sorted(caps)[3]
    enc = QueryEncoder(tiny_config).encode([" ".join(caps[cid][k]).upper() + " !" for k in range(2)])
    for k in range(2):
        want = w2v[cid][k][:21]
        assert enc.lens[k] == len(want)
        np.testing.assert_array_equal(enc.text[k, :len(want)], want)
        assert not enc.text[k, len(want):].any()


def test_word2vec_binary_reader_and_googlenews_queries(tiny_config, tmp_path):
    from data.word2vec import read_word2vec_binary, write_word2vec_binary
    from model.query import QueryEncoder

    rng = np.random.default_rng(0)
    vocab = {w: rng.standard_normal(300).astype(np.float32) for w in ["dog", "barks", "Rain", "the", "café", "a"]}
    for name in ("vec.bin", "vec.bin.gz"):
        path = write_word2vec_binary(tmp_path / name, vocab)
        got, dim = read_word2vec_binary(path, ["dog", "café", "missing"])
        assert dim == 300 and sorted(got) == ["café", "dog"]
        np.testing.assert_array_equal(got["café"], vocab["café"])
    (tmp_path / "bad.bin").write_bytes(b"hello world\n")
    with pytest.raises(UserError, match="not a word2vec binary"):
        read_word2vec_binary(tmp_path / "bad.bin", ["dog"])
    (tmp_path / "short.bin").write_bytes(b"2 300\ndog " + vocab["dog"].tobytes()[:100])
    with pytest.raises(UserError, match="truncated"):
        read_word2vec_binary(tmp_path / "short.bin", ["dog"])

    cfg = copy.deepcopy(tiny_config)
    cfg["data_loader"]["args"]["data_dir"] = str(tmp_path)  # not the synthetic set: needs the GoogleNews file
    with pytest.raises(UserError, match="--word2vec PATH"):
        QueryEncoder(cfg)
    enc = QueryEncoder(cfg, tmp_path / "vec.bin").encode(["A dog barks in the rain, loudly"])
    assert enc.dropped == [["in", "loudly"]] and enc.lens[0] == 5  # "rain" found as "Rain"
    np.testing.assert_array_equal(enc.text[0, :5], np.stack([vocab[w] for w in ["a", "dog", "barks", "the", "Rain"]]))
    with pytest.raises(UserError, match="none of its words"):
        QueryEncoder(cfg, tmp_path / "vec.bin").encode(["zebras gallop"])
