"""The shard process's fixed limits, in one place (TigerBeetle's "put a limit on everything").

Runs in every shard process; owns nothing. Limits an operator sets live in ``rafka_shards.config.BrokerConfig``
(frame size, requests in flight per connection, connections, fetch bytes, producers per partition, ...); these are the
ones fixed in code, each with its unit and why. The replica fetcher's (``replication``) are still at the top of
that module.
"""

from __future__ import annotations

# Listener and connections.
LISTEN_BACKLOG = 1024  # connections waiting in the kernel for accept() (the supervisor binds with the same)
MALFORMED_FRAME_LOG_BYTES_MAX = 256  # how much of a malformed frame the debug log shows

# The controller link (``controller_link``).
READ_CHUNK_BYTES = 256 * 1024  # one read from the channel socket
PROPOSALS_IN_FLIGHT_MAX = 1024  # metadata proposals waiting for the controller's answer
HEARTBEATS_IN_FLIGHT_MAX = 16  # unanswered heartbeats: more means the controller is gone

# Metadata the shard asks for.
PRODUCER_ID_BLOCK_SIZE = 1000  # producer ids taken from the metadata log at once

# Idempotent producers: Kafka's limit too, max.in.flight.requests.per.connection <= 5 for idempotent producers.
BATCHES_REMEMBERED = 5  # per producer and partition, to answer a retry with its first offsets
# In-memory checkpoints of a partition's producer table, so a follower's truncation (fail-over: usually the last few
# uncommitted batches) replays the batch headers after the newest checkpoint below it, not the whole young segment.
# A copy every max(PRODUCER_CHECKPOINT_INTERVAL_BATCHES, producers in the table) batches: at most one producer copied
# per batch appended, and a truncation within the kept span replays fewer batches than that (plus those it drops).
PRODUCER_CHECKPOINT_INTERVAL_BATCHES = 256
PRODUCER_CHECKPOINTS_KEPT = 4  # per partition; older truncations fall back to the snapshot files

# Metrics.
PROBE_FLUSH_INTERVAL_S = 1.0  # how often counters reach the shared prometheus files
