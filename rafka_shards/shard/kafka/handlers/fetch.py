"""Fetch (API key 1), versions 4-16: whole batches straight from the segment files, with long polling.

Runs in a shard process. Semantics follow Kafka: data up to the high watermark only; at most max_bytes per response
and partition_max_bytes per partition, except that the first batch of the first non-empty partition is returned
whole even if larger (KIP-74); the request waits up to max_wait_ms for min_bytes (woken by the partitions it reads,
never by polling). v7+ fetch sessions (KIP-227): this broker creates none, answering session id 0, which tells
clients to keep sending full requests; an unknown session id gets FETCH_SESSION_ID_NOT_FOUND. v13+ names topics by
id (KIP-516).

A fetch with ``replica_id`` >= 0 comes from a follower (``rafka_shards.shard.replication``): its fetch offsets are
recorded first (they move the high watermark and the follower's caught-up time), it reads up to the log end rather
than the high watermark, and its long poll wakes when the log grows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from controller.acls import AclOperation
from rafka_shards import event_loop
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.protocol.fast_responses import FetchPartitionData, encode_fetch_response
from rafka_shards.records.batch import count_batches
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody, timeout_ms
from rafka_shards.shard.partition import Partition

_NO_TOPIC_ID = bytes(16)


def _error(index: int, code: ErrorCode, p: Partition | None = None) -> FetchPartitionData:
    """A partition's error. OFFSET_OUT_OF_RANGE from a leader carries its high watermark and log start offset: a
    follower below the log start continues from there (``Partition.truncate_fully_and_start_at``)."""
    if code is ErrorCode.OFFSET_OUT_OF_RANGE and p is not None and p.is_leader:
        hw = p.log.high_watermark
        return FetchPartitionData(index, int(code), hw, hw, p.log.log_start_offset, [])
    return FetchPartitionData(index, int(code), -1, -1, -1, [])


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    version = ctx.version
    if version >= 7 and int(req.session_id) != 0:
        return encode_fetch_response(version, [], error_code=int(ErrorCode.FETCH_SESSION_ID_NOT_FOUND), session_id=0)
    max_wait_ms = timeout_ms(req.max_wait, ctx.config.fetch_max_wait_ms)
    min_bytes = max(0, int(req.min_bytes))
    max_bytes = max(1, min(int(req.max_bytes), ctx.config.fetch_max_bytes))
    deadline = time.monotonic() + max_wait_ms / 1000
    loop = asyncio.get_running_loop()
    replica = int(getattr(req, "replica_id", -1)) if version < 15 else int(req.replica_state.replica_id)
    replica_epoch = -1 if version < 15 else int(req.replica_state.replica_epoch)
    quotas = ctx.quotas if replica < 0 else None  # followers are not clients: no client quota (as in Kafka)
    if quotas is not None:
        max_bytes = quotas.fetch_bytes_max(ctx.principal, ctx.header.client_id, max_bytes)
    if replica >= 0:
        if ctx.access.replica_fetch():
            failed_early = _record_replica_fetches(ctx, req, replica, replica_epoch)
        else:  # Kafka's answer to a replica without CLUSTER_ACTION: TOPIC_AUTHORIZATION_FAILED everywhere
            failed_early = _denied(ctx, req, lambda name: True)
            replica = -1  # and nothing is read as a follower would (up to the log end)
    elif ctx.access.enabled:  # READ on each topic
        failed_early = _denied(ctx, req, lambda name: not ctx.access.topic(AclOperation.READ, name))
    else:
        failed_early = {}
    while True:
        topics, total, failed, readable = _read_all(ctx, req, max_bytes, replica, failed_early)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or failed or remaining <= 0 or not readable:
            throttle_ms = 0
            if quotas is not None:  # above the consumer_byte_rate: no data, only the throttle time (KafkaApis)
                throttle_ms, withhold = quotas.fetch_charge(ctx.principal, ctx.header.client_id, total)
                if withhold:
                    return encode_fetch_response(version, [], throttle_time_ms=throttle_ms)
            _count(ctx, topics, replica >= 0)
            return encode_fetch_response(version, topics, throttle_time_ms=throttle_ms)
        # Long poll: any of these partitions' high watermark moving (for a follower: its log growing), or the
        # partition going away, wakes us.
        waiter: asyncio.Future[None] = loop.create_future()
        for p in readable:
            p.add_data_waiter(waiter, replica=replica >= 0)
        try:
            await event_loop.within(waiter, remaining)
        except TimeoutError:
            pass
        finally:
            for p in readable:
                p.remove_data_waiter(waiter)


def _denied(ctx: RequestContext, req: Any, denied: Callable[[str], bool]) -> dict[tuple[str, int], ErrorCode]:
    """TOPIC_AUTHORIZATION_FAILED for every partition of the topics ``denied`` names (each topic asked once)."""
    image = ctx.manager.image
    out: dict[tuple[str, int], ErrorCode] = {}
    for topic in req.topics:
        name = image.topics_by_id.get(topic.topic_id) if ctx.version >= 13 else str(topic.topic)
        if name is not None and denied(name):
            for fp in topic.partitions:
                out[(name, int(fp.partition))] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
    return out


def _record_replica_fetches(
    ctx: RequestContext, req: Any, replica: int, replica_epoch: int
) -> dict[tuple[str, int], ErrorCode]:
    """A follower's fetch offsets, recorded once per request; the partitions that refused it, with the reason.
    A replica that is not a registered, unfenced broker at its current broker epoch is refused on every partition."""
    manager = ctx.manager
    image = manager.image
    now = manager.monotonic_ms()
    refused: dict[tuple[str, int], ErrorCode] = {}
    refusal = manager.replica_refusal(replica, replica_epoch)
    for topic in req.topics:
        name = image.topics_by_id.get(topic.topic_id) if ctx.version >= 13 else str(topic.topic)
        if name is None:
            continue  # answered UNKNOWN_TOPIC_ID by _read_all
        for fp in topic.partitions:
            index = int(fp.partition)
            try:
                if refusal is not None:
                    raise refusal
                p = manager.lookup(name, index)
                p.check_leader_epoch(int(getattr(fp, "current_leader_epoch", -1)))
                p.record_follower_fetch(replica, int(fp.fetch_offset), now)
            except KafkaError as e:
                refused[(name, index)] = e.code
    return refused


def _count(ctx: RequestContext, topics: list[tuple[str, bytes, list[FetchPartitionData]]], replica: bool) -> None:
    """Bytes and batches out per partition, and partition errors, for the shard's metrics."""
    manager = ctx.manager
    for name, _, parts in topics:
        for part in parts:
            if part.error_code:
                manager.probe.request_error("Fetch", ErrorCode(part.error_code).name)
            elif part.records:
                p = manager.partitions.get(TopicPartition(name, part.partition))
                if p is not None and replica:
                    p.probe.replica_bytes_out += sum(len(buf) for buf in part.records)
                elif p is not None:
                    for buf in part.records:
                        p.probe.bytes_out += len(buf)
                        p.probe.batches_out += count_batches(buf)


def _read_all(
    ctx: RequestContext, req: Any, max_bytes: int, replica: int, refused: dict[tuple[str, int], ErrorCode]
) -> tuple[list[tuple[str, bytes, list[FetchPartitionData]]], int, bool, list[Partition]]:
    manager = ctx.manager
    image = manager.image
    by_id = ctx.version >= 13
    topics: list[tuple[str, bytes, list[FetchPartitionData]]] = []
    total = 0
    failed = False
    readable: list[Partition] = []
    for topic in req.topics:
        parts: list[FetchPartitionData] = []
        if by_id:
            topic_id: uuid.UUID | None = topic.topic_id
            name = image.topics_by_id.get(topic_id) if topic_id is not None else None
            raw_id = topic_id.bytes if topic_id is not None else _NO_TOPIC_ID
            if name is None:
                failed = True
                errors = [_error(int(fp.partition), ErrorCode.UNKNOWN_TOPIC_ID) for fp in topic.partitions]
                topics.append(("", raw_id, errors))
                continue
        else:
            name = str(topic.topic)
            t = image.topics.get(name)
            raw_id = t.topic_id.bytes if t is not None else _NO_TOPIC_ID
        for fp in topic.partitions:
            index = int(fp.partition)
            try:
                code = refused.get((name, index))
                if code is not None:
                    raise KafkaError(code, "")
                p = manager.lookup(name, index)
                p.check_leader_epoch(int(getattr(fp, "current_leader_epoch", -1)))
                budget = min(int(fp.partition_max_bytes), max_bytes - total)
                log = p.log
                hw = log.high_watermark
                upper = log.log_end_offset if replica >= 0 else hw  # followers copy everything, consumers see the hw
                if budget <= 0:
                    # The response is full: report the partition's offsets without data, as Kafka does.
                    p.check_offset(int(fp.fetch_offset))
                    parts.append(FetchPartitionData(index, 0, hw, hw, log.log_start_offset, []))
                    readable.append(p)
                    continue
                result = log.read(int(fp.fetch_offset), budget, upper, min_one_batch=total == 0)
            except KafkaError as e:
                failed = True
                parts.append(_error(index, e.code, manager.partitions.get(TopicPartition(name, index))))
                continue
            size = len(result.data)
            total += size
            readable.append(p)
            parts.append(FetchPartitionData(index, 0, hw, hw, log.log_start_offset, [result.data] if size else []))
        topics.append((name, raw_id, parts))
    return topics, total, failed, readable


HANDLER = ApiHandler(key=1, min_version=4, max_version=16, handle=handle)
