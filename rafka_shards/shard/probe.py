"""A shard's metrics, kept apart from the logic (Redpanda's probe pattern), in prometheus-client's multiprocess mode.

Runs in a shard process. The supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before it spawns shards, so each shard's
values live in memory-mapped files there; ``/metrics`` (the admin API, in the controller process) sums them over every
shard process that ever ran, so counters survive a shard's restart (even after SIGKILL). Without that variable (unit
tests) the metrics are ordinary in-process ones.

Per-partition byte and batch counts are added to plain integers on the produce and fetch paths and moved into the
shared files by ``flush`` (every second, and before the shard answers a stats request, which ``/metrics`` sends first),
so the hot path pays an integer add per partition, not a locked write to a memory map. A SIGKILL loses at most the
last second of those counts. Gauges (log end offset, size, connections) are not stored here: ``/metrics`` asks the
live shards for them, so a dead shard's gauges vanish with it.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from rafka_shards.model import TopicPartition

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

REQUESTS = Counter("rafka_requests", "Kafka requests received, by API", ["api"])
REQUEST_ERRORS = Counter(
    "rafka_request_errors",
    "Kafka requests that failed, by API and error: a partition-level error code in Produce/Fetch, "
    "or the connection closed over the request",
    ["api", "error"],
)
REQUEST_LATENCY = Histogram(
    "rafka_request_latency_seconds",
    "time from reading a request to writing its response, by API",
    ["api"],
    buckets=LATENCY_BUCKETS_S,
)
FSYNC_LATENCY = Histogram(
    "rafka_fsync_duration_seconds",
    "seconds from the start of a partition's group-commit flush job to its end (queue wait and fsyncs)",
    buckets=FSYNC_BUCKETS_S,
)
_LABELS = ["topic", "partition"]
GROUP_REBALANCES = Counter("rafka_group_rebalances", "rebalances completed (generations begun), by group", ["group"])
GROUP_COMMITS = Counter("rafka_group_offset_commits", "offsets committed (one per partition), by group", ["group"])
GROUP_COMMIT_LATENCY = Histogram(
    "rafka_group_commit_latency_seconds",
    "from an OffsetCommit's validation to its records on every in-sync replica",
    buckets=LATENCY_BUCKETS_S,
)
BYTES_IN = Counter("rafka_partition_bytes_in", "record batch bytes appended, by partition", _LABELS)
BATCHES_IN = Counter("rafka_partition_batches_in", "record batches appended, by partition", _LABELS)
RECORDS_IN = Counter("rafka_partition_records_in", "records appended (from batch headers), by partition", _LABELS)
BYTES_OUT = Counter("rafka_partition_bytes_out", "record batch bytes sent to consumers, by partition", _LABELS)
BATCHES_OUT = Counter("rafka_partition_batches_out", "record batches sent to consumers, by partition", _LABELS)
REPLICA_BYTES_IN = Counter(
    "rafka_partition_replica_bytes_in", "record batch bytes a follower copied from its leader, by partition", _LABELS
)
REPLICA_BYTES_OUT = Counter(
    "rafka_partition_replica_bytes_out", "record batch bytes a leader sent to its followers, by partition", _LABELS
)
# Kafka's IsrShrinksPerSec/IsrExpandsPerSec, counted by the leader when an image changes the ISR of a partition it
# leads (its own AlterPartition, or the controller dropping a fenced broker). No labels: one sample per shard from the
# start, so the series exists (at 0) before the first change.
SASL_AUTHENTICATIONS = Counter(
    "rafka_sasl_authentications",
    "SASL authentications and re-authentications on this shard's SASL listeners, by mechanism and result "
    "(success, failure)",
    ["mechanism", "result"],
)
AUTHORIZATION_DENIALS = Counter(
    "rafka_authorization_denials",
    "requests (or parts of requests) refused by the ACLs on this shard, by API and resource type",
    ["api", "resource_type"],
)
# Client quotas (rafka_shards.shard.quotas), by quota sensor: Kafka's metric tags, where a level without a user or a
# client id leaves that label empty. rate() of the bytes is Kafka's byte-rate; throttle time over throttles is its
# throttle-time average. Only clients with a quota are counted, and at most QUOTA_METRIC_SERIES_MAX label pairs per
# shard (client ids come from clients): the rest are counted under "<other>".
_QUOTA_LABELS = ["quota_type", "user", "client_id"]
QUOTA_METRIC_SERIES_MAX = 1000
QUOTA_OTHER = "<other>"
QUOTA_BYTES = Counter(
    "rafka_quota_bytes",
    "bytes counted against producer_byte_rate (produce requests) and consumer_byte_rate (fetch responses) quotas",
    _QUOTA_LABELS,
)
QUOTA_REQUEST_SECONDS = Counter(
    "rafka_quota_request_time_seconds",
    "event-loop time spent on the requests of clients with a request_percentage quota",
    ["user", "client_id"],
)
QUOTA_THROTTLE_TIME = Counter(
    "rafka_quota_throttle_time_ms", "milliseconds of throttling imposed, by the quota that imposed it", _QUOTA_LABELS
)
QUOTA_THROTTLES = Counter("rafka_quota_throttles", "responses throttled, by the quota that throttled", _QUOTA_LABELS)
ISR_SHRINKS = Counter("rafka_isr_shrinks", "ISR changes that removed replicas, on partitions this shard leads")
ISR_EXPANDS = Counter("rafka_isr_expands", "ISR changes that added replicas, on partitions this shard leads")


def isr_change(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[bool, bool]:
    """(shrank, expanded): whether ``after`` lacks a replica of ``before``, and whether it has one ``before`` lacked.
    One change can do both (a replica leaves while another joins)."""
    return (not set(before) <= set(after), not set(after) <= set(before))


class PartitionProbe:
    """Counts of one partition since the last flush; plain integers on the hot path."""

    __slots__ = (
        "batches_in",
        "batches_out",
        "bytes_in",
        "bytes_out",
        "records_in",
        "replica_bytes_in",
        "replica_bytes_out",
        "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.bytes_in = 0
        self.batches_in = 0
        self.records_in = 0
        self.bytes_out = 0
        self.batches_out = 0
        self.replica_bytes_in = 0
        self.replica_bytes_out = 0

    def flush(self) -> None:
        labels = (self.tp.topic, str(self.tp.partition))
        for counter, name in (
            (BYTES_IN, "bytes_in"),
            (BATCHES_IN, "batches_in"),
            (RECORDS_IN, "records_in"),
            (BYTES_OUT, "bytes_out"),
            (BATCHES_OUT, "batches_out"),
            (REPLICA_BYTES_IN, "replica_bytes_in"),
            (REPLICA_BYTES_OUT, "replica_bytes_out"),
        ):
            value = getattr(self, name)
            if value:
                counter.labels(*labels).inc(value)
                setattr(self, name, 0)


class Probe:
    """The shard's request and fsync metrics, plus the partition probes it flushes."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionProbe] = {}
        self._quota_series: set[tuple[str, str]] = set()

    def partition(self, tp: TopicPartition) -> PartitionProbe:
        probe = self.partitions.get(tp)
        if probe is None:
            probe = self.partitions[tp] = PartitionProbe(tp)
        return probe

    def forget_partition(self, tp: TopicPartition) -> None:
        probe = self.partitions.pop(tp, None)
        if probe is not None:
            probe.flush()

    def request(self, api: str, latency_s: float) -> None:
        REQUESTS.labels(api).inc()
        REQUEST_LATENCY.labels(api).observe(latency_s)

    def request_error(self, api: str, error: str) -> None:
        REQUEST_ERRORS.labels(api, error).inc()

    def sasl_authentication(self, mechanism: str, success: bool) -> None:
        SASL_AUTHENTICATIONS.labels(mechanism or "none", "success" if success else "failure").inc()

    def authorization_denied(self, api: str, resource_type: str) -> None:
        AUTHORIZATION_DENIALS.labels(api, resource_type).inc()

    def _quota_labels(self, user: str, client_id: str) -> tuple[str, str]:
        series = self._quota_series
        if (user, client_id) in series:
            return user, client_id
        if len(series) >= QUOTA_METRIC_SERIES_MAX:
            return QUOTA_OTHER, QUOTA_OTHER
        series.add((user, client_id))
        return user, client_id

    def quota_recorded(self, quota_type: str, user: str, client_id: str, value: float) -> None:
        """``value`` counted against a quota: bytes, or percent-seconds of event-loop time for "request"."""
        user, client_id = self._quota_labels(user, client_id)
        if quota_type == "request":
            QUOTA_REQUEST_SECONDS.labels(user, client_id).inc(value / 100)
        else:
            QUOTA_BYTES.labels(quota_type, user, client_id).inc(value)

    def quota_throttled(self, quota_type: str, user: str, client_id: str, throttle_ms: int) -> None:
        user, client_id = self._quota_labels(user, client_id)
        QUOTA_THROTTLES.labels(quota_type, user, client_id).inc()
        QUOTA_THROTTLE_TIME.labels(quota_type, user, client_id).inc(throttle_ms)

    def isr_changed(self, before: tuple[int, ...], after: tuple[int, ...]) -> None:
        shrank, expanded = isr_change(before, after)
        if shrank:
            ISR_SHRINKS.inc()
        if expanded:
            ISR_EXPANDS.inc()

    def fsync(self, seconds: float) -> None:
        FSYNC_LATENCY.observe(seconds)

    def group_rebalanced(self, group: str, count: int) -> None:
        GROUP_REBALANCES.labels(group).inc(count)

    def group_committed(self, group: str, offsets: int, seconds: float) -> None:
        GROUP_COMMITS.labels(group).inc(offsets)
        GROUP_COMMIT_LATENCY.observe(seconds)

    def flush(self) -> None:
        for probe in self.partitions.values():
            probe.flush()
