"""One argparse parser class and one set of value checkers for every command-line flag of the toolkit.

* :class:`ArgumentParser`: a usage error (unknown flag, bad choice, a value that fails its type function) raises
  :class:`utils.errors.UserError`, so :func:`utils.errors.run_cli` prints ONE line and exits 2 — never argparse's
  multi-line usage block.
* Type functions check the value range, not only the type: ``type=positive_int`` rejects ``--epochs 0`` at parse
  time with ``argument --epochs: 0: must be >= 1``. Build others with :func:`int_in` / :func:`float_in`, and
  lists / shapes (``--dims 768,768``, ``--stream 100x1000``) with :func:`int_list`.

Every command-line parser of the toolkit (scripts and benchmarks included) is this class, and no flag uses a bare
``type=int`` / ``type=float``: tests/test_trust_flags.py checks both over the whole repository.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from utils.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the toolkit's error contract: one line on stderr, exit code 2 (via ``run_cli``)."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        raise UserError(" ".join(message.split()))


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A type function: an integer with ``low <= value <= high`` (either bound optional)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
        _check_bounds(text, value, low, high, low_open=False, high_open=False)
        return value
    parse.__name__ = _name("int", low, high)
    return parse


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Callable[[str], float]:
    """A type function: a FINITE float within the bounds (``low_open``: strictly greater than ``low``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        _check_bounds(text, value, low, high, low_open, high_open)
        return value
    parse.__name__ = _name("float", low, high)
    return parse


def int_list(low: int | None = None, high: int | None = None, *, sep: str = ",",
             length: int | None = None) -> Callable[[str], list[int]]:
    """A type function: ``sep``-separated integers, each within the bounds (``length``: exactly that many)."""
    item = int_in(low, high)

    def parse(text: str) -> list[int]:
        parts = text.split(sep)
        if length is not None and len(parts) != length:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {length} integers separated by {sep!r}")
        try:
            return [item(part) for part in parts]
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    parse.__name__ = f"list of {item.__name__}"
    return parse


def _check_bounds(text, value, low, high, low_open: bool, high_open: bool) -> None:
    if low is not None and (value <= low if low_open else value < low):
        raise argparse.ArgumentTypeError(f"{text}: must be {'>' if low_open else '>='} {low}")
    if high is not None and (value >= high if high_open else value > high):
        raise argparse.ArgumentTypeError(f"{text}: must be {'<' if high_open else '<='} {high}")


def _name(kind: str, low, high) -> str:
    return f"{kind}[{'' if low is None else low},{'' if high is None else high}]"


MAX_THREADS = 4096  # torch.set_num_threads overflows above 2**31; far more threads than cores only thrashes

positive_int = int_in(1)            # counts: epochs, resamples, depth
nonneg_int = int_in(0)              # seeds, offsets, constants that may be 0
thread_count = int_in(1, MAX_THREADS)           # --threads N
thread_count_or_0 = int_in(0, MAX_THREADS)      # --threads N where 0 = the library's own default
seed_int = int_in(0, 2**32 - 1)     # numpy / torch seeds
finite_float = float_in()
positive_float = float_in(0.0, low_open=True)
