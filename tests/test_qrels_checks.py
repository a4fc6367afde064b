"""retrieval.qrels alignment and construction checks called directly (found by hand mutation testing): duplicate
and non-finite judgements, duplicate row ids, the unknown query named, grades <= 0 dropped, graded judgements never
taken for the classic one-relevant protocol, out-of-range indices."""
import numpy as np
import pytest

from retrieval.qrels import Qrels
from utils.errors import UserError

Q, D = ["q1", "q2", "q3"], ["a.wav", "b.wav", "c.wav"]


def test_a_judgement_given_twice_is_refused():
    with pytest.raises(UserError, match=r"^t.qrels: Qrels.from_triples: query row 1 judges column 2 twice$"):
        Qrels.from_id_lists(["q2", "q1", "q2"], ["c.wav", "a.wav", "c.wav"], [1, 1, 2], Q, D, "t.qrels")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_grade_is_refused(bad):
    with pytest.raises(UserError, match=r"^t.qrels: Qrels.from_triples: non-finite gain$"):
        Qrels.from_id_lists(["q1", "q2"], ["a.wav", "b.wav"], [1, bad], Q, D, "t.qrels")


def test_grades_at_or_below_zero_are_not_relevant():
    q = Qrels.from_id_lists(["q1", "q1", "q1", "q2"], ["a.wav", "b.wav", "c.wav", "a.wav"], [-1, 0, 2, 1], Q, D)
    assert q.to_dense().tolist() == [[0, 0, 2], [1, 0, 0], [0, 0, 0]]


def test_row_ids_to_align_to_must_be_unique():
    with pytest.raises(UserError, match=r"^t.qrels: the query ids to align to contain duplicates$"):
        Qrels.from_id_lists(["q1"], ["a.wav"], [1], ["q1", "q2", "q1"], D, "t.qrels")


def test_the_first_unknown_query_is_named_and_ignore_skips_its_unknown_clips_too():
    with pytest.raises(UserError, match=r"^t.qrels: query 'zz' is not a row of the matrix being evaluated$"):
        Qrels.from_id_lists(["q1", "zz", "yy"], ["a.wav", "a.wav", "a.wav"], [1, 1, 1], Q, D, "t.qrels")
    q = Qrels.from_id_lists(["q1", "zz"], ["a.wav", "other-split.wav"], [1, 1], Q, D, "t.qrels",
                            unknown_queries="ignore")  # a qrels file covering several splits
    assert q.to_dense().tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_graded_single_judgements_are_not_the_classic_protocol():
    one_each = {"q1": {"a.wav": 1}, "q2": {"b.wav": 1}, "q3": {"c.wav": 1}}
    assert Qrels.from_mapping(one_each, Q, D).single_relevant_cols().tolist() == [0, 1, 2]
    assert Qrels.from_mapping({**one_each, "q2": {"b.wav": 2}}, Q, D).single_relevant_cols() is None


def test_indices_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"column index out of range \[0, 2\)"):
        Qrels(np.array([0, 1]), np.array([2]), np.array([1.0]), 2)
    with pytest.raises(ValueError, match=r"row index out of range \[0, 2\)"):
        Qrels.from_triples(np.array([2]), np.array([0]), None, 2, 2)
