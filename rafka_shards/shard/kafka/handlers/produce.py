"""Produce (API key 0), versions 3-11: validate each partition's batches as units, append, acknowledge per acks.

Runs in a shard process. Versions: v3 is the first with magic v2 batches only; v9+ is flexible (KIP-482). The crash
story of each acks value is in ``rafka_shards.shard.partition``: acks=all (-1) is answered once the high watermark
passed the batches (every in-sync replica has them, fsynced under durability=fsync), acks=1 after the leader's
write, acks=0 not at all (errors close the connection, as in Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from controller.acls import AclOperation
from controller.image import TopicImage
from rafka_shards.model import AUDIT_TOPIC, INTERNAL_TOPICS, ErrorCode, KafkaError
from rafka_shards.protocol.fast_responses import ProducePartitionResult, encode_produce_response
from rafka_shards.records.batch import BatchHeader, validate_batches
from rafka_shards.records.compaction import first_keyless_record
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE, Access
from rafka_shards.shard.kafka.api import ApiHandler, CloseConnection, RequestContext, ResponseBody, timeout_ms

_VALID_ACKS = (0, 1, -1)


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    acks = int(req.acks)
    wait_ms = timeout_ms(req.timeout, ctx.config.produce_timeout_max_ms)
    results: list[tuple[str, list[ProducePartitionResult]]] = []
    # (topic slot, partition slot, future of the high watermark passing the batches) for acks=all
    pending: list[tuple[int, int, asyncio.Future[None]]] = []
    access = ctx.access
    for topic in req.topic_data:
        name = str(topic.name)
        # WRITE on the topic (Kafka's table: TOPIC_AUTHORIZATION_FAILED on each of its partitions); creating a
        # missing topic also needs CREATE on the cluster or the topic, as through Metadata.
        authorized = access.topic(AclOperation.WRITE, name)
        if authorized and name not in manager.image.topics and _may_create(access, name):
            with contextlib.suppress(KafkaError):  # the lookup below reports the precise reason per partition
                await manager.auto_create(name)
        parts: list[ProducePartitionResult] = []
        for pd in topic.partition_data:
            index = int(pd.index)
            try:
                if not authorized:
                    raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
                if acks not in _VALID_ACKS:
                    raise KafkaError(ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, got {acks}")
                if req.transactional_id is not None:
                    raise KafkaError(ErrorCode.INVALID_REQUEST, "transactions are not supported by this broker")
                if name in INTERNAL_TOPICS and not (name == AUDIT_TOPIC and access.inter_broker):
                    # The audit log's processes append to its topic over the inter-broker listener; no one else may.
                    raise KafkaError(
                        ErrorCode.INVALID_TOPIC_EXCEPTION, f"{name} is internal: clients cannot produce to it"
                    )
                p = manager.lookup(name, index)
                manager.free_space.check()
                if acks == -1:
                    _check_min_insync(manager.image.topics[name], index)
                if pd.records is None:
                    raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "records are null")
                headers = validate_batches(pd.records, max_batch_bytes=p.log.config.max_message_bytes)
                if p.log.config.compact:
                    _check_keys(pd.records, headers)
                info = manager.append(p, bytearray(pd.records), headers)
            except KafkaError as e:
                manager.probe.request_error("Produce", e.code.name)
                parts.append(ProducePartitionResult(index, int(e.code), -1, -1, -1, e.message))
                continue
            if acks == -1:
                pending.append((len(results), len(parts), p.wait_high_watermark(info.last_offset)))
            parts.append(
                ProducePartitionResult(index, 0, info.base_offset, info.log_append_time_ms, info.log_start_offset)
            )
        results.append((name, parts))

    if pending:
        futures = [f for _, _, f in pending]
        await asyncio.wait(futures, timeout=wait_ms / 1000)
        for t, i, fut in pending:
            code, message = _outcome(fut)
            if code is not ErrorCode.NONE:
                manager.probe.request_error("Produce", code.name)
                old = results[t][1][i]
                results[t][1][i] = ProducePartitionResult(old.partition, int(code), -1, -1, -1, message)
            if not fut.done():
                fut.cancel()

    if acks == 0:
        if any(r.error_code for _, parts in results for r in parts):
            raise CloseConnection("acks=0 produce failed for at least one partition")
        return None
    return encode_produce_response(ctx.version, results)


def _may_create(access: Access, name: str) -> bool:
    return access.cluster(AclOperation.CREATE) or access.topic(AclOperation.CREATE, name)


def _check_keys(records: bytes, headers: list[BatchHeader]) -> None:
    """A compacted topic keeps the latest record of every key: a record without one is refused (INVALID_RECORD, the
    whole request for this partition, nothing appended), as Kafka's LogValidator does."""
    keyless = first_keyless_record(records, headers)
    if keyless is not None:
        raise KafkaError(
            ErrorCode.INVALID_RECORD,
            f"record {keyless} has no key: compacted topics (cleanup.policy=compact) need a key on every record",
        )


def _check_min_insync(topic: TopicImage, index: int) -> None:
    """acks=all needs at least min.insync.replicas in the ISR (Kafka's NOT_ENOUGH_REPLICAS otherwise)."""
    min_isr = int(topic.configs.get("min.insync.replicas", "1"))
    isr = topic.partitions[index].isr
    if len(isr) < min_isr:
        raise KafkaError(
            ErrorCode.NOT_ENOUGH_REPLICAS,
            f"{topic.name}-{index}: {len(isr)} in-sync replica(s), min.insync.replicas is {min_isr}",
        )


def _outcome(fut: asyncio.Future[None]) -> tuple[ErrorCode, str | None]:
    if not fut.done():
        return (
            ErrorCode.REQUEST_TIMED_OUT,
            "the batch was written but not replicated to every in-sync replica (and fsynced) within the timeout",
        )
    exc = fut.exception()
    if exc is None:
        return ErrorCode.NONE, None
    if isinstance(exc, KafkaError):
        return exc.code, exc.message
    raise exc


HANDLER = ApiHandler(key=0, min_version=3, max_version=11, handle=handle)
