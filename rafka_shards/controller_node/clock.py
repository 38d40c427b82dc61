"""The controller process's one clock: monotonic milliseconds, injected so that tests can drive time.

Runs in the controller process. Everything there that times something reads this clock: the Raft node's ticks,
broker leases and probes, forwarding and proposal deadlines, the fsync histogram. It returns a float so that short
durations (an fsync) keep their sub-millisecond part; cores take ``int(clock())`` as their ``now_ms``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]  # monotonic milliseconds


def monotonic_ms() -> float:
    return time.monotonic() * 1000
