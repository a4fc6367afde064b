"""TREC export: exact top-k with the stable tie policy, id encoding, and a round trip."""
import numpy as np

from retrieval.trec import decode_id, encode_id, read_trec_run, top_k, top_k_mask, write_trec_qrels, write_trec_run


def test_top_k_mask_ties_go_to_lower_columns():
    x = np.array([[0.5, 0.9, 0.5, 0.5, 0.1],
                  [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(top_k_mask(x, 2), [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(top_k_mask(x, 3).sum(1), [3, 3])
    assert top_k_mask(x, 9).all() and not top_k_mask(x, 0).any()
    cols, scores = top_k(x, 4)
    np.testing.assert_array_equal(cols, [[1, 0, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(scores[0], [0.9, 0.5, 0.5, 0.5])


def test_ids_with_spaces_round_trip():
    for raw in ["a b.wav", "100%", "tab\there", "plain"]:
        assert " " not in encode_id(raw) and decode_id(encode_id(raw)) == raw


def test_write_and_read_run(tmp_path):
    sims = np.array([[0.1, 0.7, 0.7], [0.3, 0.2, 0.9]], dtype=np.float32)
    path = write_trec_run(tmp_path / "r.trec", sims, ["q one", "q2"], ["d 0", "d1", "d2"], "tag", depth=2)
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q%20one", "Q0", "d1", "1", "0.699999988", "tag"]
    assert lines[1].split()[2:4] == ["d2", "2"]  # tie: lower column first
    assert len(lines) == 4
    run = read_trec_run(path)
    assert set(run) == {"q one", "q2"} and set(run["q2"]) == {"d2", "d 0"}
    write_trec_qrels(tmp_path / "q.trec", {"q one": ["d 0"]})
    assert (tmp_path / "q.trec").read_text() == "q%20one 0 d%200 1\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporaries left


# ---------------------------------------------------------------------------------------------- reading back
import pytest  # noqa: E402

from retrieval.qrels import Qrels, load_qrels  # noqa: E402
from retrieval.trec import read_trec_qrels, run_to_matrix, write_qrels_from_matrix  # noqa: E402
from utils.errors import UserError  # noqa: E402


def test_graded_qrels_round_trip_and_alignment(tmp_path):
    qrels = {"q one": {"d 0": 2, "d1": 1}, "q2": {"d2": 1, "d1": 0}}
    path = write_trec_qrels(tmp_path / "g.qrels", qrels)
    assert read_trec_qrels(path) == qrels
    aligned = load_qrels(path, query_ids=["q2", "q one", "q3"], doc_ids=["d1", "d2", "d 0"])
    np.testing.assert_array_equal(aligned.to_dense(), [[0, 1, 0], [1, 0, 2], [0, 0, 0]])  # grade 0 not stored
    back = write_qrels_from_matrix(tmp_path / "b.qrels", aligned, ["q2", "q one", "q3"], ["d1", "d2", "d 0"])
    assert read_trec_qrels(back) == {"q2": {"d2": 1}, "q one": {"d1": 1, "d 0": 2}}
    with pytest.raises(UserError, match="not a row"):
        load_qrels(path, query_ids=["q2"], doc_ids=["d1", "d2", "d 0"])
    assert load_qrels(path, query_ids=["q2"], doc_ids=["d1", "d2", "d 0"], unknown_queries="ignore").n_queries == 1
    with pytest.raises(UserError, match="'d 0', which is not a column"):
        load_qrels(path, query_ids=["q2", "q one"], doc_ids=["d1", "d2"])


@pytest.mark.parametrize("text, message", [
    ("q 0 d\n", r"x\.trec:1: expected 4 fields"),
    ("q 0 d 1\nq 0 d one\n", r"x\.trec:2: grade 'one' is not an integer"),
    ("q 0 d 1\n\nq 0 d 2\n", r"x\.trec:3: query 'q' judges 'd' twice"),
    ("", r"x\.trec: no judgements"),
])
def test_bad_qrels_lines_name_file_and_line(tmp_path, text, message):
    (tmp_path / "x.trec").write_text(text)
    with pytest.raises(UserError, match=message):
        read_trec_qrels(tmp_path / "x.trec")


@pytest.mark.parametrize("text, message", [
    ("q Q0 d 1 0.5\n", r"r\.trec:1: expected 6 fields"),
    ("q Q0 d 1 0.5 t\nq Q0 e x 0.4 t\n", r"r\.trec:2: rank 'x' is not an integer"),
    ("q Q0 d 1 high t\n", r"r\.trec:1: score 'high' is not a number"),
    ("q Q0 d 1 nan t\n", r"r\.trec:1: score 'nan' is not finite"),
    ("q Q0 d 1 0.5 t\nq Q0 d 2 0.4 t\n", r"r\.trec:2: query 'q' lists document 'd' twice"),
])
def test_bad_run_lines_name_file_and_line(tmp_path, text, message):
    (tmp_path / "r.trec").write_text(text)
    with pytest.raises(UserError, match=message):
        read_trec_run(tmp_path / "r.trec")


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_trec_run(tmp_path / "missing.trec")
    (tmp_path / "bin.trec").write_bytes(b"q Q0 \xff 1 0.5 t\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_trec_run(tmp_path / "bin.trec")


def test_run_to_matrix(tmp_path):
    sims = np.array([[0.1, 0.7, 0.3], [0.3, 0.2, 0.9]])
    path = write_trec_run(tmp_path / "r.trec", sims, ["a", "b"], ["x", "y", "z"], "t", depth=2)
    dense, qids, docs = run_to_matrix(read_trec_run(path), doc_ids=["x", "y", "z"])
    assert qids == ["a", "b"]
    np.testing.assert_array_equal(dense, [[-np.inf, 0.7, 0.3], [0.3, -np.inf, 0.9]])
    with pytest.raises(UserError, match="'z', which is not a known document"):
        run_to_matrix(read_trec_run(path), doc_ids=["x", "y"])


def test_ir_measures_reads_our_files(tmp_path):
    ir_measures = pytest.importorskip("ir_measures")
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((6, 8))
    qids, docs = [f"cap {i}.wav#0" for i in range(6)], [f"clip {j}.wav" for j in range(8)]
    qrels = Qrels.from_triples(np.array([0, 0, 1, 2, 3, 4, 5]), np.array([1, 2, 3, 0, 7, 5, 6]),
                               np.array([2, 1, 1, 1, 3, 1, 1.0]), 6, 8)
    run_path = write_trec_run(tmp_path / "run.trec", sims, qids, docs, "ours", depth=8)
    qrels_path = write_qrels_from_matrix(tmp_path / "qrels.trec", qrels, qids, docs)
    from retrieval.qrels_metrics import qrels_metrics

    ours = qrels_metrics(sims, qrels)
    irm = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.AP @ 10],
                                     ir_measures.read_trec_qrels(str(qrels_path)),
                                     ir_measures.read_trec_run(str(run_path)))
    assert ours["nDCG10"] == pytest.approx(100 * irm[ir_measures.nDCG @ 10], abs=1e-6)
    assert ours["mAP10"] == pytest.approx(100 * irm[ir_measures.AP @ 10], abs=1e-6)
    # ranx reads the same files: checked in bench/bench_metrics.py (its numba JIT takes ~1 min, too slow here)


@pytest.mark.parametrize("text", [
    "q%20one 0 d%200 2\nq2 0 d1 1\n\n  \nq%20one 0 d1 0\nq2 0 d%25x -1\n",   # encoded ids, blank lines, grades <= 0
    "q 0 d 1\r\nq 0 e 3\r\nr 0 d 1\r\n",                                    # CRLF
    "q 0 d 1\nr 0 e 2\nq 0 d 1\nq\t0\te   4\n",                              # a repeat with the same grade; tabs
    "q 0 d 1\nq 0 é\u2028 2\n",                                              # unicode whitespace ends a field
    "q 0 d 1 \nq 0 e +2\nq 0 f 1_0\n",                                       # int() spellings
])
def test_fast_qrels_reader_equals_the_line_reader(tmp_path, text):
    from retrieval.trec import _read_trec_qrels_by_line, read_trec_qrels_arrays

    path = tmp_path / "q.trec"
    path.write_bytes(text.encode("utf-8"))
    qids, docs, grades = read_trec_qrels_arrays(path)
    slow = _read_trec_qrels_by_line(path)
    as_dict = lambda q, d, g: {(a, b): c for a, b, c in zip(q, d, g)}  # noqa: E731
    assert as_dict(qids, docs, grades) == as_dict(*slow) and len(qids) == len(slow[0]) == len(set(zip(qids, docs)))
    expected: dict = {}
    for a, b, c in zip(*slow):
        expected.setdefault(a, {})[b] = c
    assert read_trec_qrels(path) == expected


@pytest.mark.parametrize("text, message", [
    ("q 0 d 1\nq 0 e 1 x\n", r"q\.trec:2: expected 4 fields"),
    ("q 0 d 1\nq 0 e\u20281 2\n", r"q\.trec:2: expected 4 fields"),  # two 4-field halves split by U+2028: one line
    ("q 0 d 1\nq 0 e 1.0\n", r"q\.trec:2: grade '1.0' is not an integer"),
    ("q 0 d 1\nr 0 d 1\nq 0 d 2\n", r"q\.trec:3: query 'q' judges 'd' twice, with grades 1 and 2"),
    ("\n\n", r"q\.trec: no judgements"),
])
def test_fast_qrels_reader_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "q.trec").write_bytes(text.encode("utf-8"))
    with pytest.raises(UserError, match=message):
        load_qrels(tmp_path / "q.trec", query_ids=["q", "r"], doc_ids=["d", "e"])


def test_top_k_orders_tied_scores_by_column_and_run_lines_follow_it(tmp_path):
    """Rank order = score descending, then column ascending (the documented tie policy), checked against a plain
    sort, and written as such: the rank column of the run file follows that order."""
    rng = np.random.default_rng(0)
    block = rng.integers(0, 4, (30, 40)).astype(np.float32)  # many ties
    cols, scores = top_k(block, 25)
    for row, c, s in zip(block, cols, scores):
        want = sorted(range(block.shape[1]), key=lambda j: (-row[j], j))[:25]
        assert c.tolist() == want and s.tolist() == row[want].tolist()
    write_trec_run(tmp_path / "r.trec", block[:2], ["a", "b"], [f"d{j}" for j in range(40)], "t", depth=25)
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert [ln.split()[2] for ln in lines[:25]] == [f"d{j}" for j in cols[0]]
    assert [int(ln.split()[3]) for ln in lines[:25]] == list(range(1, 26))


def test_run_rows_keep_their_query_ids_across_row_blocks(tmp_path, monkeypatch):
    import retrieval.trec as trec

    monkeypatch.setattr(trec, "_row_block", lambda n_cols, per_cell=2: 3)  # 3 query rows per block
    sims = np.random.default_rng(1).random((10, 6))
    write_trec_run(tmp_path / "r.trec", sims, [f"q{i}" for i in range(10)], [f"d{j}" for j in range(6)], "t", 6)
    run = read_trec_run(tmp_path / "r.trec")
    for i in range(10):
        assert run[f"q{i}"] == pytest.approx({f"d{j}": float(sims[i, j]) for j in range(6)}, rel=1e-8)
