"""This broker's lease with the active controller (``controller.leases``), as the shard keeps it.

Runs in a shard process; pure (the monotonic clock is injected, no I/O). The shard serves its partitions only while
the lease is valid. A registration or a heartbeat the controller answered "ok" renews it from when it was *sent*,
so the lease here always ends before the controller's view of it does: by the time the controller may fence this
broker and give its partitions new leaders, this shard has stopped serving them.
"""

from __future__ import annotations

from collections.abc import Callable


class BrokerLease:
    def __init__(self, session_timeout_ms: int, monotonic_ms: Callable[[], int]) -> None:
        self.session_timeout_ms = session_timeout_ms
        self._clock = monotonic_ms
        self.until_ms = 0  # on the monotonic clock; 0: never granted

    def renewed(self, sent_ms: int) -> None:
        """The controller renewed the lease in answer to a heartbeat (or registration) sent at ``sent_ms``."""
        self.until_ms = max(self.until_ms, sent_ms + self.session_timeout_ms)

    def valid(self) -> bool:
        return self._clock() < self.until_ms
