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
