"""The follower's side of replication as a protocol without sockets: requests built from the partitions followed,
and what each response does to them (Kafka's ReplicaFetcherThread minus its I/O).

Runs in a shard process, called by ``rafka_shards.shard.replication.ReplicaFetcher`` (which owns the connection, the
loop and the back-off). No network and no event loop here: the functions build a Fetch v15 or an
OffsetForLeaderEpoch v3 request, and apply the answer to the partitions' logs (append with the leader's offsets,
truncate what diverged, start over at the leader's log start), saying which partitions must be made durable and
whether to retry. ``still_following(tp, p, epoch)`` tells whether the metadata moved on while a request was out:
such answers are dropped.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.fetch.v15 import request as fetch_req
from kio.schema.fetch.v15.response import FetchResponse
from kio.schema.offset_for_leader_epoch.v3 import request as epoch_req
from kio.schema.offset_for_leader_epoch.v3.response import OffsetForLeaderEpochResponse
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i8, i32, i32Timedelta, i64

from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.records.batch import validate_batches
from rafka_shards.shard.partition import Partition

RETRIABLE = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_ID,
        ErrorCode.STALE_BROKER_EPOCH,  # the leader has not seen this incarnation's registration yet
    }
)

Followed = list[tuple[TopicPartition, Partition]]
StillFollowing = Callable[[TopicPartition, Partition, int], bool]


@dataclass(frozen=True, slots=True)
class Replica:
    """Who fetches: this broker and its broker epoch (KIP-903), and how much it asks for."""

    broker_id: int
    broker_epoch: int
    fetch_max_bytes: int
    fetch_wait_max_ms: int


@dataclass(slots=True)
class Fetched:
    """What one Fetch response did: the partitions appended to (with their last offset, to make durable before the
    next fetch reports it), the bytes each took, the error codes worth a warning, and whether some partition must be
    asked again."""

    appended: list[tuple[Partition, int]] = field(default_factory=list)
    copied: dict[TopicPartition, int] = field(default_factory=dict)
    errors: list[tuple[TopicPartition, ErrorCode]] = field(default_factory=list)
    retry: bool = False


# ---- throttled recovery of new replicas ---------------------------------------------------------------------------


class RecoveryThrottle:
    """A token bucket over the bytes this shard copies into new replicas of reassignments (Redpanda's learner
    recovery rate, Kafka's follower replication throttle): a partition moved here by the balancer or an operator
    copies its log at most this fast, so the moves do not starve the replication of in-sync followers, which is
    never throttled. One second of rate is the burst; a fetch may overdraw it by one batch, paid back before the
    next. Pure: the caller passes ``now_ms``."""

    def __init__(self, rate_bytes_per_s: int, now_ms: int) -> None:
        assert rate_bytes_per_s > 0
        self.rate = rate_bytes_per_s
        self._tokens = float(rate_bytes_per_s)
        self._at_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            self._tokens = min(float(self.rate), self._tokens + (now_ms - self._at_ms) * self.rate / 1000)
            self._at_ms = now_ms

    def available(self, now_ms: int) -> int:
        """Bytes new replicas may fetch now (0: none until ``wait_ms``)."""
        self._refill(now_ms)
        return max(0, int(self._tokens))

    def charge(self, nbytes: int, now_ms: int) -> None:
        self._refill(now_ms)
        self._tokens -= nbytes

    def wait_ms(self, now_ms: int) -> int:
        """How long until new replicas may fetch again."""
        self._refill(now_ms)
        return 0 if self._tokens >= 1 else math.ceil((1 - self._tokens) * 1000 / self.rate)


def split_recovering(broker_id: int, followed: Followed) -> tuple[Followed, Followed]:
    """(in-sync or catching-up replicas, new replicas of a reassignment) among the partitions followed."""
    recovering = [(tp, p) for tp, p in followed if broker_id in p.adding]
    return [(tp, p) for tp, p in followed if broker_id not in p.adding], recovering


# ---- divergence (KIP-101) ----------------------------------------------------------------------------------------

Asked = dict[TopicPartition, tuple[Partition, int, int]]  # the copy, its leader epoch then, the last epoch in its log


def epoch_request(replica: Replica, diverged: Followed) -> tuple[epoch_req.OffsetForLeaderEpochRequest, Asked]:
    """Ask the leader where each partition's last epoch here ends in its log."""
    asked = {tp: (p, p.leader_epoch, p.log.last_epoch) for tp, p in diverged}
    by_topic: dict[str, list[epoch_req.OffsetForLeaderPartition]] = {}
    for tp, (_, current, last) in asked.items():
        by_topic.setdefault(tp.topic, []).append(
            epoch_req.OffsetForLeaderPartition(
                partition=i32(tp.partition), current_leader_epoch=i32(current), leader_epoch=i32(last)
            )
        )
    request = epoch_req.OffsetForLeaderEpochRequest(
        replica_id=BrokerId(replica.broker_id),
        topics=tuple(
            epoch_req.OffsetForLeaderTopic(topic=TopicName(t), partitions=tuple(parts)) for t, parts in by_topic.items()
        ),
    )
    return request, asked


def apply_epochs(
    response: OffsetForLeaderEpochResponse, asked: Asked, still_following: StillFollowing
) -> list[tuple[TopicPartition, ErrorCode]]:
    """Truncate each partition the leader answered for to where the logs agree; the partitions it could not answer
    for yet, with the reason (they are asked again)."""
    failed: list[tuple[TopicPartition, ErrorCode]] = []
    for topic in response.topics:
        for part in topic.partitions:
            tp = TopicPartition(str(topic.topic), int(part.partition))
            entry = asked.get(tp)
            if entry is None:
                continue
            p, current, last = entry
            if not still_following(tp, p, current):
                continue  # the metadata moved on while we asked
            code = ErrorCode(int(part.error_code.value))
            if code is not ErrorCode.NONE:
                failed.append((tp, code))
                continue
            p.truncate_to(truncation_offset(p, last, int(part.leader_epoch), int(part.end_offset)))
    return failed


def truncation_offset(p: Partition, asked_epoch: int, leader_epoch: int, leader_end: int) -> int:
    """Kafka's rule (KIP-101/279): if the leader knows our last epoch, keep up to where it ends there; if it only
    knows an earlier one, keep up to where that epoch ends in both logs; if it knows none, keep nothing."""
    own_end = p.log.log_end_offset
    if leader_epoch < 0 or leader_end < 0:
        return p.log.log_start_offset if asked_epoch >= 0 else own_end
    if leader_epoch == asked_epoch:
        return min(leader_end, own_end)
    _, own_epoch_end = p.log.end_offset_for_epoch(leader_epoch)
    return min(leader_end, own_epoch_end if own_epoch_end >= 0 else own_end)


# ---- fetching ----------------------------------------------------------------------------------------------------

Sent = dict[TopicPartition, tuple[Partition, int, int]]  # the copy, its leader epoch, the fetch offset


@dataclass(frozen=True, slots=True)
class FetchRound:
    sent: Sent
    names: Mapping[uuid.UUID | None, str]  # topic id -> name (None: the leader sent zeros)


def fetch_request(
    replica: Replica, followed: Followed, partition_max_bytes: Mapping[TopicPartition, int] | None = None
) -> tuple[fetch_req.FetchRequest, FetchRound]:
    """Fetch v15 of every partition followed from its log end, as a replica; ``partition_max_bytes`` caps some
    partitions below the replica's fetch size (throttled recovery)."""
    sent = {tp: (p, p.leader_epoch, p.log.log_end_offset) for tp, p in followed}
    caps = partition_max_bytes or {}
    by_topic: dict[uuid.UUID, list[fetch_req.FetchPartition]] = {}
    for tp, (p, epoch, offset) in sent.items():
        by_topic.setdefault(p.topic_id, []).append(
            fetch_req.FetchPartition(
                partition=i32(tp.partition),
                current_leader_epoch=i32(epoch),
                fetch_offset=i64(offset),
                log_start_offset=i64(p.log.log_start_offset),
                partition_max_bytes=i32(min(replica.fetch_max_bytes, caps.get(tp, replica.fetch_max_bytes))),
            )
        )
    request = fetch_req.FetchRequest(
        replica_state=fetch_req.ReplicaState(
            replica_id=BrokerId(replica.broker_id), replica_epoch=i64(replica.broker_epoch)
        ),
        max_wait=i32Timedelta.parse(timedelta(milliseconds=replica.fetch_wait_max_ms)),
        min_bytes=i32(1),
        max_bytes=i32(replica.fetch_max_bytes),
        isolation_level=i8(0),
        session_id=i32(0),
        session_epoch=i32(-1),
        topics=tuple(fetch_req.FetchTopic(topic_id=t, partitions=tuple(parts)) for t, parts in by_topic.items()),
        forgotten_topics_data=(),
        rack_id="",
    )
    return request, FetchRound(sent, {p.topic_id: tp.topic for tp, p in followed})


def fetch_error(response: FetchResponse) -> str | None:
    """The whole response's error, if it has one."""
    return None if response.error_code == KioErrorCode.none else f"fetch error {response.error_code.name}"


def apply_fetch(
    response: FetchResponse, sent: FetchRound, still_following: StillFollowing, now_ms: int, out: Fetched
) -> None:
    """Append what the leader sent (validated, with its offsets and epochs) and take its high watermark; a copy
    below the leader's log start starts over there, one ahead of the leader is marked to find where they agree.

    What happened goes into ``out`` as it happens, so a caller that sees an exception (a disk error) still knows
    what was appended before it. A partition whose batches do not validate is refetched (CORRUPT_MESSAGE)."""
    for topic in response.responses:
        for part in topic.partitions:
            tp = TopicPartition(sent.names.get(topic.topic_id, ""), int(part.partition_index))
            entry = sent.sent.get(tp)
            if entry is None:
                continue
            p, epoch, offset = entry
            if not still_following(tp, p, epoch):
                continue  # the metadata moved on while the fetch was out
            code = ErrorCode(int(part.error_code.value))
            if code is ErrorCode.OFFSET_OUT_OF_RANGE:
                leader_start = int(part.log_start_offset)
                if leader_start > p.log.log_end_offset:
                    # Below the leader's log start: what this copy lacks is deleted there; continue from it.
                    p.truncate_fully_and_start_at(leader_start, now_ms)
                else:
                    p.needs_truncation = True  # this copy is ahead of the leader: find where they agree
                out.retry = True
                continue
            if code is not ErrorCode.NONE:
                if code not in RETRIABLE:
                    out.errors.append((tp, code))
                out.retry = True
                continue
            records = part.records
            if records and p.log.log_end_offset == offset:
                buf = bytearray(records)
                try:
                    headers = validate_batches(buf, max_batch_bytes=len(buf), from_leader=True)
                    p.append_replica(buf, headers, now_ms)
                except KafkaError as e:  # a bad batch, or KAFKA_STORAGE_ERROR (the write was undone): fetch again
                    out.errors.append((tp, e.code))
                    out.retry = True
                    continue
                p.probe.replica_bytes_in += len(buf)
                out.appended.append((p, p.log.log_end_offset - 1))
                out.copied[tp] = len(buf)
            p.follower_high_watermark(int(part.high_watermark))
