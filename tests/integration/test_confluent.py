"""librdkafka 2.16 (confluent-kafka) against a real broker process: produce, consume, offsets by time, admin."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from tests.conftest import Broker
from tests.integration.helpers import BASE_TS, Msg, by_partition, messages

pytestmark = pytest.mark.integration
PARTITIONS = 3


def _create(admin: AdminClient, name: str, partitions: int = PARTITIONS, config: dict[str, str] | None = None) -> None:
    for f in admin.create_topics([NewTopic(name, partitions, 1, config=config or {})]).values():
        f.result(timeout=30)


def _produce(bootstrap: str, topic: str, msgs: list[Msg], **conf: object) -> list[tuple[int, int]]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    acked: list[tuple[int, int]] = []
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    for m in msgs:
        producer.produce(
            topic,
            key=m.key,
            value=m.value,
            partition=m.partition,
            headers=list(m.headers),
            timestamp=m.timestamp,
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0
    assert errors == []
    return acked


def _consume(
    bootstrap: str, topic: str, partitions: int, count: int
) -> list[tuple[int, int, object, object, object, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "manual", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]))
    consumer.close()
    return got


@pytest.mark.parametrize(
    ("acks", "compression"),
    [("0", "none"), ("1", "none"), ("all", "lz4"), ("all", "zstd"), ("1", "gzip"), ("all", "snappy")],
)
def test_produce_and_consume(broker: Broker, topic_name: str, acks: str, compression: str) -> None:
    _create(AdminClient({"bootstrap.servers": broker.bootstrap}), topic_name)
    msgs = messages(300, PARTITIONS, compression)
    acked = _produce(broker.bootstrap, topic_name, msgs, acks=acks, **{"compression.type": compression})
    assert len(acked) == len(msgs)
    got = _consume(broker.bootstrap, topic_name, PARTITIONS, len(msgs))
    assert len(got) == len(msgs)
    for p, expected in by_partition(msgs).items():
        mine = [g for g in got if g[0] == p]
        assert [g[1] for g in mine] == list(range(len(expected)))  # dense offsets, in order
        assert [(g[2], g[3], g[4], g[5]) for g in mine] == [(m.key, m.value, m.headers, m.timestamp) for m in expected]
    if acks != "0":
        assert sorted(acked) == sorted((g[0], g[1]) for g in got)


def test_idempotent_producer(broker: Broker, topic_name: str) -> None:
    msgs = messages(500, 1)
    acked = _produce(broker.bootstrap, topic_name, msgs, acks="all", **{"enable.idempotence": True})
    assert sorted(o for _, o in acked) == list(range(500))


def test_offsets_for_times_and_watermarks(broker: Broker, topic_name: str) -> None:
    _create(AdminClient({"bootstrap.servers": broker.bootstrap}), topic_name, 1)
    _produce(broker.bootstrap, topic_name, messages(100, 1), acks="all")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "manual"})
    found = consumer.offsets_for_times([TopicPartition(topic_name, 0, BASE_TS + 42)], timeout=10)
    assert found[0].offset == 42
    beyond = consumer.offsets_for_times([TopicPartition(topic_name, 0, BASE_TS + 10_000)], timeout=10)
    assert beyond[0].offset == -1  # no such record: the end
    assert consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 100)
    consumer.close()


def test_admin_create_describe_delete(broker: Broker, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    _create(admin, topic_name, 2, {"retention.ms": "3600000", "segment.bytes": "1048576"})
    with pytest.raises(KafkaException) as e:
        _create(admin, topic_name, 2)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as e:
        _create(admin, "bad/name", 1)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    with pytest.raises(KafkaException) as e:
        _create(admin, topic_name + "-c", 1, {"cleanup.policy": "compactify"})  # compact is supported (issue 15)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    (res,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic_name)]).values()
    configs = res.result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"
    for f in admin.create_partitions([NewPartitions(topic_name, 4)]).values():
        f.result(timeout=10)
    md = admin.list_topics(timeout=10)
    assert len(md.topics[topic_name].partitions) == 4
    for f in admin.delete_topics([topic_name]).values():
        f.result(timeout=10)
    assert topic_name not in admin.list_topics(timeout=10).topics
    assert not (broker.data_dir / "kafka" / f"{topic_name}-0").exists()


def test_min_insync_replicas_is_enforced_for_acks_all(broker: Broker, topic_name: str) -> None:
    _create(AdminClient({"bootstrap.servers": broker.bootstrap}), topic_name, 1, {"min.insync.replicas": "2"})
    errors: list[int] = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0, "message.timeout.ms": 5000})
    p.produce(topic_name, value=b"x", on_delivery=lambda err, _m: errors.append(err.code() if err else 0))
    p.flush(10)
    assert errors == [KafkaError.NOT_ENOUGH_REPLICAS]
    assert len(_produce(broker.bootstrap, topic_name, messages(3, 1), acks="1")) == 3
