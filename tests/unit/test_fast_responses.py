"""The hand-written hot-path encoders produce exactly kio's bytes, for every supported version."""

from __future__ import annotations

import datetime
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from rafka_shards.protocol import kio_codec
from rafka_shards.protocol.fast_responses import (
    FetchPartitionData,
    MetadataBroker,
    MetadataPartition,
    MetadataTopic,
    ProducePartitionResult,
    encode_fetch_response,
    encode_metadata_response,
    encode_produce_response,
)

codes = st.sampled_from([0, 1, 2, 3, 6, 10, 17, 35, 100])
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
names = st.text(min_size=1, max_size=12)
ids = st.binary(min_size=16, max_size=16).filter(lambda b: b != bytes(16))


def _ts(ms: int) -> datetime.datetime | None:
    return None if ms == -1 else datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


produce_partition = st.builds(
    ProducePartitionResult,
    partition=i32,
    error_code=codes,
    base_offset=i64,
    log_append_time_ms=st.just(-1) | st.integers(0, 2**41).map(lambda n: n - n % 1000),
    log_start_offset=i64,
    error_message=st.none() | st.text(max_size=10),
)


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 11), st.lists(st.tuples(names, st.lists(produce_partition, max_size=4)), max_size=3), i32)
def test_produce_matches_kio(
    version: int, topics: list[tuple[str, list[ProducePartitionResult]]], throttle: int
) -> None:
    throttle = abs(throttle) % 100000
    ours = encode_produce_response(version, topics, throttle)
    data = {
        "throttle_time": throttle,
        "responses": [
            {
                "name": name,
                "partition_responses": [
                    {
                        **p._asdict(),
                        "index": p.partition,
                        "log_append_time": _ts(p.log_append_time_ms),
                        "record_errors": [],
                    }
                    for p in parts
                ],
            }
            for name, parts in topics
        ],
    }
    assert ours == kio_codec.encode_response(0, version, data)


fetch_partition = st.builds(
    FetchPartitionData,
    partition=i32,
    error_code=codes,
    high_watermark=i64,
    last_stable_offset=i64,
    log_start_offset=i64,
    records=st.none() | st.lists(st.binary(max_size=40).map(memoryview), max_size=3),
    preferred_read_replica=i32,
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(4, 16), st.lists(st.tuples(names, ids, st.lists(fetch_partition, max_size=4)), max_size=3), codes, i32
)
def test_fetch_matches_kio(
    version: int, topics: list[tuple[str, bytes, list[FetchPartitionData]]], error: int, session: int
) -> None:
    chunks = encode_fetch_response(version, topics, 7, error, session)
    data = {
        "throttle_time": 7,
        "error_code": error,
        "session_id": session,
        "responses": [
            {
                "topic": name,
                "topic_id": uuid.UUID(bytes=tid),
                "partitions": [
                    {
                        **p._asdict(),
                        "partition_index": p.partition,
                        "aborted_transactions": None,
                        "records": None if p.records is None else b"".join(bytes(c) for c in p.records),
                    }
                    for p in parts
                ],
            }
            for name, tid, parts in topics
        ],
    }
    assert b"".join(bytes(c) for c in chunks) == kio_codec.encode_response(1, version, data)


def test_fetch_passes_record_buffers_through() -> None:
    records = memoryview(b"x" * 1000)
    chunks = encode_fetch_response(12, [("t", bytes(16), [FetchPartitionData(0, 0, 5, 5, 0, [records])])])
    assert any(c is records for c in chunks)


metadata_partition = st.builds(
    MetadataPartition,
    error_code=codes,
    partition=i32,
    leader_id=i32,
    leader_epoch=i32,
    replica_nodes=st.lists(i32, max_size=3),
    isr_nodes=st.lists(i32, max_size=3),
    offline_replicas=st.lists(i32, max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 12),
    st.lists(st.builds(MetadataBroker, node_id=i32, host=names, port=i32, rack=st.none() | names), max_size=3),
    st.none() | names,
    i32,
    st.lists(
        st.builds(
            MetadataTopic,
            error_code=codes,
            name=names,
            topic_id=ids,
            is_internal=st.booleans(),
            partitions=st.lists(metadata_partition, max_size=4),
            topic_authorized_operations=i32,
        ),
        max_size=3,
    ),
)
def test_metadata_matches_kio(
    version: int, brokers: list[MetadataBroker], cluster_id: str | None, controller: int, topics: list[MetadataTopic]
) -> None:
    if version < 1:
        brokers = [b._replace(rack=None) for b in brokers]
    ours = encode_metadata_response(version, brokers, cluster_id, controller, topics, 3, 99)
    data = {
        "throttle_time": 3,
        "brokers": [b._asdict() for b in brokers],
        "cluster_id": cluster_id,
        "controller_id": controller,
        "cluster_authorized_operations": 99,
        "topics": [
            {
                **t._asdict(),
                "topic_id": uuid.UUID(bytes=t.topic_id),
                "partitions": [{**p._asdict(), "partition_index": p.partition} for p in t.partitions],
            }
            for t in topics
        ],
    }
    assert ours == kio_codec.encode_response(3, version, data)
