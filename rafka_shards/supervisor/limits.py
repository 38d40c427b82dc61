"""The supervisor's fixed limits, in one place; the operator's (restart backoff, shutdown timeout) are in
``rafka_shards.config.BrokerConfig``.

Runs in the supervisor process; owns nothing.
"""

from __future__ import annotations

LISTEN_BACKLOG = 1024  # connections waiting in the kernel for accept() on every listener the supervisor binds
RESET_PER_WAKEUP_MAX = 64  # connections reset per readiness event while a shard is down (the loop stays fair)
STABLE_UPTIME_MIN_MS = 1000  # a child up this long before dying is not part of a crash loop, whatever the backoff cap
STOP_STACKS_AFTER_S = 5.0  # a child still stopping this long after SIGTERM is asked (SIGUSR1) to log its stacks
