"""A pause point for crash tests: ``TOOLKIT_TEST_PAUSE=<point>`` (or ``<point>#<n>``: its n-th passage) makes the
process stop there, print ``PAUSED <point>`` on stderr and sleep, so that a test can SIGKILL it exactly at that
point (mid-epoch, mid-checkpoint write, between the renames of an output swap, ...). ``exit:<point>`` makes the
process die there at once instead, as if SIGKILLed (one rank of a forked multi-process job, which the test cannot
easily signal itself). Unset, as always outside tests, it costs one environment lookup.
"""
from __future__ import annotations

import os
import sys
import time

ENV = "TOOLKIT_TEST_PAUSE"
_passages: dict[str, int] = {}


def pause(point: str) -> None:
    want = os.environ.get(ENV)
    if not want:
        return
    die = want.startswith("exit:")
    name, _, nth = want.removeprefix("exit:").partition("#")
    if name != point:
        return
    _passages[point] = _passages.get(point, 0) + 1
    if _passages[point] == int(nth or 1):
        if die:
            os._exit(128 + 9)  # no cleanup of any kind, as SIGKILL
        print(f"PAUSED {point}", file=sys.stderr, flush=True)
        time.sleep(600)
