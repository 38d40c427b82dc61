"""Bad input over raw sockets: each gets the precise Kafka error or a closed connection; the broker stays up."""

from __future__ import annotations

import datetime
import socket
import struct

import psutil
import pytest
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v4.request import FetchPartition, FetchRequest, FetchTopic
from kio.serial import entity_reader

from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker
from tests.integration.helpers import kafka_request, raw_produce, recv_frame

pytestmark = pytest.mark.integration


def _connect(broker: Broker) -> socket.socket:
    return socket.create_connection(("127.0.0.1", broker.port), timeout=10)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def _fetch(topic: str, max_wait_ms: int, partitions: list[tuple[int, int]]) -> FetchRequest:
    """Fetch v4 of (partition, fetch offset) pairs of one topic, waiting up to ``max_wait_ms`` for one byte."""
    return FetchRequest(
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        topics=(
            FetchTopic(
                topic=topic,
                partitions=tuple(
                    FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=1 << 20) for p, o in partitions
                ),
            ),
        ),
    )


def _still_serving(broker: Broker) -> None:
    assert broker.alive()
    with _connect(broker) as s:
        s.sendall(kafka_request(18, 0, ApiVersionsRequest()))
        assert len(recv_frame(s)) > 10


def test_oversized_frame_closes_without_allocating(broker: Broker) -> None:
    shard = psutil.Process(broker.shard_pids()[0])  # the process behind the port the frames go to
    rss_before = shard.memory_info().rss
    with _connect(broker) as s:
        s.sendall(struct.pack(">i", 2**31 - 1) + b"\x00" * 100)
        assert _closed(s)
    with _connect(broker) as s:
        s.sendall(struct.pack(">i", 200 * 1024 * 1024))
        assert _closed(s)
    assert shard.memory_info().rss < rss_before + 50 * 1024 * 1024
    _still_serving(broker)


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">i", -7) + b"abcd",
        struct.pack(">i", 3) + b"abc",  # shorter than a header
        struct.pack(">i", 12) + struct.pack(">hhi", 999, 0, 1) + b"\x00\x00\x00\x00",  # unknown API key
        struct.pack(">i", 12) + struct.pack(">hhi", 0, 99, 1) + b"\x00\x00\x00\x00",  # unsupported Produce version
        struct.pack(">i", 30) + bytes(range(30)),  # garbage
        struct.pack(">i", 40) + struct.pack(">hhih", 3, 12, 1, 0) + b"\x00" + b"\xff" * 29,  # Metadata v12 garbage
    ],
)
def test_malformed_frames_close_the_connection(broker: Broker, payload: bytes) -> None:
    with _connect(broker) as s:
        s.sendall(payload)
        assert _closed(s)
    _still_serving(broker)


def test_truncated_frame_then_close(broker: Broker) -> None:
    with _connect(broker) as s:
        s.sendall(struct.pack(">i", 1000) + b"\x00" * 10)
    _still_serving(broker)


def test_unsupported_api_versions_version_gets_error_and_ranges(broker: Broker) -> None:
    from kio.schema.api_versions.v0.response import ApiVersionsResponse

    with _connect(broker) as s:
        s.sendall(kafka_request(18, 99, ApiVersionsRequest()))
        frame = recv_frame(s)
    assert struct.unpack(">i", frame[:4])[0] == 1
    resp, _ = entity_reader(ApiVersionsResponse)(frame[4:], 0)
    assert resp.error_code == ErrorCode.unsupported_version
    ranges = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert ranges[0] == (3, 11) and ranges[1] == (4, 16) and ranges[3] == (0, 12)


def test_corrupt_crc_is_refused_and_nothing_appended(broker: Broker, topic_name: str) -> None:
    good = build_batch([Record(b"k", b"v", 1)])
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    r = raw_produce(broker.port, topic_name, bytes(bad))
    assert r.error_code == ErrorCode.corrupt_message
    r = raw_produce(broker.port, topic_name, good[:-5])
    assert r.error_code == ErrorCode.corrupt_message
    r = raw_produce(broker.port, topic_name, good)
    assert r.error_code == ErrorCode.none and r.base_offset == 0  # nothing was appended before
    _still_serving(broker)


def test_invalid_topic_name(broker: Broker) -> None:
    r = raw_produce(broker.port, "../etc", build_batch([Record(b"k", b"v", 1)]))
    assert r.error_code == ErrorCode.invalid_topic_exception
    assert not (broker.data_dir / "etc").exists()


def test_fetch_out_of_range_and_unknown_partition(broker: Broker, topic_name: str) -> None:
    from kio.schema.fetch.v4.response import FetchResponse

    assert raw_produce(broker.port, topic_name, build_batch([Record(b"k", b"v", 1)])).error_code == ErrorCode.none
    req = _fetch(topic_name, 10, [(0, 5), (7, 0)])
    with _connect(broker) as s:
        s.sendall(kafka_request(1, 4, req))
        frame = recv_frame(s)
    resp, _ = entity_reader(FetchResponse)(frame[4:], 0)
    codes = [p.error_code for p in resp.responses[0].partitions]
    assert codes == [ErrorCode.offset_out_of_range, ErrorCode.unknown_topic_or_partition]
    _still_serving(broker)


def test_client_leaving_during_auto_create_does_not_wedge_the_topic(broker: Broker, topic_name: str) -> None:
    """Regression: a Metadata request that auto-creates a topic, whose connection is reset at once, left the
    topic in the metadata log without an open partition log (NOT_LEADER_OR_FOLLOWER forever)."""
    from kio.schema.metadata.v4.request import MetadataRequest, MetadataRequestTopic

    for i in range(5):
        name = f"{topic_name}-{i}"
        s = _connect(broker)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        request = MetadataRequest(topics=(MetadataRequestTopic(name=name),), allow_auto_topic_creation=True)
        s.sendall(kafka_request(3, 4, request))
        s.close()
        r = raw_produce(broker.port, name, build_batch([Record(b"k", b"v", 1)]))
        assert r.error_code == ErrorCode.none, r


def test_pipelined_responses_keep_request_order_when_later_ones_are_ready_first(
    broker: Broker, topic_name: str
) -> None:
    """Kafka answers a connection's requests in the order they came: a long-polling fetch first, then requests that
    are answered at once and an acks=all produce; the quick answers wait for the fetch's, whatever finishes first."""
    assert raw_produce(broker.port, topic_name, build_batch([Record(b"k", b"v", 1)])).error_code == ErrorCode.none
    slow_fetch = _fetch(topic_name, 800, [(0, 1)])  # at the log's end: it long-polls
    from kio.schema.produce.v8.request import PartitionProduceData, ProduceRequest, TopicProduceData

    produce = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            TopicProduceData(
                name=topic_name,
                partition_data=(PartitionProduceData(index=0, records=build_batch([Record(b"k", b"w", 2)])),),
            ),
        ),
    )
    requests = [
        kafka_request(1, 4, slow_fetch, correlation_id=100),
        kafka_request(18, 0, ApiVersionsRequest(), correlation_id=101),
        kafka_request(0, 8, produce, correlation_id=102),
        kafka_request(18, 0, ApiVersionsRequest(), correlation_id=103),
    ]
    with _connect(broker) as s:
        s.sendall(b"".join(requests))
        ids = [struct.unpack(">i", recv_frame(s)[:4])[0] for _ in requests]
    assert ids == [100, 101, 102, 103]
    _still_serving(broker)
