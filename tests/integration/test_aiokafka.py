"""aiokafka 0.14 against a real broker process."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidTopicError, TopicAlreadyExistsError

from tests.conftest import Broker
from tests.integration.helpers import BASE_TS, by_partition, messages

pytestmark = pytest.mark.integration
PARTITIONS = 2


async def _roundtrip(bootstrap: str, topic: str, acks: object, compression: str | None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    msgs = messages(200, PARTITIONS, str(compression))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=acks, compression_type=compression)
    await producer.start()
    futures = [
        await producer.send(
            topic, key=m.key, value=m.value, partition=m.partition, headers=list(m.headers), timestamp_ms=m.timestamp
        )
        for m in msgs
    ]
    metas = await asyncio.gather(*futures)
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    await consumer.seek_to_beginning()
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(msgs) and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got.extend(records)
    tp = TopicPartition(topic, 0)
    found = await consumer.offsets_for_times({tp: BASE_TS + 20})
    await consumer.stop()
    assert len(got) == len(msgs)
    for p, expected in by_partition(msgs).items():
        mine = [r for r in got if r.partition == p]
        assert [r.offset for r in mine] == list(range(len(expected)))
        assert [(r.key, r.value, tuple(r.headers), r.timestamp) for r in mine] == [
            (m.key, m.value, m.headers, m.timestamp) for m in expected
        ]
    if acks != 0:
        assert sorted((m.partition, m.offset) for m in metas) == sorted((r.partition, r.offset) for r in got)
    assert found[tp] is not None and found[tp].offset == 10  # partition 0 holds every other message


@pytest.mark.parametrize(("acks", "compression"), [(0, None), (1, "gzip"), ("all", "lz4"), ("all", "zstd")])
def test_produce_and_consume(broker: Broker, topic_name: str, acks: object, compression: str | None) -> None:
    asyncio.run(_roundtrip(broker.bootstrap, topic_name, acks, compression))


async def _admin(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"retention.ms": "60000"})])
        # aiokafka returns per-topic errors in the response instead of raising them.
        response = await admin.create_topics([NewTopic(topic, 1, 1)])
        assert [e[1] for e in response.topic_errors] == [TopicAlreadyExistsError.errno]
        response = await admin.create_topics([NewTopic("bad name", 1, 1)])
        assert [e[1] for e in response.topic_errors] == [InvalidTopicError.errno]
        assert topic in await admin.list_topics()
        await admin.delete_topics([topic])
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


def test_admin(broker: Broker, topic_name: str) -> None:
    asyncio.run(_admin(broker.bootstrap, topic_name))


def test_consumer_group_with_manual_commit(broker: Broker, topic_name: str) -> None:
    """AIOKafkaConsumer(group_id=...) with enable_auto_commit=False: explicit commits of chosen offsets, read back
    by committed() and honoured by the group's next consumer."""

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for p in range(PARTITIONS):
            for i in range(10):
                await producer.send_and_wait(topic_name, value=f"{p}-{i}".encode(), partition=p)
        await producer.stop()

        async def consumer_of_group() -> AIOKafkaConsumer:
            c = AIOKafkaConsumer(
                topic_name,
                bootstrap_servers=broker.bootstrap,
                group_id="aiokafka-group",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await c.start()
            return c

        consumer = await consumer_of_group()
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 2 * 10 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(r.value for r in records)
        assert len(got) == 20
        tps = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
        await consumer.commit({tps[0]: 7, tps[1]: 10})
        assert [await consumer.committed(tp) for tp in tps] == [7, 10]
        await consumer.stop()

        consumer = await consumer_of_group()
        again: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(again) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                again.extend(r.value for r in records)
        await consumer.stop()
        assert sorted(again) == [b"0-7", b"0-8", b"0-9"]

    asyncio.run(run())
