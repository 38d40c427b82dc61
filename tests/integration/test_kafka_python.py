"""kafka-python 3.x against a real broker process (idempotent producer by default, as kafka-python 3 does)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import InvalidTopicError, TopicAlreadyExistsError

from tests.conftest import Broker
from tests.integration.helpers import BASE_TS, by_partition, messages

pytestmark = pytest.mark.integration
PARTITIONS = 2


def _consume(bootstrap: str, topic: str, count: int) -> list[object]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    got: list[object] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    return got


@pytest.mark.parametrize(("acks", "compression"), [(0, None), (1, None), ("all", "lz4"), ("all", "zstd"), (1, "gzip")])
def test_produce_and_consume(broker: Broker, topic_name: str, acks: object, compression: str | None) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
    admin.close()
    msgs = messages(200, PARTITIONS, str(compression))
    # acks != all turns kafka-python's default idempotence off; say so explicitly.
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks=acks, compression_type=compression, enable_idempotence=acks == "all"
    )
    futures = [
        producer.send(
            topic_name,
            key=m.key,
            value=m.value,
            partition=m.partition,
            headers=list(m.headers),
            timestamp_ms=m.timestamp,
        )
        for m in msgs
    ]
    producer.flush(30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    got = _consume(broker.bootstrap, topic_name, len(msgs))
    assert len(got) == len(msgs)
    for p, expected in by_partition(msgs).items():
        mine = [r for r in got if r.partition == p]  # type: ignore[attr-defined]
        assert [r.offset for r in mine] == list(range(len(expected)))  # type: ignore[attr-defined]
        assert [(r.key, r.value, tuple(r.headers), r.timestamp) for r in mine] == [  # type: ignore[attr-defined]
            (m.key, m.value, m.headers, m.timestamp) for m in expected
        ]
    if acks != 0:
        assert sorted((m.partition, m.offset) for m in metas) == sorted((r.partition, r.offset) for r in got)  # type: ignore[attr-defined]


def test_default_idempotent_producer_and_offsets_for_times(broker: Broker, topic_name: str) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # kafka-python 3: idempotent, acks=all
    for m in messages(100, 1):
        producer.send(topic_name, value=m.value, key=m.key, timestamp_ms=m.timestamp)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    tp = TopicPartition(topic_name, 0)
    assert consumer.offsets_for_times({tp: BASE_TS + 10})[tp].offset == 10
    assert consumer.beginning_offsets([tp])[tp] == 0
    assert consumer.end_offsets([tp])[tp] == 100
    consumer.close()


def test_admin(broker: Broker, topic_name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, 1, 1, topic_configs={"retention.bytes": "1000000"})])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic_name, 1, 1)])
    with pytest.raises(InvalidTopicError):
        admin.create_topics([NewTopic("..", 1, 1)])
    described = admin.describe_configs([ConfigResource("TOPIC", topic_name)])
    assert "1000000" in str(described)
    admin.create_partitions({topic_name: NewPartitions(3)})
    assert len(admin.describe_topics([topic_name])[0]["partitions"]) == 3
    admin.delete_topics([topic_name])
    assert topic_name not in admin.list_topics()
    admin.close()


def test_consumer_group_subscribe_commit_and_resume(broker: Broker, topic_name: str) -> None:
    """KafkaConsumer(group_id=...): the group coordinator assigns both partitions, commits are kept, and a new
    consumer of the group resumes after them."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

    def produce(tag: str, per_partition: int) -> set[bytes]:
        values = {f"{tag}-{p}-{i}".encode() for p in range(PARTITIONS) for i in range(per_partition)}
        for v in sorted(values):
            producer.send(topic_name, value=v, partition=int(v.split(b"-")[1]))
        producer.flush(30)
        return values

    def consume(count: int) -> list[bytes]:
        consumer = KafkaConsumer(
            topic_name,
            bootstrap_servers=broker.bootstrap,
            group_id="kafka-python-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        consumer.commit()
        committed = [consumer.committed(TopicPartition(topic_name, p)) for p in range(PARTITIONS)]
        consumer.close()
        assert sum(c or 0 for c in committed) >= count
        return got

    first = produce("a", 20)
    assert sorted(consume(40)) == sorted(first)
    second = produce("b", 10)
    producer.close()
    assert sorted(consume(20)) == sorted(second), "the second consumer starts at the committed offsets"
