"""data.word2vec reader: exact (case-sensitive) look-up, finite vectors only, a sane header (found by hand mutation
testing)."""
import numpy as np
import pytest

from data.word2vec import read_word2vec_binary, write_word2vec_binary
from utils.errors import UserError


def test_lookup_is_exact_and_case_sensitive(tmp_path):
    path = write_word2vec_binary(tmp_path / "v.bin", {"Dog": np.full(3, 1.0), "dog": np.full(3, 2.0),
                                                      "Cat": np.full(3, 3.0)})
    found, dim = read_word2vec_binary(path, ["dog", "cat"])
    assert dim == 3 and list(found) == ["dog"] and found["dog"].tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_vector_is_refused_naming_the_word(tmp_path, bad):
    path = write_word2vec_binary(tmp_path / "v.bin", {"dog": np.array([0.5, bad, 1.0]), "cat": np.ones(3)})
    with pytest.raises(UserError, match=r"v.bin: word 'dog' has a non-finite vector$"):
        read_word2vec_binary(path, ["dog", "cat"])
    assert read_word2vec_binary(path, ["cat"])[0]["cat"].tolist() == [1.0, 1.0, 1.0]  # only words asked for


@pytest.mark.parametrize("header", [b"2 0\n", b"-1 3\n"])
def test_a_header_without_a_positive_dimension_is_refused(tmp_path, header):
    path = tmp_path / "v.bin"
    path.write_bytes(header + b"dog \ncat \n")
    with pytest.raises(UserError, match=r"v.bin: bad word2vec header"):
        read_word2vec_binary(path, ["dog"])
