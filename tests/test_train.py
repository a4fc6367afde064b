"""Training end to end on the tiny synthetic set: run folder contract, learning, determinism, resume after kill."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from trainer.checkpoint import LAST_NAME
from trainer.batches import epoch_plan
from trainer.runtime import resolve_device
from trainer.summary import summarise_runs
from trainer.trainer import fit, load_splits
from utils.errors import UserError, run_cli

THREADS = 1  # the test machine is shared: one thread is both faster and stable


@pytest.fixture(scope="module")
def tiny_splits(_tiny_config_resolved):
    return load_splits(_tiny_config_resolved, ["train", "val", "test"])


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _same_numbers(a: Path, b: Path) -> None:
    ma, mb = _metrics(a), _metrics(b)
    for key in ("params", "best_epoch", "val", "test", "val_all_captions"):
        assert ma[key] == mb[key], key
    assert [h["train_loss"] for h in ma["history"]] == [h["train_loss"] for h in mb["history"]]
    assert [h["val"] for h in ma["history"]] == [h["val"] for h in mb["history"]]
    for split in ("val", "test"):
        assert np.array_equal(np.load(a / "sims" / f"{split}.npy"), np.load(b / "sims" / f"{split}.npy")), split
    sa = torch.load(a / "trained_model.pth", weights_only=True)["state_dict"]
    sb = torch.load(b / "trained_model.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_epoch_plan_is_seeded_per_epoch_and_covers_every_clip():
    a = epoch_plan(0, 3, 70, 5, 32)
    b = epoch_plan(0, 3, 70, 5, 32)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert [len(i) for i, _ in a] == [32, 32, 6]
    assert sorted(np.concatenate([i for i, _ in a]).tolist()) == list(range(70))
    assert all(((c >= 0) & (c < 5)).all() for _, c in a)
    other = epoch_plan(0, 4, 70, 5, 32)
    assert not np.array_equal(a[0][0], other[0][0])
    assert [len(i) for i, _ in epoch_plan(0, 1, 65, 5, 32)] == [32, 32]  # a last batch of 1 is dropped (BN)
    assert len(epoch_plan(0, 1, 2314, 5, 128, mini_train=True)) == 5


def test_tiny_training_learns_and_writes_the_run_folder(tiny_config, tiny_config_path, tmp_path, tiny_splits):
    cfg = tiny_config
    cfg["trainer"].update(save_dir=str(tmp_path), epochs=8)
    cfg["data_loader"]["args"]["batch_size"] = 16
    cfg["arch"]["args"]["use_ce"] = ""  # MoEE: same pipeline, 2.5x fewer parameters, fast
    run = fit(cfg, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=THREADS)

    assert run.parent.name == "clotho-synthetic-tiny-ce" and run.name.endswith("_seed-0")
    for name in ("config.json", "trained_model.pth", "metrics.json", "train.log", "sims/test.npy",
                 "sims/test.json", "sims/val.npy", "sims/val.json"):
        assert (run / name).is_file(), name
    assert not (run / LAST_NAME).exists()
    assert json.loads((run / "config.json").read_text()) == cfg
    m = _metrics(run)
    assert m["params"] == 8_903_512 and 1 <= m["best_epoch"] <= 8
    assert set(m["test"]) == {"t2a", "a2t"}
    keys = {"R1", "R5", "R10", "R50", "MedR", "MeanR", "geometric_mean_R1-R5-R10", "mAP10"}
    assert set(m["val"]) == keys and set(m["test"]["t2a"]) == keys
    best_val = max(h["val"]["geometric_mean_R1-R5-R10"] for h in m["history"])
    assert m["val"]["geometric_mean_R1-R5-R10"] == best_val

    n_test = tiny_splits["test"].n
    sims = np.load(run / "sims" / "test.npy")
    assert sims.shape == (5 * n_test, n_test) and sims.dtype == np.float32
    manifest = json.loads((run / "sims" / "test.json").read_text())
    assert manifest["clip_ids"] == tiny_splits["test"].clip_ids and manifest["captions_per_clip"] == 5
    assert manifest["source"]["seed"] == 0 and manifest["source"]["config_hash"] == m["config_hash"]

    # Chance: R@10 = 10/N, mean rank = (N+1)/2. The model must beat both by a wide margin.
    chance_r10 = 100 * 10 / n_test
    assert m["test"]["t2a"]["R10"] > 1.5 * chance_r10, m["test"]["t2a"]
    assert m["val"]["R10"] > 1.5 * chance_r10, m["val"]
    assert m["test"]["t2a"]["MeanR"] < 0.75 * (n_test + 1) / 2
    assert "test" in (run / "train.log").read_text()


def test_same_seed_is_deterministic_and_resume_after_kill_matches(tiny_config, tiny_config_path, tmp_path,
                                                                   tiny_splits):
    tiny_config["trainer"].update(save_dir=str(tmp_path), epochs=3)  # 6 steps: crosses a Lookahead sync
    first = fit(tiny_config, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=THREADS)
    second = fit(tiny_config, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=THREADS)
    _same_numbers(first, second)

    killed = fit(tiny_config, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=THREADS,
                 stop_after_epochs=1)
    assert (killed / LAST_NAME).is_file() and not (killed / "metrics.json").exists()
    # resume through the CLI, with the run's own config.json
    assert run_cli(train.main, ["--resume", str(killed), "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    assert (killed / "metrics.json").is_file() and not (killed / LAST_NAME).exists()
    _same_numbers(first, killed)
    assert "resumed" in (killed / "train.log").read_text()
    # a complete run cannot be resumed
    with pytest.raises(UserError, match="already complete"):
        fit(tiny_config, tiny_config_path, "cpu", resume=killed, quiet=True, data=tiny_splits)


def test_resume_rejects_a_different_config(tiny_config, tiny_config_path, tmp_path, tiny_splits):
    tiny_config["trainer"].update(save_dir=str(tmp_path), epochs=2, mini_train=True)
    tiny_config["arch"]["args"]["use_ce"] = ""
    run = fit(tiny_config, tiny_config_path, "cpu", quiet=True, data=tiny_splits, threads=THREADS,
              stop_after_epochs=1)
    tiny_config["optimizer"]["args"]["lr"] = 0.5
    with pytest.raises(UserError, match="optimizer.args.lr"):
        fit(tiny_config, tiny_config_path, "cpu", resume=run, quiet=True, data=tiny_splits)


def test_cli_help_and_device_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--device", "--seeds", "--resume", "--custom_args", "--epochs", "--mini_train"):
        assert flag in out
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
        for spec in ("0", "cuda", " CUDA ", "cuda:0"):  # by name too: never a silent CPU run
            with pytest.raises(UserError, match="CUDA is not available"):
                resolve_device(spec)
        assert run_cli(train.main, ["--config", "x.json", "--device", "cuda:0"]) == 2
    with pytest.raises(UserError):
        resolve_device("gpu-please")
    assert run_cli(train.main, ["--device", "cpu"]) == 2  # no --config, no --resume
    assert run_cli(train.main, ["--config", "configs/clotho/train-vggish-vggsound.json", "--seeds", "0,x"]) == 2


def test_seed_summary_table(tmp_path):
    runs = []
    for seed, (r1, geom) in enumerate([(6.0, 16.0), (7.0, 17.0), (8.0, 18.0)]):
        run = tmp_path / "exp" / f"run{seed}"
        run.mkdir(parents=True)
        m = {"R1": r1, "R5": 20.0, "R10": 30.0, "R50": 70.0, "MedR": 22.0, "MeanR": 58.0,
             "geometric_mean_R1-R5-R10": geom, "mAP10": 12.0}
        (run / "metrics.json").write_text(json.dumps({"seed": seed, "best_epoch": 3, "test": {"t2a": m, "a2t": m}}))
        runs.append(run)
    table, (md, js) = summarise_runs(runs, tmp_path, "configs/x/exp.json")
    data = json.loads(js.read_text())
    assert data["test"]["t2a"]["R1"]["mean"] == pytest.approx(7.0)
    assert data["test"]["t2a"]["R1"]["std"] == pytest.approx(1.0)  # ddof 1
    assert data["test"]["t2a"]["geometric_mean_R1-R5-R10"]["std"] == pytest.approx(np.std([16, 17, 18]))  # ddof 0
    assert "7.0 (1.0)" in table and md.name.startswith("summary-") and md.parent == tmp_path / "x-exp"


def test_bad_data_fails_before_the_run_folder_is_created(tiny_config, tiny_config_path, tmp_path):
    tiny_config["trainer"]["save_dir"] = str(tmp_path / "saved")
    tiny_config["data_loader"]["args"]["data_dir"] = str(tmp_path / "nowhere")
    tiny_config["data_loader"]["args"]["synthetic"]["enabled"] = False
    with pytest.raises(UserError, match="nowhere"):
        fit(tiny_config, tiny_config_path, "cpu", quiet=True, threads=THREADS)
    assert not (tmp_path / "saved").exists()


def test_make_batch_gathers_each_clips_planned_caption_and_its_length():
    """Text and length of caption caps[j] of clip idx[j] (the length feeds the masked NetVLAD of the text)."""
    from trainer.batches import make_batch
    from trainer.export import TensorSplit

    n, c, length, dt = 6, 5, 4, 3
    text = torch.arange(n * c * length * dt, dtype=torch.float32).reshape(n, c, length, dt)
    lens = torch.arange(n * c, dtype=torch.int64).reshape(n, c) % length + 1
    audio = torch.arange(n * 2 * 3, dtype=torch.float32).reshape(n, 2, 3)
    ts = TensorSplit("train", [f"c{i}" for i in range(n)], [[""] * c] * n, {"audio": audio},
                     {"audio": torch.tensor([True, False] * 3)}, text, lens)
    idx, caps = np.array([4, 1, 3]), np.array([2, 4, 0])
    experts, ind, t, got_lens = make_batch(ts, idx, caps, torch.device("cpu"))
    assert torch.equal(experts["audio"], audio[idx]) and ind["audio"].tolist() == [True, False, False]
    assert torch.equal(t, torch.stack([text[i, k] for i, k in zip(idx, caps)])[:, None])
    assert got_lens.tolist() == [[int(lens[i, k])] for i, k in zip(idx, caps)]
