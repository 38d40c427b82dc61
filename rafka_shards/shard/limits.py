"""The shard process's fixed limits, in one place (TigerBeetle's "put a limit on everything").

Runs in every shard process; owns nothing. Limits an operator sets live in ``rafka_shards.config.BrokerConfig``
(frame size, requests in flight per connection, connections, fetch bytes, producers per partition, ...); these are the
ones fixed in code, each with its unit and why. Replication's are here too.
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

# Replication (``replication``): the leader's ISR loop and the follower's fetchers.
ISR_CHECK_INTERVAL_S = 0.2  # how often a leader compares each partition's ISR with its followers' fetches
ISR_RETRY_AFTER_REFUSAL_MS = 1000  # a refused AlterPartition is not asked again sooner (the image catches up)
# An AlterPartition whose answer was lost (controller unreachable, leadership moved) commits within a Raft election
# or not at all; its added replicas count for the high watermark this long (or until the partition epoch moves).
ISR_FATE_UNKNOWN_MS = 10_000
BACKOFF_MIN_S = 0.05  # a fetcher's first retry after an error; doubles up to BACKOFF_MAX_S
BACKOFF_MAX_S = 1.0
RESPONSE_BYTES_SLACK = 1024 * 1024  # a response may exceed replica_fetch_max_bytes by one batch (KIP-74) and headers

# Metrics.
PROBE_FLUSH_INTERVAL_S = 1.0  # how often counters reach the shared prometheus files
