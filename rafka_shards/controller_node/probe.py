"""The controller's metrics, kept apart from its logic (Redpanda's "probe"): read by ``/metrics`` and the admin API.

Runs in the controller process; written only by the Ready loop (``backend``), so it needs no lock.
"""

from __future__ import annotations

import bisect
import logging

from controller.raft.node import Role
from controller.raft.types import NO_NODE

log = logging.getLogger(__name__)

FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SLOW_FSYNC_S = 0.25  # a Raft fsync slower than this is logged (it delays votes, appends and commits)
SLOW_FSYNC_LOG_INTERVAL_S = 5.0  # at most one such line this often; the others are counted into it


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
        self.campaigns = 0  # elections this node started (pre-votes included) since it started
        self._last_leader: int = NO_NODE
        self._last_role = Role.FOLLOWER
        self._slow_fsyncs = 0  # slow fsyncs not logged yet
        self._slow_logged_s = -SLOW_FSYNC_LOG_INTERVAL_S

    def observe_fsync(self, seconds: float, now_s: float) -> None:
        """One synced Ready took ``seconds``; a slow one is logged (rate-limited, with how many were not)."""
        self.fsync_seconds.observe(seconds)
        if seconds < SLOW_FSYNC_S:
            return
        self._slow_fsyncs += 1
        if now_s - self._slow_logged_s >= SLOW_FSYNC_LOG_INTERVAL_S:
            log.warning(
                "slow Raft fsync: %.0f ms (%d slower than %.0f ms since the last such line)",
                seconds * 1000,
                self._slow_fsyncs,
                SLOW_FSYNC_S * 1000,
            )
            self._slow_fsyncs = 0
            self._slow_logged_s = now_s

    def observe_role(self, role: Role, term: int) -> None:
        """After each Ready: count (and log) an election this node starts."""
        if role is not self._last_role and role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            self.campaigns += 1
            kind = "pre-vote" if role is Role.PRE_CANDIDATE else "vote"
            log.info("campaigning: asking for %ss for term %d", kind, term + (role is Role.PRE_CANDIDATE))
        self._last_role = role

    def observe_leader(self, leader: int, term: int) -> None:
        """After each Ready: count (and log) a leader other than the last one known."""
        if leader == NO_NODE:
            return
        if leader != self._last_leader:
            self.leader_changes += 1
            log.info("controller leader is node %d (term %d)", leader, term)
        self._last_leader = leader
