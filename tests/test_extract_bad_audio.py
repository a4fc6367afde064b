"""Bad audio never becomes a feature: one line naming the file and exit 2, or --skip-bad with a report."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.extract import main
from utils.errors import run_cli

RATE = 22050


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def _make_folder(tmp_path: Path, bad: str) -> tuple[Path, Path, str]:
    """Three good clips + one bad case; returns (audio folder, CSV, name of the file the error must name)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    names = ["a.wav", "b.flac", "c.ogg", "d.wav", "e.flac", "f.ogg"]
    for i, name in enumerate(names):
        data = _noise(1.5, i)
        sf.write(audio / name, np.stack([data, data[::-1]], axis=1) if name == "b.flac" else data, RATE)
    culprit = "bad.wav"
    if bad == "unreadable":
        (audio / culprit).write_bytes(b"RIFF....WAVEfmt definitely not audio")
    elif bad == "random-mp3":  # libsndfile said "File does not exist or is not a regular file (possibly a pipe?)"
        culprit = "bad.mp3"
        (audio / culprit).write_bytes(np.random.default_rng(5).bytes(5000))
    elif bad == "empty":
        sf.write(audio / culprit, np.zeros(0, dtype=np.float32), RATE)
    elif bad == "zero-bytes":  # was "cannot be decoded (LibsndfileError: Format not recognised.)"
        (audio / culprit).write_bytes(b"")
    elif bad == "silent":
        sf.write(audio / culprit, np.zeros(RATE * 2, dtype=np.float32), RATE)
    elif bad == "short":
        sf.write(audio / culprit, _noise(0.5, 7), RATE)
    elif bad == "nan":
        data = _noise(2.0, 8)
        data[1000:1010] = np.nan
        sf.write(audio / culprit, data, RATE, subtype="FLOAT")
    elif bad == "loud":  # float samples far beyond full scale: garbage features, YAMNet "Alarm"
        sf.write(audio / culprit, _noise(2.0, 10) * 1e30, RATE, subtype="FLOAT")
    elif bad == "loud-x10":
        sf.write(audio / culprit, _noise(2.0, 10) * 100, RATE, subtype="FLOAT")
    elif bad == "float32-overflow":  # finite float64 values that are inf in float32
        sf.write(audio / culprit, _noise(2.0, 10).astype(np.float64) * 1e300, RATE, subtype="DOUBLE")
    elif bad == "rate-1hz":  # 2 s of samples that a 1 Hz header makes 12 hours long (OOM-killed before)
        sf.write(audio / culprit, _noise(2.0, 12)[:44100], 1)
    elif bad == "rate-500hz":
        sf.write(audio / culprit, _noise(2.0, 12), 500)
    elif bad == "too-long":
        sf.write(audio / culprit, _noise(8.0, 13), RATE)
    elif bad == "truncated":  # header announces 6 s, data holds 2 s
        sf.write(audio / culprit, _noise(6.0, 14), RATE)
        raw = (audio / culprit).read_bytes()
        (audio / culprit).write_bytes(raw[:44 + 2 * RATE * 2])
    elif bad == "dc-offset":  # a constant: no signal, though its peak is -6 dBFS
        sf.write(audio / culprit, np.full(RATE * 2, 0.5, np.float32), RATE)
    elif bad == "dc-plus-hiss":
        sf.write(audio / culprit, (0.5 + 1e-6 * _noise(2.0, 15)).astype(np.float32), RATE, subtype="FLOAT")
    elif bad == "not-in-csv":
        sf.write(audio / culprit, _noise(2.0, 9), RATE)
    elif bad == "missing-file":
        pass
    else:
        raise AssertionError(bad)
    rows = names + ([] if bad == "not-in-csv" else [culprit])
    csv_path = tmp_path / "captions.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for name in rows:
            writer.writerow([name] + [f"noise number {k} from {name[0]}" for k in range(5)])
    return audio, csv_path, culprit


CASES = {"unreadable": "cannot be decoded", "random-mp3": "cannot be decoded as audio (LibsndfileError: format not "
                                                          "recognised)", "empty": "empty", "zero-bytes": "empty (a 0-byte file)", "silent": "silent", "short": "shorter than one",
         "nan": "NaN", "not-in-csv": "has no row in", "missing-file": "not found in the audio folder",
         "loud": "samples exceed full scale: peak 4.37e+29", "loud-x10": "samples exceed full scale: peak 43.7",
         "float32-overflow": "beyond the float32 range", "rate-1hz": "implausible sample rate 1 Hz",
         "rate-500hz": "implausible sample rate 500 Hz", "too-long": "8.0 s long, over the 5 s limit",
         "truncated": "truncated: the header announces", "dc-offset": "silent (a constant value 0.5",
         "dc-plus-hiss": "silent (peak -"}
EXTRA = {"too-long": ["--max-seconds", "5"]}


def _argv(audio: Path, csv_path: Path, out: Path, *extra: str) -> list[str]:
    return ["--audio", str(audio), "--captions", str(csv_path), "--out", str(out), "--experts", "yamnet",
            "--workers", "1", "--no-progress", *extra]


@pytest.mark.parametrize("bad", list(CASES))
def test_bad_audio_is_one_line_exit_2(tmp_path, capsys, bad):
    audio, csv_path, culprit = _make_folder(tmp_path, bad)
    out = tmp_path / "archive"
    assert run_cli(main, _argv(audio, csv_path, out, *EXTRA.get(bad, []))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert culprit in err[0] and CASES[bad] in err[0], err[0]
    assert not (out / "extract.json").exists()
    assert not (out / "aggregated_yamnet" / "yamnet-raw.hickle").exists()


@pytest.mark.parametrize("bad", ["loud", "float32-overflow", "rate-1hz", "truncated", "dc-offset"])
def test_new_bad_audio_classes_are_skipped_with_skip_bad(tmp_path, capsys, bad):
    audio, csv_path, culprit = _make_folder(tmp_path, bad)
    out = tmp_path / "archive"
    assert run_cli(main, _argv(audio, csv_path, out, "--skip-bad")) == 0
    report = json.loads((out / "extract.json").read_text())
    assert [s["file"] for s in report["skipped"]] == [culprit] and CASES[bad] in report["skipped"][0]["reason"]
    assert report["clips"] == 6


def test_too_few_clips_after_skip_bad_names_what_was_left_out(tmp_path, capsys):
    """Before: 'error: 2 clips: need at least 3' (now 6), without a word on the files --skip-bad had dropped."""
    audio, csv_path, culprit = _make_folder(tmp_path, "loud")
    good = sorted(p for p in audio.iterdir() if p.name != culprit)
    good[0].unlink()  # listed in the CSV, gone from the folder: also left out under --skip-bad
    assert run_cli(main, _argv(audio, csv_path, tmp_path / "archive", "--skip-bad")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5 clips left after --skip-bad left out 2: need at least 6" in err[0], err
    assert "first left out: " in err[0] and (good[0].name in err[0] or culprit in err[0])


@pytest.mark.parametrize("peak, subtype", [(1.0, "PCM_16"), (1.6, "FLOAT"), (3.9, "FLOAT"), (3.9, "DOUBLE")])
def test_overshoot_within_12_dbfs_is_accepted(tmp_path, peak, subtype):
    """Lossy decoders overshoot full scale (a full-scale square wave decodes to a peak of ~1.35 from Vorbis / MP3,
    ~1.6 from Opus); float files may carry some headroom: accepted up to +12 dBFS, unchanged."""
    from data.audio import decode

    x = _noise(2.0, 3)
    x = x / np.abs(x).max() * peak * (0.999 if subtype == "PCM_16" else 1.0)
    sf.write(tmp_path / "x.wav", x, RATE, subtype=subtype)
    clip = decode(tmp_path / "x.wav")
    assert abs(float(np.abs(clip.samples).max()) - peak) < 2e-3 and clip.rate == RATE


def test_skip_bad_writes_a_report_and_pad_short_pads(tmp_path, capsys):
    import hickle

    audio, csv_path, _ = _make_folder(tmp_path, "nan")
    sf.write(audio / "short.wav", _noise(0.5, 11), RATE)
    with open(csv_path, "a", newline="") as fh:
        csv.writer(fh).writerow(["short.wav"] + [f"short noise {k}" for k in range(5)])
    out = tmp_path / "archive"
    assert run_cli(main, _argv(audio, csv_path, out, "--skip-bad", "--pad-short")) == 0
    report = json.loads((out / "extract.json").read_text())
    assert [s["file"] for s in report["skipped"]] == ["bad.wav"] and "NaN" in report["skipped"][0]["reason"]
    assert report["padded"] == {"short.wav": ["yamnet"]}
    feats = hickle.load(str(out / "aggregated_yamnet" / "yamnet-raw.hickle"))
    assert sorted(feats) == ["a.wav", "b.flac", "c.ogg", "d.wav", "e.flac", "f.ogg", "short.wav"]
    assert feats["short.wav"].shape == (1, 1024) and feats["a.wav"].shape == (2, 1024)
    lists = [(out / f"{s}_list.txt").read_text().split() for s in ("train", "val", "test")]
    assert sorted(sum(lists, [])) == sorted(feats) and all(lists)


def test_split_assignment_and_options(tmp_path):
    from data.extract import assign_splits, parse_ratios, parse_weights, read_split_lists
    from utils.errors import UserError

    ids = [f"clip{i}.wav" for i in range(20)]
    splits = assign_splits(ids, parse_ratios("0.6,0.2,0.2"), seed=3)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(sum(splits.values(), [])) == sorted(ids)
    assert splits == assign_splits(ids, parse_ratios("3,1,1"), seed=3)      # same seed, same split
    assert splits != assign_splits(ids, parse_ratios("3,1,1"), seed=4)
    assert [len(v) for v in assign_splits(ids[:6], parse_ratios("0.9,0.05,0.05"), 0).values()] == [2, 2, 2]
    for bad in ("0.5,0.5", "1,0,1", "a,b,c", "-1,1,1"):
        with pytest.raises(UserError, match="--split-ratios"):
            parse_ratios(bad)
    with pytest.raises(UserError, match="need at least 6"):
        assign_splits(ids[:5], parse_ratios("1,1,1"), 0)
    for split, members in (("train", ids[:10]), ("val", ids[10:15]), ("test", ids[15:] + ["ghost.wav"])):
        (tmp_path / f"{split}_list.txt").write_text("\n".join(members) + "\n")
    with pytest.raises(UserError, match="test_list.txt: clip 'ghost.wav' is not in the caption CSV"):
        read_split_lists(tmp_path, ids)
    assert parse_weights(["w.pth"], ["vggish", "yamnet"]) == {"vggish": "w.pth"}
    assert parse_weights(["soundnet=s.npy"], ["soundnet"]) == {"soundnet": "s.npy"}
    with pytest.raises(UserError, match="unknown expert 'panns'"):
        parse_weights(["panns=p.pth"], ["yamnet"])
