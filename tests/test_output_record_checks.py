"""utils.outputs record checks called directly: a file past the hashing limit is still checked by size, a file at
the limit is hashed, a listed file that is gone and a record whose 'files' is not an object are one-line errors
(found by hand mutation testing)."""
import json

import pytest

import utils.outputs as outputs
from utils.errors import UserError
from utils.outputs import RECORD, require_complete, verify_recorded_file, write_record


def _set(tmp_path, text=b"0123456789"):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "m.npy").write_bytes(text)
    write_record(folder, "test")
    return folder


def test_a_file_too_large_to_hash_is_still_checked_by_size(tmp_path, monkeypatch):
    folder = _set(tmp_path)
    monkeypatch.setattr(outputs, "HASH_VERIFY_LIMIT", 4)
    (folder / "m.npy").write_bytes(b"0123456789xyz")  # appended to (a copy-over, a second dump)
    with pytest.raises(UserError, match=r"m.npy: changed since its output set was completed \(13 bytes, "
                                        r"complete.json says 10\); re-run x$"):
        require_complete(folder, ["m.npy"], rerun="x")
    with pytest.raises(UserError, match=r"\(13 bytes, complete.json says 10\)"):
        verify_recorded_file(folder / "m.npy")


def test_a_file_exactly_at_the_hashing_limit_is_hashed(tmp_path, monkeypatch):
    folder = _set(tmp_path)
    monkeypatch.setattr(outputs, "HASH_VERIFY_LIMIT", 10)
    (folder / "m.npy").write_bytes(b"0123456780")  # same size, other bytes
    with pytest.raises(UserError, match=r"m.npy: changed since its output set was completed \(sha256 differs"):
        require_complete(folder, ["m.npy"])


def test_a_listed_file_that_is_gone_is_named(tmp_path):
    folder = _set(tmp_path)
    (folder / "m.npy").unlink()
    with pytest.raises(UserError, match=rf"m.npy: missing although {folder / RECORD} lists it$"):
        require_complete(folder, ["m.npy"])


@pytest.mark.parametrize("files", [[], "m.npy", None])
def test_a_record_whose_files_is_not_an_object_is_refused(tmp_path, files):
    folder = _set(tmp_path)
    (folder / RECORD).write_text(json.dumps({"format": "complete-output-set/1", "writer": "test", "files": files}))
    with pytest.raises(UserError, match=rf"{folder / RECORD}: not a completion record$"):
        require_complete(folder, ["m.npy"])


def test_the_nearest_record_decides(tmp_path):
    """run/ recorded with its nested set run/sub/; sub/ rewritten later with its own record: the file is judged by
    sub/complete.json, not by the older outer entry."""
    outer = tmp_path / "run"
    (outer / "sub").mkdir(parents=True)
    (outer / "sub" / "m.npy").write_bytes(b"old")
    write_record(outer, "outer")
    (outer / "sub" / "m.npy").write_bytes(b"newer")
    write_record(outer / "sub", "inner")
    verify_recorded_file(outer / "sub" / "m.npy")
    (outer / "sub" / "m.npy").write_bytes(b"newest")
    with pytest.raises(UserError, match=rf"{outer / 'sub' / 'm.npy'}: changed since"):
        verify_recorded_file(outer / "sub" / "m.npy")
