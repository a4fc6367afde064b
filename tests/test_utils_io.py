import json

import numpy as np
import pytest

from utils.errors import UserError
from utils.io import atomic_path, read_json, write_json


def test_write_json_is_strict_and_maps_nan_to_null(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"tau": float("nan"), "arr": np.array([1.0, np.inf]), "n": np.int64(3), "x": np.float32(0.5)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"tau": None, "arr": [1.0, None], "n": 3, "x": 0.5}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="bad.json"):
        read_json(bad)
    with pytest.raises(UserError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("change", ["same-size rewrite", "swap with a twin", "replace by rename"])
def test_file_stamp_sees_rewrites_that_keep_size_and_mtime(tmp_path, change):
    """The feature caches (extract, search) trust a file whose stamp matches: a swap of two equal-size files whose
    mtimes are then set back (`touch -d`) must not look unchanged."""
    import os
    import time

    from data.audio_features import _read_cache, _write_cache
    from utils.io import file_stamp

    a, b = tmp_path / "dog.wav", tmp_path / "cow.wav"
    a.write_bytes(b"dog-bytes")
    b.write_bytes(b"cow-bytes")
    st = a.stat()
    before = file_stamp(a)
    entry = tmp_path / "entry.npz"
    _write_cache(entry, "dog.wav", before, np.ones((2, 3), np.float32), False, 1.0, None)
    assert _read_cache(entry, "dog.wav", file_stamp(a)) is not None  # unchanged: a hit
    time.sleep(0.05)  # file times come from the kernel's coarse clock (ticks of 1-10 ms): edits are not this fast
    if change == "same-size rewrite":
        a.write_bytes(b"cat-bytes")
    elif change == "swap with a twin":
        data = b.read_bytes()
        b.write_bytes(a.read_bytes())
        a.write_bytes(data)
    else:
        tmp = tmp_path / "new.wav"
        tmp.write_bytes(b"owl-bytes")
        os.replace(tmp, a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (a.stat().st_size, a.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert file_stamp(a) != before
    assert _read_cache(entry, "dog.wav", file_stamp(a)) is None  # a miss: recomputed, never the old features
