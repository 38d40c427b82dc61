"""When a dead child is restarted, and when the node gives up: the supervisor's restart policy, sans-IO.

Runs in the supervisor process; one instance per child (the controller process, each shard). Takes ``now_ms`` (the
monotonic clock, injected) and decides; it starts, waits for and kills nothing. The rule: a child that dies is
restarted after a delay that doubles from ``shard_restart_backoff_ms`` up to ``shard_restart_backoff_max_ms``
(reset once it has stayed up for the cap, at least 1 s); more than ``shard_restarts_max`` deaths within
``shard_restart_window_ms`` make the node give up, as a crash loop will not heal by itself.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from rafka_shards.config import BrokerConfig
from rafka_shards.supervisor.limits import STABLE_UPTIME_MIN_MS


@dataclass(frozen=True, slots=True)
class Restart:
    delay_ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    deaths: int  # within the window
    window_ms: int
    restarts_max: int


class RestartPolicy:
    """One child's deaths and backoff; ``started`` and ``died`` are told the monotonic time in ms."""

    def __init__(self, backoff_ms: int, backoff_max_ms: int, restarts_max: int, window_ms: int) -> None:
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.restarts_max = restarts_max
        self.window_ms = window_ms
        self._deaths: collections.deque[int] = collections.deque()
        self._consecutive_failures = 0
        self._started_ms = 0

    @classmethod
    def from_config(cls, config: BrokerConfig) -> RestartPolicy:
        return cls(
            config.shard_restart_backoff_ms,
            config.shard_restart_backoff_max_ms,
            config.shard_restarts_max,
            config.shard_restart_window_ms,
        )

    def started(self, now_ms: int) -> None:
        self._started_ms = now_ms

    def died(self, now_ms: int) -> Restart | GiveUp:
        deaths = self._deaths
        deaths.append(now_ms)
        while deaths and deaths[0] < now_ms - self.window_ms:
            deaths.popleft()
        if len(deaths) > self.restarts_max:
            return GiveUp(len(deaths), self.window_ms, self.restarts_max)
        if now_ms - self._started_ms >= max(self.backoff_max_ms, STABLE_UPTIME_MIN_MS):
            self._consecutive_failures = 0  # it ran fine for a while: this death is not part of a loop
        self._consecutive_failures += 1
        delay_ms = min(self.backoff_max_ms, self.backoff_ms * 2 ** (self._consecutive_failures - 1))
        return Restart(delay_ms)
