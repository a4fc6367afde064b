"""Bad data-layer inputs (issue 10, classes 1, 5, 8): each is exit 2 with one line naming the file (and the clip).

Non-finite values (NaN, +inf, -inf) in VGGish / VGGSound features and in caption word vectors, for train / val /
test clips, inside the kept frames and in frames dropped by truncation; split lists and caption CSVs that are not
UTF-8; a UTF-8 byte-order mark (read correctly). Most cases go through the CLI's main under utils.errors.run_cli
in-process (fast); a few run the real processes (python -m data.clotho, train.py) to show no traceback and no
run folder.
"""
from __future__ import annotations

import pickle

import hickle
import numpy as np
import pytest

from archive_fixture import (EXPERT_FILES, FIXTURE_CONFIG, PROVENANCE, W2V_FILE, assert_one_line_error, cli_args,
                             copy_fixture, expected, present_clip, run_module, set_hickle4_value, set_w2v_value)
from data.clotho import load_clotho, main as clotho_main, read_split_list
from data.text_features import main as text_features_main, read_caption_csv
from utils.config import load_config
from utils.errors import UserError, run_cli

SPLITS = ("train", "val", "test")
BAD_VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


def _root(data_dir):
    return data_dir / "structured-symlinks"


# ---------------------------------------------------------------------------------------------------------------
# class 1: non-finite values
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("expert", sorted(EXPERT_FILES))
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_nonfinite_expert_feature_is_named(tmp_path, capsys, bad, expert, split):
    data_dir = copy_fixture(tmp_path / "d")
    cid = present_clip(expert, split)
    set_hickle4_value(data_dir, expert, cid, (0, 7), BAD_VALUES[bad])
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(_root(data_dir) / EXPERT_FILES[expert]), f"'{cid}'",
                          f"({split})", {"nan": "(1 NaN)", "+inf": "(1 +inf)", "-inf": "(1 -inf)"}[bad])


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_nonfinite_word_vector_is_named(tmp_path, capsys, bad, split):
    data_dir = copy_fixture(tmp_path / "d")
    cid = PROVENANCE["splits"][split][-1]
    set_w2v_value(data_dir, cid, 3, (0, 11), BAD_VALUES[bad])
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(_root(data_dir) / W2V_FILE), f"'{cid}'", f"({split})",
                          "caption 3", "word vectors")


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("what", ["audio", "text"])
def test_nonfinite_value_in_frames_dropped_by_truncation_is_named(tmp_path, capsys, what, bad):
    """max_tokens drops these rows, but a NaN there still means a broken extraction: refuse, do not hide it."""
    data_dir = copy_fixture(tmp_path / "d")
    cfg = load_config(FIXTURE_CONFIG)
    keep = cfg["data_loader"]["args"]["max_tokens"][what]
    ref = expected()
    if what == "audio":
        i = next(i for i, c in enumerate(PROVENANCE["ids"])
                 if ref[f"audio_{i}"].ndim == 2 and len(ref[f"audio_{i}"]) > keep)
        cid = PROVENANCE["ids"][i]
        set_hickle4_value(data_dir, "audio", cid, (-1, 0), BAD_VALUES[bad])
        path = _root(data_dir) / EXPERT_FILES["audio"]
    else:
        i, k = next((i, k) for i in range(len(PROVENANCE["ids"])) for k in range(5) if len(ref[f"w2v_{i}_{k}"]) > keep)
        cid = PROVENANCE["ids"][i]
        set_w2v_value(data_dir, cid, k, (-1, 0), BAD_VALUES[bad])
        path = _root(data_dir) / W2V_FILE
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), f"'{cid}'", f"beyond the kept {keep} rows")


def test_whole_array_of_nan_is_not_the_missing_marker(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    cid = present_clip("vggsound", "val")
    set_hickle4_value(data_dir, "vggsound", cid, (slice(None), slice(None)), np.nan)
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, "vggsound-raw.hickle", f"'{cid}'", "only a scalar NaN")


def test_float64_beyond_float32_range_is_named(tmp_path, capsys):
    """1e39 is finite in the stored float64 but +inf in the float32 buffers the model gets."""
    data_dir = copy_fixture(tmp_path / "d")
    cid = "BirdsMorning.wav"  # the fixture's float64 clip (train)
    set_hickle4_value(data_dir, "audio", cid, (0, 0), 1e39)
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, "vggish-raw.hickle", f"'{cid}'", "+inf")


def test_many_bad_clips_name_the_first_and_count_them(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    for cid in PROVENANCE["splits"]["train"][:3]:
        set_hickle4_value(data_dir, "vggsound", cid, (0, 0), np.nan)
    assert run_cli(clotho_main, cli_args(data_dir, "--splits", "train")) == 2
    assert_one_line_error(capsys.readouterr().err, f"'{PROVENANCE['splits']['train'][0]}'", "3 clips of train_list.txt")


@pytest.mark.parametrize("where", ["vggsound-test", "w2v-train"])
def test_nonfinite_in_hickle5_synthetic_files(tiny_config, capsys, tmp_path, where):
    import shutil

    src = tiny_config["data_loader"]["args"]["data_dir"]
    data_dir = tmp_path / "syn"
    shutil.copytree(src, data_dir)
    tiny_config["data_loader"]["args"]["data_dir"] = str(data_dir)
    root = _root(data_dir)
    split = where.split("-")[1]
    cid = (root / f"{split}_list.txt").read_text().split()[1]
    if where.startswith("vggsound"):
        path = root / EXPERT_FILES["vggsound"]
        values = hickle.load(str(path))
        values[cid][2, 5] = np.inf
        hickle.dump(values, str(path), mode="w")
    else:
        path = root / W2V_FILE
        with open(path, "rb") as fh:
            w2v = pickle.load(fh)
        w2v[cid][0][0, 0] = np.nan
        with open(path, "wb") as fh:
            pickle.dump(w2v, fh, protocol=4)
    with pytest.raises(UserError) as err:
        load_clotho(tiny_config, ["train", "val", "test"])
    assert str(path) in str(err.value) and f"'{cid}'" in str(err.value) and "\n" not in str(err.value)


def test_the_nan_scalar_missing_marker_is_not_an_error():
    data = load_clotho(load_config(FIXTURE_CONFIG), ["train", "test"])
    assert not data["train"].ind["audio"].all() and not data["test"].ind["vggsound"].all()


@pytest.mark.parametrize("split", ["train", "val"])
def test_nonfinite_stops_train_py_before_any_output(tmp_path, capsys, split):
    """train.py's main under run_cli (the CLI path, in-process). A bad TEST clip is named by train.py only after
    training today: validating every split first is issue 10 class 4, in the trainer."""
    import train

    data_dir = copy_fixture(tmp_path / "d")
    cid = present_clip("vggsound", split)
    set_hickle4_value(data_dir, "vggsound", cid, (0, 3), np.nan)
    save = tmp_path / "saved"
    rc = run_cli(train.main, ["--config", str(FIXTURE_CONFIG), "--device", "cpu", "--quiet", "--custom_args",
                              f"data_loader.args.data_dir={data_dir},trainer.save_dir={save}"])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "vggsound-raw.hickle", f"'{cid}'", f"({split})")
    assert not save.exists()


def test_nonfinite_via_the_real_process_is_one_line(tmp_path):
    data_dir = copy_fixture(tmp_path / "d")
    cid = present_clip("audio", "test")
    set_hickle4_value(data_dir, "audio", cid, (1, 3), np.nan)
    proc = run_module(["-m", "data.clotho", *cli_args(data_dir)])
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, str(_root(data_dir) / EXPERT_FILES["audio"]), f"'{cid}'", "(test)")


# ---------------------------------------------------------------------------------------------------------------
# classes 5 / 8: encodings of split lists and caption CSVs
# ---------------------------------------------------------------------------------------------------------------
ENCODINGS = {  # how a text file may arrive: (codec, whether the loader must refuse it)
    "latin-1": ("latin-1", True),
    "cp1252": ("cp1252", True),
    "utf-16": ("utf-16", True),
    "utf-8-bom": ("utf-8-sig", False),
    "utf-8": ("utf-8", False),
}


def _rewrite_list(data_dir, split, codec, extra_id=None):
    path = _root(data_dir) / f"{split}_list.txt"
    ids = PROVENANCE["splits"][split]
    text = "".join(f"{c}\n" for c in ids)
    if extra_id:  # non-ASCII content so that single-byte codecs differ from UTF-8
        text = text.replace(ids[0], extra_id)
    path.write_bytes(text.encode(codec))
    return path


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("enc", sorted(ENCODINGS))
def test_split_list_encodings(tmp_path, capsys, enc, split):
    data_dir = copy_fixture(tmp_path / "d")
    codec, refuse = ENCODINGS[enc]
    odd = "caf\u00e9 ambience.wav" if split == "test" else "Caf\u00e9 \u201cterrace\u201d.wav"
    if codec == "latin-1" and "\u201c" in odd:
        odd = "Caf\u00e9 terrace \u00bd.wav"
    path = _rewrite_list(data_dir, split, codec, extra_id=None if split == "test" else odd)
    if refuse:
        assert run_cli(clotho_main, cli_args(data_dir)) == 2
        assert_one_line_error(capsys.readouterr().err, str(path), "not UTF-8")
    else:
        ids = read_split_list(path)
        assert ids[0] == (PROVENANCE["splits"][split][0] if split == "test" else odd)  # no '\ufeff' prefix
        assert len(ids) == len(PROVENANCE["splits"][split])


def test_split_list_error_names_the_line(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    path = _root(data_dir) / "val_list.txt"
    path.write_bytes(b"Footsteps on snow.wav\nKitchen, dishes.wav\ndoor creak \xff03.wav\n")
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "line 3", "0xff")


def test_unreadable_split_list_is_one_line(tmp_path, capsys):
    data_dir = copy_fixture(tmp_path / "d")
    path = _root(data_dir) / "train_list.txt"
    path.unlink()
    path.mkdir()  # a folder where the list should be
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "is a folder")


@pytest.mark.parametrize("value", [np.array([["a"] * 300]), np.array([[None] * 300], dtype=object)])
def test_word_vectors_that_are_not_numbers_are_named(tmp_path, capsys, value):
    data_dir = copy_fixture(tmp_path / "d")
    path = _root(data_dir) / W2V_FILE
    with open(path, "rb") as fh:
        w2v = pickle.load(fh, encoding="latin1")
    cid = PROVENANCE["splits"]["val"][1]
    w2v[cid][4] = value
    with open(path, "wb") as fh:
        pickle.dump(w2v, fh, protocol=3)
    assert run_cli(clotho_main, cli_args(data_dir)) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), f"'{cid}' caption 4", "dtype")


CSV_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
CSV_ROWS = ["Caf\u00e9 terrace.wav,people talk,cups clink,a caf\u00e9 hums,chairs move,music plays\n",
            "rain.wav,rain falls,water drips,a storm,rain on a roof,drops patter\n"]


@pytest.mark.parametrize("enc", sorted(ENCODINGS))
def test_caption_csv_encodings(tmp_path, capsys, enc):
    codec, refuse = ENCODINGS[enc]
    path = tmp_path / f"captions-{enc}.csv"
    path.write_bytes((CSV_HEADER + "".join(CSV_ROWS)).encode(codec))
    if refuse:
        assert run_cli(text_features_main, ["--csv", str(path), "--out", str(tmp_path / "out")]) == 2
        assert_one_line_error(capsys.readouterr().err, str(path), "not UTF-8")
        assert not (tmp_path / "out").exists()
    else:
        rows = read_caption_csv(path)
        assert list(rows) == ["Caf\u00e9 terrace.wav", "rain.wav"]  # the BOM did not eat 'file_name'
        assert rows["rain.wav"][4] == "drops patter"


@pytest.mark.parametrize("bad_line", [2, 3])
def test_caption_csv_error_names_the_line(tmp_path, capsys, bad_line):
    rows = [r.encode("utf-8") for r in CSV_ROWS]
    rows[bad_line - 2] = rows[bad_line - 2].replace(b"people", b"p\xe9ople").replace(b"rain falls", b"r\xe0in falls")
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CSV_HEADER.encode() + b"".join(rows))
    assert run_cli(text_features_main, ["--csv", str(path), "--out", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(path), f"line {bad_line}")


@pytest.mark.parametrize("kind", ["csv", "list"])
def test_nul_byte_is_one_line(tmp_path, capsys, kind):
    if kind == "csv":
        path = tmp_path / "nul.csv"
        path.write_bytes(CSV_HEADER.encode() + b'x.wav,"a\x00b",c,d,e,f\n')
        rc = run_cli(text_features_main, ["--csv", str(path), "--out", str(tmp_path / "out")])
    else:
        data_dir = copy_fixture(tmp_path / "d")
        path = _root(data_dir) / "test_list.txt"
        path.write_bytes(path.read_bytes() + b"\x00\x00")
        rc = run_cli(clotho_main, cli_args(data_dir))
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, str(path), "line 2" if kind == "csv" else "line 4", "NUL")
