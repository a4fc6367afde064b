"""Every numeric flag of every command (scripts and benchmarks included) refuses bad values at parse time: exit 2,
ONE line naming the flag, no traceback, nothing written (the "flags" class of test_trust_inputs.py, for all CLIs).

Three layers: (1) many bad values per flag, in-process; (2) each command as a real subprocess, so that its
``__main__`` goes through ``run_cli``; (3) a scan of the repository: no parser bypasses ``utils.cli``.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from test_trust_inputs import TINY, refuse

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def _module(rel: str):
    """A command that is a file, not a package module (search.py, bench/, scripts/), loaded once by path."""
    spec = importlib.util.spec_from_file_location("cli_" + rel.replace("/", "_")[:-3], REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main(rel: str):
    def main(argv):
        return _module(rel).main(argv)
    main.__name__ = rel
    return main


def _extract(argv):
    from data.extract import main
    return main(argv)


def _curves(argv):
    from trainer.curves import main
    return main(argv)


def _fusion(argv):
    import fusion.run as fr
    return fr.main_from_args(fr.build_parser().parse_args(argv))


def _train(argv):
    import train
    return train.main(argv)


# ------------------------------------------------------------------------------------------------ bad values
COUNT = ["0", "-1", "1.5", "1e3", "nan", "inf", "x", ""]  # integers >= 1
NONNEG = ["-1", "-0.5", "1.5", "nan", "inf", "x", ""]  # integers >= 0
SEED = ["-1", "4294967296", "1.5", "nan", "x", ""]  # 0 .. 2**32-1
THREADS = ["0", "-1", "4097", "1099511627776", "nan", "x", ""]  # 1 .. MAX_THREADS (2**40 overflowed torch)
THREADS_0 = ["-1", "4097", "1099511627776", "1.5", "x", ""]  # 0 (= the library's default) .. MAX_THREADS
DBFS = ["0", "0.0", "3", "nan", "inf", "-inf", "-nan", "x", ""]  # finite and < 0
FRACTION = ["0", "-0.5", "1.5", "nan", "inf", "x", ""]  # (0, 1]
STEP = ["0", "-0.1", "0.3", "0.6", "1", "0.001", "nan", "inf", "x", ""]  # divides 1 into 2..100 steps
TEMPERATURE = ["0", "-1", "1e-9", "nan", "inf", "x", ""]  # >= 1e-6: cos / temperature cannot overflow
INT_LIST = ["", ",", "4,,8", "4,x", "4,0", "-4", "4,-8", "1.5", "nan"]  # comma-separated integers >= 1
SHAPE = ["", "100", "100x", "x10", "0x10", "100x0", "100x-1", "10x5x2", "100X10", "nan", "axb"]  # AxB, both >= 1
RATIOS = ["", "1,1", "1,1,1,1", "1,0,1", "1,1,0", "-1,1,1", "a,b,c", "nan,1,1", "1,inf,1", "1e308,1e308,1"]

EXTRACT = ["--audio", "audio", "--captions", "captions.csv", "--out", "archive"]
SEARCH = ["--run", "run", "a dog barks"]
FLAGS = [  # (command, argv that is fine without the flag, flag, bad values)
    (_extract, EXTRACT, "--split-seed", SEED),
    (_extract, EXTRACT, "--silence-dbfs", DBFS),
    (_extract, EXTRACT, "--workers", COUNT),
    (_extract, EXTRACT, "--chunk-files", COUNT),
    (_extract, EXTRACT, "--split-ratios", RATIOS),  # checked first thing after parsing, before any file is read
    (_main("search.py"), SEARCH, "--k", COUNT),
    (_main("search.py"), SEARCH, "--depth", COUNT),
    (_main("search.py"), SEARCH, "--ef-search", COUNT),
    (_main("search.py"), SEARCH, "--nprobe", NONNEG),
    (_main("search.py"), SEARCH, "--faiss-threshold", NONNEG),
    (_main("search.py"), SEARCH, "--threads", THREADS_0),
    (_fusion, ["--runs", "a", "b"], "--weights-step", STEP),
    (_train, ["--config", str(TINY)], "--threads", THREADS),
    (_main("bench/bench_search.py"), [], "--n", COUNT),
    (_main("bench/bench_search.py"), [], "--clusters", COUNT),
    (_main("bench/bench_search.py"), [], "--queries", COUNT),
    (_main("bench/bench_search.py"), [], "--k", COUNT),
    (_main("bench/bench_search.py"), [], "--nlist", NONNEG),
    (_main("bench/bench_search.py"), [], "--train-size", NONNEG),
    (_main("bench/bench_search.py"), [], "--hnsw-n", NONNEG),
    (_main("bench/bench_search.py"), [], "--threads", THREADS_0),
    (_main("bench/bench_search.py"), [], "--dims", INT_LIST),
    (_main("bench/bench_search.py"), [], "--nprobe", INT_LIST),
    (_main("bench/bench_search.py"), [], "--ef-search", INT_LIST),
    (_main("bench/bench_metrics.py"), [], "--repeat", COUNT),
    (_main("bench/bench_metrics.py"), [], "--dim", COUNT),
    (_main("bench/bench_metrics.py"), [], "--workers", THREADS),
    (_main("bench/bench_metrics.py"), [], "--fraction", FRACTION),
    (_main("bench/bench_metrics.py"), [], "--stream", SHAPE),
    (_main("bench/bench_fusion.py"), [], "--repeat", COUNT),
    (_main("bench/bench_fusion.py"), [], "--large", SHAPE + ["100x30", "None"]),  # rows = K x cols
    (_main("bench/bench_train.py"), [], "--epochs", COUNT),
    (_main("bench/bench_train.py"), [], "--threads", THREADS),
    (_main("bench/bench_train.py"), [], "--step-rounds", NONNEG),
    (_main("bench/bench_step.py"), [], "--steps", COUNT),
    (_main("bench/bench_step.py"), [], "--threads", THREADS),
    (_main("bench/search_quality.py"), ["--run", "run"], "--cli-repeats", COUNT),
    (_main("bench/search_quality.py"), ["--run", "run"], "--threads", THREADS_0),
    (_main("scripts/eval_labels.py"), ["--labels", "labels.json"], "--temperature", TEMPERATURE),
]
VALUE_CASES = [(main, base, flag, value) for main, base, flag, values in FLAGS for value in values]


@pytest.mark.parametrize("main, base, flag, value", VALUE_CASES,
                         ids=[f"{m.__name__.strip('_')} {f}={v!r}" for m, _, f, v in VALUE_CASES])
def test_numeric_flag_refuses_bad_value(main, base, flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # every path of the argv is relative: nothing may appear under tmp_path
    refuse(main, [*base, f"{flag}={value}"], flag, tmp_path, capsys)


def test_bad_values_in_the_spaced_form_name_the_flag_too(tmp_path, capsys, monkeypatch):
    """``--flag -inf`` looks like an option to argparse; it must still be one line naming the flag."""
    monkeypatch.chdir(tmp_path)
    for main, base, flag, value in [(_extract, EXTRACT, "--silence-dbfs", "-inf"),
                                    (_extract, EXTRACT, "--split-seed", "-1"),
                                    (_extract, EXTRACT, "--workers", "-3"),
                                    (_main("search.py"), SEARCH, "--k", "-1"),
                                    (_main("bench/bench_metrics.py"), [], "--fraction", "-1e-3")]:
        refuse(main, [*base, flag, value], flag, tmp_path, capsys)


USAGE_CASES = [  # usage errors of the commands whose parsers used to print argparse's multi-line block
    (_extract, [], "--audio"), (_extract, ["--bogus"], "--audio"), (_extract, [*EXTRACT, "--bogus"], "--bogus"),
    (_extract, [*EXTRACT, "--skip-bad=yes"], "--skip-bad"),
    (_curves, [], "runs"), (_curves, ["run", "--bogus"], "--bogus"),
    (_curves, ["run", "--tensorboard=1"], "--tensorboard"),
    (_main("search.py"), [*SEARCH, "--bogus"], "--bogus"), (_main("search.py"), [*SEARCH, "--k"], "--k"),
    (_main("bench/bench_search.py"), ["--data", "gaussian"], "--data"),
    (_main("bench/bench_train.py"), ["--precisions", "fp8", "--steps-only"], "--precisions fp8"),
    (_main("bench/bench_fusion.py"), ["--large-methods", "combsum,nope"], "--large-methods 'nope'"),
    (_main("bench/search_animals.py"), ["--bogus"], "--bogus"),
    (_main("bench/search_quality.py"), [], "--run"),
    (_main("scripts/eval_labels.py"), ["--labels", "labels.json"], "give --run or --zero-shot"),
    (_main("scripts/bench_experts.py"), [], "--collection"),
    (_main("scripts/make_real_collection.py"), ["--out", "o", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("main, argv, needle", USAGE_CASES,
                         ids=[f"{m.__name__.strip('_')} {' '.join(a[-2:])}" for m, a, _ in USAGE_CASES])
def test_usage_errors_are_one_line(main, argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refuse(main, argv, needle, tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ real processes
PROCESS_CASES = [  # one bad flag per command, through its own __main__
    (["-m", "data.extract", *EXTRACT, "--split-seed", "-1"], "--split-seed"),
    (["-m", "data.extract", *EXTRACT, "--silence-dbfs", "nan"], "--silence-dbfs"),
    (["-m", "data.extract", "--bogus"], "--audio"),
    (["-m", "trainer.curves"], "runs"),
    (["-m", "data.synthetic", "--out", "o", "--seed", "-1"], "--seed"),
    (["-m", "data.text_features", "--csv", "c.csv", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["-m", "data.clotho", "c.json", "--bogus"], "--bogus"),
    (["-m", "utils.config", "c.json", "--bogus"], "--bogus"),
    (["train.py", "--threads", "0"], "--threads"),
    (["fusion.py", "--runs", "a", "b", "--weights-step", "0.3"], "--weights-step"),
    (["qpp.py", "--run", "r", "--seed", "-1"], "--seed"),
    (["search.py", *SEARCH, "--k", "0"], "--k"),
    (["bench/bench_search.py", "--dims", "768,x"], "--dims"),
    (["bench/bench_metrics.py", "--stream", "10x"], "--stream"),
    (["bench/bench_step.py", "--steps", "0"], "--steps"),
    (["bench/bench_fusion.py", "--large", "100x30"], "--large"),
    (["bench/bench_train.py", "--step-rounds", "-1"], "--step-rounds"),
    (["bench/search_animals.py", "--bogus"], "--bogus"),
    (["bench/search_quality.py", "--run", "r", "--cli-repeats", "0"], "--cli-repeats"),
    (["scripts/eval_labels.py", "--labels", "l.json", "--temperature", "0"], "--temperature"),
    (["scripts/bench_experts.py", "--bogus"], "--collection"),
    (["scripts/make_real_collection.py", "--out", "o", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("argv, needle", PROCESS_CASES, ids=[" ".join(a[:2] + a[-2:]) for a, _ in PROCESS_CASES])
def test_command_process_exits_2_with_one_line(argv, needle, tmp_path):
    argv = [str(REPO / a) if a.endswith(".py") and i == 0 else a for i, a in enumerate(argv)]
    env = {k: v for k, v in os.environ.items() if k != "TOOLKIT_TEST_PAUSE"}
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ the whole repo
def _sources() -> list[Path]:
    skip = {"tests", ".venv", "venv", "node_modules", "__pycache__"}
    return sorted(p for p in REPO.rglob("*.py") if not any(part in skip or part.startswith(".")
                                                           for part in p.relative_to(REPO).parts))


MAIN_WITHOUT_RUN_CLI = {"scripts/make_hickle4_fixture.py"}  # takes no arguments; runs under the original Python 3.7


def bypasses(path: Path, root: Path = REPO) -> list[str]:
    """What in ``path`` bypasses utils.cli: argparse's own parser, a bare int/float type, a __main__ without run_cli."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = path.relative_to(root).as_posix()
    found = []
    for node in ast.walk(tree):
        built = [node.func] if isinstance(node, ast.Call) else node.bases if isinstance(node, ast.ClassDef) else []
        if rel != "utils/cli.py" and any(ast.unparse(b) == "argparse.ArgumentParser" for b in built):
            found.append(f"{rel}:{node.lineno}: argparse.ArgumentParser (use utils.cli.ArgumentParser)")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for kw in node.keywords:
                if kw.arg == "type" and isinstance(kw.value, ast.Name) and kw.value.id in ("int", "float"):
                    found.append(f"{rel}:{node.lineno}: type={kw.value.id} (use a range-checked utils.cli type)")
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and rel not in MAIN_WITHOUT_RUN_CLI \
                and "run_cli(" not in ast.unparse(node):
            found.append(f"{rel}:{node.lineno}: __main__ without utils.errors.run_cli")
    return found


def test_no_command_bypasses_utils_cli():
    sources = _sources()
    assert len(sources) > 50 and {REPO / "data" / "extract.py", REPO / "bench" / "bench_search.py"} <= set(sources)
    assert [b for path in sources for b in bypasses(path)] == []


def test_the_scan_finds_each_kind_of_bypass(tmp_path):
    """The scan above must be able to fail: each kind of bypass in a file is reported, with its line."""
    bad = tmp_path / "bench" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import argparse\n\ndef main(argv=None) -> argparse.ArgumentParser:\n"
                   "    p = argparse.ArgumentParser()\n    p.add_argument('--n', type=int)\n"
                   "    p.add_argument('--x', type=float)\n\nclass P(argparse.ArgumentParser):\n    pass\n\n"
                   "if __name__ == '__main__':\n    main()\n")
    found = bypasses(bad, root=tmp_path)
    assert sorted(f.split(": ", 1)[0] for f in found) == [f"bench/bad.py:{n}" for n in (11, 4, 5, 6, 8)], found
