"""Data-parallel training (trainer/distributed.py): 2 CPU processes (torchrun, gloo) follow one process.

The 2-process job runs in a subprocess (``python tests/test_distributed.py --launch 2 ...``, which starts the ranks
as torchrun does, from the environment, but forks them after one import of torch) so that this pytest process
never joins a process group. It trains a small CE model (every BatchNorm path of the CE head) with an
odd global batch (25 -> shards of 13 and 12 clips), then a run stopped after epoch 1 and resumed through
``train.main(["--resume", ...])`` in the same 2 processes.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from trainer.distributed import DistContext, GlobalBatchNorm, _bounds, convert_batchnorm  # noqa: E402

TINY = REPO_ROOT / "configs" / "clotho-synthetic" / "tiny-ce.json"
RTOL = 1e-5  # float tolerance between 1 and 2 processes (global BN statistics and sums are reduced differently)


def _small(cfg: dict, save_dir: Path) -> dict:
    """CE with small widths: the same modules as the real model at 0.36M parameters (about 1 s for 2 epochs)."""
    # float32: the equality with one process is a float-rounding statement; bf16 rounds each product anew
    cfg["trainer"].update(save_dir=str(save_dir), epochs=2, precision="float32")
    cfg["data_loader"]["args"]["batch_size"] = 25  # 64 train clips -> batches 25, 25, 14 -> uneven shards
    cfg["arch"]["args"]["ce_shared_dim"] = 64
    cfg["arch"]["args"]["vlad_clusters"] = {"text": 4, "audio": 4, "vggsound": 4}
    return cfg


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _assert_close_runs(a: Path, b: Path, rtol: float) -> None:
    ma, mb = _metrics(a), _metrics(b)
    assert ma["best_epoch"] == mb["best_epoch"] and ma["params"] == mb["params"]
    for key in ("train_loss", "val_loss"):
        assert np.allclose([h[key] for h in ma["history"]], [h[key] for h in mb["history"]], rtol=rtol, atol=0), key
    for ha, hb in zip(ma["history"], mb["history"]):
        assert ha["val"] == pytest.approx(hb["val"], abs=1e-9)
    for direction in ("t2a", "a2t"):
        assert ma["test"][direction] == pytest.approx(mb["test"][direction], abs=1e-9), direction
    for split in ("val", "test"):
        sa, sb = np.load(a / "sims" / f"{split}.npy"), np.load(b / "sims" / f"{split}.npy")
        assert np.allclose(sa, sb, rtol=0, atol=rtol * np.abs(sa).max()), split
    wa = torch.load(a / "trained_model.pth", weights_only=True)["state_dict"]
    wb = torch.load(b / "trained_model.pth", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), rtol=rtol, atol=rtol * 1e-2), k


def test_two_processes_follow_one_process_and_resume(tiny_config, tiny_config_path, tmp_path):
    from trainer.trainer import fit

    one = fit(_small(tiny_config, tmp_path / "one"), tiny_config_path, "cpu", quiet=True, threads=1)
    cfg_path = tmp_path / "config-2proc.json"
    cfg_path.write_text(json.dumps(_small(copy.deepcopy(tiny_config), tmp_path / "two")))
    out = tmp_path / "runs.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, str(Path(__file__)), "--launch", "2", str(cfg_path), str(tiny_config_path), str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = json.loads(out.read_text())
    full, stopped = Path(runs["full"]), Path(runs["stopped"])
    assert runs["world_size"] == 2 and runs["ranks"] == [0, 1]
    # float64, one step: the distributed loss and every parameter gradient are the one-process ones
    assert set(runs["grad_errors"]) == {"2", "3", "25"}
    assert all(loss < 1e-12 and grad < 1e-9 for loss, grad in runs["grad_errors"].values()), runs["grad_errors"]
    assert runs["drift"] == "distributed: rank 1's w differs from rank 0's (the replicas drifted)"
    error, completed = runs["final_drift"]
    assert error.startswith("distributed: rank 1's ") and error.endswith("(the replicas drifted)") and not completed

    # Rank 0 alone wrote: one folder per run, the log says 2 processes, one line of output (the resumed run).
    assert sorted(p.name for p in full.parent.iterdir()) == sorted([full.name, stopped.name])
    assert "2 processes, global batch 25" in (full / "train.log").read_text()
    assert "resumed" in (stopped / "train.log").read_text()
    assert proc.stdout.strip().splitlines()[-1] == str(stopped)
    assert not (stopped / "checkpoint-last.pth").exists()

    _assert_close_runs(one, full, RTOL)        # 2 processes = 1 process (same global batch)
    _assert_close_runs(full, stopped, 1e-12)   # stop + resume (2 processes) = uninterrupted (2 processes)
    # the training really moved the weights (the comparison is not between two untrained models)
    m = _metrics(one)["history"]
    assert abs(m[1]["train_loss"] - m[0]["train_loss"]) > 1e-3


def test_shards_cover_the_global_batch_in_order():
    for n, world in [(25, 2), (14, 2), (10, 4), (3, 4), (128, 8)]:
        bounds = _bounds(n, world)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    idx, caps = np.arange(7), np.arange(7) * 10
    shard = DistContext(1, 2, True).shard(idx, caps)
    assert shard[0].tolist() == [4, 5, 6] and shard[1].tolist() == [40, 50, 60]
    assert DistContext().shard(idx, caps)[0] is idx  # one process: untouched


def test_global_batchnorm_without_a_process_group_is_batchnorm():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5))
    ref.load_state_dict(net.state_dict())
    params = list(net.parameters())
    convert_batchnorm(net)
    assert type(net[1]) is GlobalBatchNorm and list(net.parameters()) == params  # same parameter objects
    assert net.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(9, 6)
    for mode in (True, False):
        net.train(mode), ref.train(mode)
        assert torch.equal(net(x), ref(x))
    assert torch.equal(net[1].running_var, ref[1].running_var)


# ---------------------------------------------------------------------------------------------- 2-process worker
def _float64_step_errors(cfg: dict, device: torch.device) -> dict[str, list[float]]:
    """One training step's loss and gradients, distributed vs one process, in float64 (where the two computations
    agree to ~1e-13, so any real difference stands out): {n clips: [loss rel. error, worst grad rel. error]}.
    n = 3 puts 2 clips on rank 0 and 1 on rank 1 (the case where autograd hands two BatchNorm biases one tensor)."""
    from model.build import build_model
    from model.loss import MaxMarginRankingLoss
    from trainer.distributed import current_context
    from trainer.batches import make_batch
    from trainer.runtime import set_seeds
    from trainer.trainer import load_splits

    ctx = current_context()
    set_seeds(0)
    ref = build_model(cfg).double()
    model = ctx.prepare_model(copy.deepcopy(ref))
    train_split = load_splits(cfg, ["train"])["train"]
    criterion = MaxMarginRankingLoss()
    errors = {}
    for n in (2, 3, 25):
        idx, caps = np.arange(n) * 2, np.arange(n) % 5
        losses = []
        for net, (i, c), forward in ((ref, (idx, caps), lambda net, *b: net(*b)),
                                     (model, ctx.shard(idx, caps), lambda net, *b: ctx.sims(net, *b))):
            experts, ind, text, lens = make_batch(train_split, i, c, device)
            experts = {m: t.double() for m, t in experts.items()}
            net.zero_grad(set_to_none=True)
            loss = criterion(forward(net, experts, ind, text.double(), lens))
            loss.backward()
            losses.append(float(loss.detach()))
        ctx.sync_gradients(model)
        # relative to each gradient, floored at 1e-3 of the whole gradient's norm: the biases that feed a
        # BatchNorm have a gradient of exactly 0 in exact arithmetic (rounding noise only)
        floor = 1e-3 * float(torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).norm())
        worst = max(float((p.grad - q.grad).norm()) / max(float(p.grad.norm()), floor)
                    for p, q in zip(ref.parameters(), model.parameters()))
        errors[str(n)] = [abs(losses[0] - losses[1]) / losses[0], worst]
    return errors


def _worker(cfg_path: str, config_name: str, out: str) -> None:
    """One rank of the 2-process job (run by torchrun): a full run, a run stopped after epoch 1, its resume."""
    import torch.distributed as dist

    import train
    from trainer.distributed import current_context, init_distributed
    from trainer.trainer import fit

    device = init_distributed(torch.device("cpu"))
    assert dist.get_backend() == "gloo"
    cfg = json.loads(Path(cfg_path).read_text())
    grad_errors = _float64_step_errors(cfg, device)
    full = fit(json.loads(json.dumps(cfg)), config_name, device, quiet=True, threads=1)
    stopped = fit(json.loads(json.dumps(cfg)), config_name, device, quiet=True, threads=1, stop_after_epochs=1)
    ranks = [None, None]
    dist.all_gather_object(ranks, dist.get_rank())
    final_drift = _drift_after_the_last_checkpoint(cfg, config_name, device)
    try:  # weights that differ between ranks are refused (per-rank randomness would make them drift)
        current_context().check_replicas({"w": torch.tensor([1.0, 2.0 + dist.get_rank()])})
        drift = "not caught"
    except RuntimeError as err:
        drift = str(err)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"full": str(full), "stopped": str(stopped), "grad_errors": grad_errors, "drift": drift,
                                         "world_size": dist.get_world_size(), "ranks": ranks,
                                         "final_drift": final_drift}))
    train.main(["--resume", str(stopped), "--device", "cpu", "--threads", "1", "--quiet"])  # leaves the group


def _cli_rank(env: dict[str, str], argv: list[str]) -> None:
    """One rank of ``--launch-cli``: ``train.py ARGV`` as its command line runs it (one line + exit 2 on bad input)."""
    import train
    from utils.errors import run_cli

    os.environ.update(env)
    code = run_cli(train.main, argv)
    sys.stderr.flush()
    sys.exit(code)


def _launch_cli(ranks_json: str) -> None:
    """``python tests/test_distributed.py --launch-cli '[{"argv": [...], "env": {...}}, ...]'``: one train.py command
    line (and extra environment) per rank, forked after one import of torch as in ``_launch``; prints the ranks' exit
    codes as JSON once all ended."""
    import multiprocessing
    import socket

    import train  # noqa: F401  (inherited by the forked ranks)
    from trainer import trainer  # noqa: F401

    specs = json.loads(ranks_json)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ranks = []
    for rank, spec in enumerate(specs):
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(specs)),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **spec["env"]}
        ranks.append(multiprocessing.get_context("fork").Process(target=_cli_rank, args=(env, spec["argv"])))
        ranks[-1].start()
    for p in ranks:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
            p.join()
    print(json.dumps([p.exitcode for p in ranks]))


def _run_ranks(argvs: list[list[str]], envs: list[dict] | None = None) -> tuple[list[int], str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    specs = [{"argv": argv, "env": (envs or [{}] * len(argvs))[r]} for r, argv in enumerate(argvs)]
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--launch-cli", json.dumps(specs)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_ranks_started_for_different_runs_stop_together(tiny_data_dir, tmp_path):
    """A rank with another config (another --custom_args on one node) trained with the others' averaged gradients
    and the run ended with exit 0, written with rank 0's config.json; now every rank exits 2 with one line naming
    the key, and nothing is written."""
    base = (f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,"
            f"trainer.save_dir={tmp_path / 'saved'},arch.args.use_ce=")
    argv = ["--config", "configs/clotho-synthetic/tiny-ce.json", "--device", "cpu", "--quiet", "--epochs", "1"]
    codes, err = _run_ranks([argv + ["--custom_args", base], argv + ["--custom_args", base + ",optimizer.args.lr=0.5"]])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert codes == [2, 2] and "Traceback" not in err, err
    assert lines == ["error: distributed: rank 1 was started for another run than rank 0 (config.optimizer.args.lr: "
                     "rank 0 has 0.01, rank 1 has 0.5); every rank must run the same train.py command on the same "
                     "data"] * 2, err
    assert not (tmp_path / "saved").exists()


def test_resume_with_another_number_of_processes_is_refused_unless_forced(tiny_data_dir, tmp_path):
    """A run resumed by another world size went on with other bits (a 2-process run resumed by 1 or 3 processes:
    bf16 train loss 7e-6 / 2e-5 relative) without a word, while another --threads is refused: the checkpoint now
    records its process count."""
    from tests.test_trust_inputs import snapshot
    from trainer.trainer import fit
    from utils.config import load_config

    custom = (f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,"
              f"trainer.save_dir={tmp_path / 'saved'},trainer.epochs=2,arch.args.use_ce=")
    run = fit(load_config(TINY, custom), TINY, "cpu", quiet=True, threads=1, stop_after_epochs=1)  # 1 process
    before = snapshot(run)
    resume = ["--resume", str(run), "--device", "cpu", "--quiet"]
    codes, err = _run_ranks([resume, resume])
    assert codes == [2, 2] and "Traceback" not in err, err
    assert err.splitlines() == [f"error: --resume {run}: the run was trained by 1 process, this resume runs 2 "
                                "processes; the process count changes the numbers. Resume with python train.py "
                                f"--resume {run}, or add --force-world-size to accept different bits"] * 2
    assert snapshot(run) == before
    codes, err = _run_ranks([resume + ["--force-world-size"]] * 2)
    assert codes == [0, 0], err
    assert _metrics(run)["numerics"]["processes"] == 2
    assert "the checkpoint was written by 1 (--force-world-size: other bits)" in (run / "train.log").read_text()


def _drift_after_the_last_checkpoint(cfg: dict, config_name: str, device) -> list:
    """A run whose replicas drift after the last checkpoint (rank 1's optimizer steps twice as far: a difference the
    config check cannot see, e.g. another CPU's rounding in the update) with no checkpoint at all (save_period >
    epochs): it ended with exit 0 and rank 0's weights. Returns [the error, rank 0 wrote metrics.json]."""
    import torch.distributed as dist

    from trainer import trainer

    cfg = json.loads(json.dumps(cfg))
    cfg["trainer"].update(save_period=10, save_dir=cfg["trainer"]["save_dir"] + "-drift")
    build = trainer.build_optimizer
    if dist.get_rank() == 1:
        trainer.build_optimizer = lambda config, params: build(
            dict(config, optimizer={**config["optimizer"], "args": {**config["optimizer"]["args"],
                                                                  "lr": 2 * config["optimizer"]["args"]["lr"]}}),
            params)
    try:
        trainer.fit(cfg, config_name, device, quiet=True, threads=1)
        error = "not caught"
    except RuntimeError as err:
        error = str(err)
    finally:
        trainer.build_optimizer = build
    return [error, any(Path(cfg["trainer"]["save_dir"]).rglob("metrics.json"))]


def test_a_rank_that_dies_leaves_no_new_run_with_nothing_to_resume(tiny_data_dir, tmp_path):
    """Rank 1 dies in epoch 1; rank 0 learns it from its next collective (\"Connection closed by peer\", often
    before torchrun's SIGTERM), which killed it with a traceback and left a new run folder that --resume refuses.
    Now rank 0 ends as on Ctrl-C: one line on where the run stands, the folder with nothing to resume removed."""
    base = (f"data_loader.args.data_dir={tiny_data_dir},data_loader.args.synthetic.enabled=false,"
            f"trainer.save_dir={tmp_path / 'saved'},arch.args.use_ce=")
    argv = ["--config", "configs/clotho-synthetic/tiny-ce.json", "--device", "cpu", "--quiet", "--custom_args", base]
    codes, err = _run_ranks([argv, argv], [{}, {"TOOLKIT_TEST_PAUSE": "exit:train-step@1"}])
    assert codes == [1, 137], err
    assert "stopped by an error (here or on another rank) before the first checkpoint: " in err, err
    assert not (tmp_path / "saved").exists()  # the new run's folder, and the save folder it created


def _compare(a: str, b: str, rtol: str) -> None:
    """``python tests/test_distributed.py --compare RUN_A RUN_B RTOL``: print the largest differences between two
    run folders and exit 1 unless they agree within ``RTOL`` (docs/DISTRIBUTED.md: the GPU check)."""
    ma, mb = _metrics(Path(a)), _metrics(Path(b))
    loss = max(abs(x["train_loss"] - y["train_loss"]) / abs(x["train_loss"])
               for x, y in zip(ma["history"], mb["history"]))
    sims = float(np.abs(np.load(Path(a) / "sims" / "test.npy") - np.load(Path(b) / "sims" / "test.npy")).max())
    print(f"train_loss max relative difference {loss:.2e}; test sims max abs difference {sims:.2e}")
    for d in ("t2a", "a2t"):
        print(d, {k: (round(ma["test"][d][k], 4), round(mb["test"][d][k], 4)) for k in ("R1", "R5", "R10", "MedR")})
    try:
        _assert_close_runs(Path(a), Path(b), float(rtol))
    except AssertionError as err:
        sys.exit(f"DIFFERENT (rtol {rtol}): {(str(err).splitlines() or ['best_epoch or params'])[0]}")
    print(f"SAME within rtol {rtol}")


def _launch(world: str, *worker_args: str) -> None:
    """``torchrun --standalone --nproc_per_node WORLD`` for :func:`_worker`, with one import: the ranks are forked
    after torch and the project are imported (three imports of torch took most of this test's time on a loaded
    2-core machine). Each rank joins the group from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* as under torchrun. If a
    rank fails, the others (waiting in a collective) are stopped."""
    import multiprocessing
    import socket
    import time

    import train  # noqa: F401  (inherited by the forked ranks)
    from trainer import trainer  # noqa: F401

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ranks = []
    for rank in range(int(world)):
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": world,
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(multiprocessing.get_context("fork").Process(target=_rank, args=(env, worker_args)))
        ranks[-1].start()
    while any(p.is_alive() for p in ranks) and not any(p.exitcode for p in ranks):
        time.sleep(0.05)
    for p in ranks:
        if p.is_alive():
            p.terminate()
        p.join()
    if any(p.exitcode for p in ranks):
        sys.exit(f"ranks exited with {[p.exitcode for p in ranks]}")


def _rank(env: dict[str, str], worker_args: tuple[str, ...]) -> None:
    os.environ.update(env)
    _worker(*worker_args)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--launch":
    _launch(*sys.argv[2:])
elif __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch-cli":
    _launch_cli(sys.argv[2])
elif __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--compare":
    _compare(*sys.argv[2:])
