"""retrieval.sims_io checks called directly: the query named for a non-finite value beyond the first row block,
bare matrices of integers or of the wrong row count, qrels naming a clip that is no column (found by hand mutation
testing)."""
import numpy as np
import pytest

import retrieval.sims_io as sims_io
from retrieval.sims_io import build_manifest, read_bare_sims, validate
from utils.errors import UserError


def test_non_finite_value_beyond_the_first_row_block_names_its_own_query(monkeypatch):
    monkeypatch.setattr(sims_io, "_row_block", lambda n_cols, per_cell=8: 2)  # blocks of rows 0-1, 2-3, 4-5
    manifest = build_manifest("test", ["a.wav", "b.wav", "c.wav"], captions_per_clip=2)
    sims = np.zeros((6, 3), np.float32)
    sims[5, 1] = np.inf
    with pytest.raises(UserError) as err:
        validate(sims, manifest, "m.npy")
    assert str(err.value) == "m.npy: non-finite similarity inf at row 5 (query 'c.wav#1'), column 1 (clip 'b.wav')"


def test_bare_matrix_of_integers_is_refused(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.arange(10 * 2, dtype=np.int64).reshape(10, 2))
    with pytest.raises(UserError, match=r"m.npy: expected a float matrix, got dtype int64$"):
        read_bare_sims(path, captions_per_clip=5)


def test_bare_matrix_row_count_must_be_captions_per_clip_times_columns(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.zeros((7, 2), np.float32))
    with pytest.raises(UserError, match=r"m.npy: 7 rows is not captions_per_clip \(5\) x 2 columns$"):
        read_bare_sims(path, captions_per_clip=5)


def test_qrels_naming_a_clip_that_is_not_a_column_is_refused():
    manifest = build_manifest("test", ["a.wav", "b.wav"], captions_per_clip=1)
    manifest.qrels["b.wav#0"] = ["z.wav"]
    with pytest.raises(UserError, match=r"^j.json: query 'b.wav#0' is relevant to clip 'z.wav', which is not a "
                                        r"column$"):
        validate(np.zeros((2, 2), np.float32), manifest, "m.npy", "j.json")
