"""data.hickle_io refuses what it cannot read faithfully, one line naming the file (and the clip), at the reader's
own level, not only through a later check of load_clotho (found by hand mutation testing)."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import hickle
import numpy as np
import pytest

from archive_fixture import EXPERT_FILES, FIXTURE, PROVENANCE, hickle4_dataset_name
from data.hickle_io import read_hickle_dict
from utils.errors import UserError

IDS = PROVENANCE["ids"]


def _v4_copy(tmp_path: Path, edit) -> Path:
    path = tmp_path / "vggish-raw.hickle"
    shutil.copy(FIXTURE / "structured-symlinks" / EXPERT_FILES["audio"], path)
    with h5py.File(path, "r+") as fh:
        edit(fh)
    return path


def _one_line_error(path: Path, *needles: str) -> None:
    with pytest.raises(UserError) as err:
        read_hickle_dict(path, IDS)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for needle in needles:
        assert needle in msg


def test_hickle4_item_the_direct_reader_does_not_know_is_never_half_decoded(tmp_path):
    """hickle.load without dill returns 'recovered' placeholders for hickle-4 content: refused, not passed on."""
    path = _v4_copy(tmp_path, lambda fh: fh.copy(fh[hickle4_dataset_name(IDS[0]).rsplit("/", 1)[0]], "data/junk"))
    _one_line_error(path, "could only partly decode this file")


def test_hickle4_item_without_its_dataset(tmp_path):
    path = _v4_copy(tmp_path, lambda fh: fh.__delitem__(hickle4_dataset_name(IDS[0])))
    _one_line_error(path, "cannot be read with hickle")


def test_hickle4_file_that_is_not_a_dict(tmp_path):
    def relabel(fh):
        fh["data"].attrs["base_type"] = np.bytes_(b"list")
    _one_line_error(_v4_copy(tmp_path, relabel), "expected a hickled dict clip_id -> array, the file holds a list")


@pytest.mark.parametrize("value, needle", [
    ("abc", "clip 'c.wav': value of type str"),
    (np.array(["x", "y"]), "clip 'c.wav': value of type ndarray"),
])
def test_values_read_by_hickle_load_must_be_numbers(tmp_path, value, needle):
    path = tmp_path / "f.hickle"  # a "/" in a key makes hickle 5 store key/value groups: the hickle.load path
    hickle.dump({"a/b.wav": np.ones((2, 4), np.float32), "c.wav": value}, str(path), mode="w")
    with pytest.raises(UserError) as err:
        read_hickle_dict(path, ["a/b.wav", "c.wav"])
    assert str(err.value).startswith(f"{path}: {needle}, expected an array (T, D)")


def test_non_str_keys_are_refused(tmp_path):
    path = tmp_path / "f.hickle"
    hickle.dump({"a/b.wav": np.ones((2, 4), np.float32), 7: np.ones((2, 4), np.float32)}, str(path), mode="w")
    with pytest.raises(UserError, match=r"f.hickle: expected str clip ids as keys, found int key 7$"):
        read_hickle_dict(path, ["a/b.wav"])
