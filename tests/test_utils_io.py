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
