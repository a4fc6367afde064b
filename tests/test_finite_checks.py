"""data.finite on hand-made buffers: every row is checked (chunk edges too), the first bad clip / caption is named
and the count of affected ones is shown from two on (found by hand mutation testing)."""
from pathlib import Path

import numpy as np
import pytest

import data.finite as finite
from utils.errors import UserError


@pytest.mark.parametrize("chunk", [1, 3, 4, 256])
def test_every_row_is_checked_across_chunk_edges(monkeypatch, chunk):
    monkeypatch.setattr(finite, "CHUNK_ROWS", chunk)
    for i in range(10):
        values = np.zeros((10, 2, 3), np.float32)
        values[i, 1, 2] = np.nan
        assert finite.nonfinite_rows(values).tolist() == [i]
        rows = np.ones(10, bool)
        rows[i] = False
        assert finite.nonfinite_rows(values, rows).tolist() == []  # a missing clip's NaN row is not an error


def test_expert_rows_name_the_first_clip_and_count_from_two(tmp_path):
    ids = ["a.wav", "b.wav", "c.wav"]
    values = np.zeros((3, 4, 2), np.float32)
    present = np.ones(3, bool)
    values[1, 0, 0] = np.inf
    with pytest.raises(UserError) as err:
        finite.check_expert_rows(Path("f.hickle"), "val", ids, values, present, "expert 'audio' features")
    assert str(err.value).startswith("f.hickle: clip 'b.wav' (val): non-finite expert 'audio' features (1 +inf)")
    assert "affected" not in str(err.value)
    values[2, 3, 1] = -np.inf
    with pytest.raises(UserError) as err:
        finite.check_expert_rows(Path("f.hickle"), "val", ids, values, present, "expert 'audio' features")
    assert "clip 'b.wav'" in str(err.value) and str(err.value).endswith("; 2 clips of val_list.txt affected")


def test_text_rows_name_clip_and_caption_and_count_from_two():
    ids = ["a.wav", "b.wav"]
    text = np.zeros((2, 5, 3, 4), np.float32)
    text[1, 3, 2, 0] = np.nan
    with pytest.raises(UserError) as err:
        finite.check_text_rows(Path("w2v.pkl"), "test", ids, text)
    assert str(err.value) == "w2v.pkl: clip 'b.wav' (test) caption 3: non-finite word vectors (1 NaN)"
    text[1, 4, 0, 0] = np.inf
    with pytest.raises(UserError) as err:
        finite.check_text_rows(Path("w2v.pkl"), "test", ids, text)
    assert str(err.value) == ("w2v.pkl: clip 'b.wav' (test) caption 3: non-finite word vectors (1 NaN); "
                              "2 captions of test_list.txt affected")
