"""The original archive's formats, proven on genuine files (issue 8 part 1).

tests/fixtures/clotho-hickle4 was written by scripts/make_hickle4_fixture.py under the original's pinned stack
(Python 3.7.16, numpy 1.20.3, h5py 2.10.0, hickle 4.0.4, dill 0.3.3); expected.npz holds the same values in a
neutral format. hickle-5 files (data.synthetic) must keep working.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import hickle
import numpy as np
import pytest

from archive_fixture import (EXPERT_FILES, FIXTURE, FIXTURE_CONFIG, PROVENANCE, W2V_FILE, assert_one_line_error,
                             cli_args, copy_fixture, expected, run_module)
from data.clotho import load_clotho, main as clotho_main, read_hickle_subset
from utils.config import load_config
from utils.errors import run_cli

IDS = PROVENANCE["ids"]
ROOT = FIXTURE / "structured-symlinks"


def _config(data_dir: Path = FIXTURE) -> dict:
    return load_config(FIXTURE_CONFIG, f"data_loader.args.data_dir={data_dir}")


def test_fixture_was_written_by_the_original_stack():
    assert PROVENANCE["stack"] == {"python": "3.7.16", "numpy": "1.20.3", "h5py": "2.10.0", "hickle": "4.0.4",
                                   "dill": "0.3.3"}
    for rel in EXPERT_FILES.values():
        with h5py.File(ROOT / rel, "r") as fh:
            assert fh.attrs["HICKLE_VERSION"] == "4.0.4"
            assert fh.attrs["HICKLE_PYTHON_VERSION"] == "3.7.16"
            assert len(fh["data"]) == len(IDS)
    for rel in (W2V_FILE, "structured-symlinks/raw-captions.pkl"):
        assert (ROOT / rel).read_bytes()[:2] == b"\x80\x03"  # pickle protocol 3: Python 3.7's default
    assert sorted(c for s in PROVENANCE["splits"].values() for c in s) == sorted(IDS)


@pytest.mark.parametrize("expert", sorted(EXPERT_FILES))
def test_reader_returns_exactly_what_hickle4_wrote(expert):
    values = read_hickle_subset(ROOT / EXPERT_FILES[expert], IDS + ["not-in-file.wav"])
    assert list(values) == IDS
    ref = expected()
    dtypes = set()
    for i, cid in enumerate(IDS):
        want = ref[f"{expert}_{i}"]
        if cid == PROVENANCE["missing"][expert]:
            assert want.shape == () and np.isnan(want)
            assert isinstance(values[cid], float) and np.isnan(values[cid])
            continue
        got = values[cid]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bitwise
        dtypes.add(got.dtype.name)
    assert dtypes == ({"float32", "float64"} if expert == "audio" else {"float32"})  # one float64 clip survives


def test_reader_reads_only_the_wanted_clips():
    wanted = PROVENANCE["splits"]["test"]
    assert list(read_hickle_subset(ROOT / EXPERT_FILES["vggsound"], wanted)) == wanted


def test_load_clotho_on_the_fixture_matches_the_written_arrays():
    cfg = _config()
    mt = cfg["data_loader"]["args"]["max_tokens"]
    data = load_clotho(cfg, ["train", "val", "test"])
    ref = expected()
    with open(ROOT / W2V_FILE, "rb") as fh:
        assert pickle.load(fh, encoding="latin1").keys() == set(IDS)
    truncated = {"audio": 0, "vggsound": 0, "text": 0}
    for split, d in data.items():
        assert d.clip_ids == PROVENANCE["splits"][split]
        for i, cid in enumerate(d.clip_ids):
            g = IDS.index(cid)
            assert d.captions[i] == [" ".join(t) for t in PROVENANCE["captions"][cid]]
            for expert in EXPERT_FILES:
                row, want = d.experts[expert][i], ref[f"{expert}_{g}"]
                if cid == PROVENANCE["missing"][expert]:  # the NaN scalar -> the missing mask, a NaN row
                    assert not d.ind[expert][i] and np.isnan(row).all()
                    continue
                assert d.ind[expert][i]
                n = min(len(want), mt[expert])
                truncated[expert] += len(want) > n
                assert np.array_equal(row[:n], want[:n].astype(np.float32))  # first frames kept
                assert not row[n:].any()  # zero padding
            for k in range(5):
                want = ref[f"w2v_{g}_{k}"]
                n = min(len(want), mt["text"])
                truncated["text"] += len(want) > n
                assert d.text_lens[i, k] == n
                assert np.array_equal(d.text[i, k, :n], want[:n]) and not d.text[i, k, n:].any()
    assert all(truncated.values())  # the fixture exercises truncation of every kind
    assert int((~data["train"].ind["audio"]).sum()) == 1 and int((~data["test"].ind["vggsound"]).sum()) == 1


def test_train_runs_one_epoch_end_to_end_on_the_fixture(tmp_path):
    save = tmp_path / "saved"
    proc = run_module(["train.py", "--config", str(FIXTURE_CONFIG), "--device", "cpu", "--quiet", "--threads", "1",
                       "--custom_args", f"trainer.save_dir={save}"])
    assert proc.returncode == 0, proc.stderr
    (run,) = list(save.glob("*/*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1
    assert 0 <= metrics["test"]["t2a"]["R1"] <= 100
    sims = np.load(run / "sims" / "test.npy")
    assert sims.shape == (3 * 5, 3) and np.isfinite(sims).all()  # the NaN-missing test clip scores finitely


def test_hickle5_files_are_read_directly_and_match_hickle_load(tiny_data_dir, monkeypatch):
    root = tiny_data_dir / "structured-symlinks"
    ids = (root / "test_list.txt").read_text().split()[:5]
    ref = {}
    for expert, rel in EXPERT_FILES.items():
        with h5py.File(root / rel, "r") as fh:
            assert str(fh.attrs["HICKLE_VERSION"]).startswith("5.")
        ref[expert] = hickle.load(str(root / rel))
    monkeypatch.setattr(hickle, "load", lambda *a, **k: pytest.fail("hickle-5 files must not need hickle.load"))
    for expert, rel in EXPERT_FILES.items():
        got = read_hickle_subset(root / rel, ids)
        assert list(got) == ids
        for cid in ids:
            assert got[cid].dtype == ref[expert][cid].dtype and got[cid].tobytes() == ref[expert][cid].tobytes()


def test_hickle5_dict_with_slash_keys_and_nan_scalars(tmp_path):
    values = {"a/b.wav": np.ones((2, 4), np.float32), "c.wav": float("nan"), "d.wav": np.float32("nan"),
              "e.wav": np.arange(8.0).reshape(2, 4)}
    hickle.dump(values, str(tmp_path / "f.hickle"), mode="w")
    got = read_hickle_subset(tmp_path / "f.hickle", list(values))
    assert list(got) == list(values)
    assert np.array_equal(got["a/b.wav"], values["a/b.wav"]) and got["e.wav"].dtype == np.float64
    assert np.isnan(got["c.wav"]) and np.isnan(got["d.wav"])


# ---------------------------------------------------------------------------------------------------------------
# unreadable files: one line naming the file, exit 2, never an empty mapping
# ---------------------------------------------------------------------------------------------------------------
def _truncate(path: Path, keep: float | int) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep) if isinstance(keep, float) else keep])


def _write_hickle5(obj):
    return lambda path: hickle.dump(obj, str(path), mode="w")


def _write_plain_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as fh:
        fh["x"] = np.zeros(3)


BREAKERS = {
    "truncated-to-60%": lambda p: _truncate(p, 0.6),
    "truncated-to-2kB": lambda p: _truncate(p, 2048),
    "empty-file": lambda p: _truncate(p, 0),
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)),
    "a-pickle-named-hickle": lambda p: p.write_bytes(pickle.dumps({"a": 1})),
    "plain-hdf5-not-hickle": _write_plain_hdf5,
    "hickle-of-a-list": _write_hickle5([np.zeros((2, 128), np.float32)]),
    "hickle-with-other-ids": _write_hickle5({"other.wav": np.zeros((2, 128), np.float32)}),
    "hickle-with-string-values": _write_hickle5({c: "abc" for c in IDS}),
}


@pytest.mark.parametrize("expert", sorted(EXPERT_FILES))
@pytest.mark.parametrize("breaker", sorted(BREAKERS))
def test_unreadable_hickle_is_one_line_exit_2_naming_the_file(tmp_path, capsys, breaker, expert):
    data_dir = copy_fixture(tmp_path / "d")
    path = data_dir / "structured-symlinks" / EXPERT_FILES[expert]
    BREAKERS[breaker](path)
    rc = run_cli(clotho_main, cli_args(data_dir))
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, str(path))


def test_allow_missing_experts_never_turns_an_unreadable_file_into_all_missing(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    path = data_dir / "structured-symlinks" / EXPERT_FILES["audio"]
    _write_hickle5({"other.wav": np.zeros((2, 128), np.float32)})(path)
    rc = run_cli(clotho_main, [str(FIXTURE_CONFIG), "--splits", "test", "--custom_args",
                               f"data_loader.args.data_dir={data_dir},data_loader.args.allow_missing_experts=true"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "none of the 3 clips")


def test_allow_missing_experts_reports_absent_clips(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    path = data_dir / "structured-symlinks" / EXPERT_FILES["audio"]
    values = read_hickle_subset(path, IDS)
    del values[PROVENANCE["splits"]["test"][0]]
    _write_hickle5(values)(path)
    args = [str(FIXTURE_CONFIG), "--custom_args", f"data_loader.args.data_dir={data_dir}"]
    assert run_cli(clotho_main, args) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "1 clips of test_list.txt missing")
    args[-1] += ",data_loader.args.allow_missing_experts=true"
    assert run_cli(clotho_main, args) == 0
    err = capsys.readouterr().err
    assert f"{path}: 1 clips of test_list.txt absent, treated as missing" in err


def test_truncated_hickle_via_the_real_process(tmp_path):
    data_dir = copy_fixture(tmp_path / "d")
    path = data_dir / "structured-symlinks" / EXPERT_FILES["vggsound"]
    _truncate(path, 0.5)
    proc = run_module(["-m", "data.clotho", *cli_args(data_dir)])
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, str(path))


def test_truncated_hickle_stops_train_py_before_any_output(tmp_path, capsys):
    import train

    data_dir = copy_fixture(tmp_path / "d")
    path = data_dir / "structured-symlinks" / EXPERT_FILES["audio"]
    _truncate(path, 0.5)
    save = tmp_path / "saved"
    rc = run_cli(train.main, ["--config", str(FIXTURE_CONFIG), "--device", "cpu", "--quiet", "--custom_args",
                              f"data_loader.args.data_dir={data_dir},trainer.save_dir={save}"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, str(path))
    assert not save.exists()
