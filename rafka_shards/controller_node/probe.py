"""The controller's metrics, kept apart from its logic (Redpanda's "probe"): read by ``/metrics`` and the admin API.

Runs in the controller process; written only by the Ready loop (``backend``), so it needs no lock.
"""

from __future__ import annotations

import bisect
import logging

from controller.raft.types import NO_NODE

log = logging.getLogger(__name__)

FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Cumulative-bucket histogram for /metrics (Prometheus' layout), kept by the one task that observes."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class ControllerProbe:
    def __init__(self) -> None:
        self.fsync_seconds = LatencyHistogram(FSYNC_BUCKETS_S)  # each synced Ready: WAL write + fsync
        self.leader_changes = 0  # leaders this node has seen since it started
        self._last_leader: int = NO_NODE

    def observe_leader(self, leader: int, term: int) -> None:
        """After each Ready: count (and log) a leader other than the last one known."""
        if leader == NO_NODE:
            return
        if leader != self._last_leader:
            self.leader_changes += 1
            log.info("controller leader is node %d (term %d)", leader, term)
        self._last_leader = leader
