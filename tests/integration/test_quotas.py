"""Client quotas (issue 18, KIP-13 / KIP-124 / KIP-219 / KIP-546) on real one-shard nodes: AlterClientQuotas and
DescribeClientQuotas over the wire (neither confluent-kafka 2.x nor kafka-python has an admin call for them, so the
project's own client sends kio requests); a confluent-kafka producer and consumer above their byte rates see
librdkafka's throttle callbacks (the broker's throttle_time_ms) while the broker stays up; a raw Produce shows the
throttle time in the response and the connection muted for it (v8) or the response held (v5); a tiny
request_percentage throttles Metadata; the metrics count the throttling per client id. On a node with authorization
on, the two APIs need ALTER_CONFIGS / DESCRIBE_CONFIGS on the cluster, and a /users/alice quota throttles alice's
SASL producer."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kio.schema.alter_client_quotas.v1.request import AlterClientQuotasRequest, OpData
from kio.schema.alter_client_quotas.v1.request import EntityData as AlterEntity
from kio.schema.alter_client_quotas.v1.request import EntryData as AlterEntry
from kio.schema.alter_client_quotas.v1.response import AlterClientQuotasResponse
from kio.schema.describe_client_quotas.v0.request import ComponentData as ComponentV0
from kio.schema.describe_client_quotas.v0.request import DescribeClientQuotasRequest as DescribeV0
from kio.schema.describe_client_quotas.v0.response import DescribeClientQuotasResponse as DescribeV0Response
from kio.schema.describe_client_quotas.v1.request import ComponentData, DescribeClientQuotasRequest
from kio.schema.describe_client_quotas.v1.response import DescribeClientQuotasResponse
from kio.schema.metadata.v12.request import MetadataRequest
from kio.schema.metadata.v12.response import MetadataResponse
from kio.static.primitive import f64, i8

from rafka_shards.ipc.kafka_client import KafkaClient
from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker, free_port_range, running
from tests.integration.helpers import BASE_TS, admin_call

pytestmark = pytest.mark.integration

RESPONSE_MAX = 1 << 20
RATE = 20_000  # bytes per second: 1 KiB messages go over it within a second
DEADLINE_S = 90.0  # generous: two cores shared with other test workers


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("quotas") / "data")
    yield from running(b)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _request(port: int, request: Any, response_type: Any, client_id: str = "quota-admin") -> Any:
    client = await KafkaClient.connect(
        "127.0.0.1", port, client_id=client_id, response_bytes_max=RESPONSE_MAX, timeout_s=30
    )
    try:
        return await client.request(request, response_type, timeout_s=30)
    finally:
        client.close()


def _alter(
    node: Broker,
    entity: dict[str, str | None],
    ops: dict[str, float | None],
    validate_only: bool = False,
    port: int | None = None,
) -> tuple[int, str | None]:
    req = AlterClientQuotasRequest(
        entries=(
            AlterEntry(
                entity=tuple(AlterEntity(entity_type=t, entity_name=n) for t, n in entity.items()),
                ops=tuple(OpData(key=k, value=f64(v or 0.0), remove=v is None) for k, v in ops.items()),
            ),
        ),
        validate_only=validate_only,
    )
    resp = _run(_request(port or node.port, req, AlterClientQuotasResponse))
    (entry,) = resp.entries
    return int(entry.error_code.value), entry.error_message


def _describe(
    node: Broker, components: list[tuple[str, int, str | None]], strict: bool = False, port: int | None = None
) -> Any:
    req = DescribeClientQuotasRequest(
        components=tuple(ComponentData(entity_type=t, match_type=i8(m), match=s) for t, m, s in components),
        strict=strict,
    )
    return _run(_request(port or node.port, req, DescribeClientQuotasResponse))


def _entries(resp: Any) -> dict[tuple[tuple[str, str | None], ...], dict[str, float]]:
    return {
        tuple((e.entity_type, e.entity_name) for e in entry.entity): {v.key: float(v.value) for v in entry.values}
        for entry in resp.entries
    }


def test_alter_and_describe_client_quotas(node: Broker) -> None:
    tag = uuid.uuid4().hex[:8]
    user, client = f"alice-{tag}", f"app-{tag}"
    assert _alter(node, {"user": user}, {"producer_byte_rate": 1024.0}, validate_only=True) == (0, None)
    assert _entries(_describe(node, [("user", 0, user)])) == {}  # validate_only changed nothing
    assert _alter(node, {"user": user}, {"producer_byte_rate": 1024.0, "request_percentage": 25.5}) == (0, None)
    assert _alter(node, {"user": user, "client-id": client}, {"consumer_byte_rate": 2048.0}) == (0, None)
    assert _alter(node, {"client-id": None}, {"consumer_byte_rate": 1e9}) == (0, None)

    assert _entries(_describe(node, [("user", 0, user)])) == {
        (("user", user),): {"producer_byte_rate": 1024.0, "request_percentage": 25.5},
        (("client-id", client), ("user", user)): {"consumer_byte_rate": 2048.0},
    }
    assert _entries(_describe(node, [("user", 0, user)], strict=True)) == {
        (("user", user),): {"producer_byte_rate": 1024.0, "request_percentage": 25.5}
    }
    assert (("client-id", None),) in _entries(_describe(node, [("client-id", 1, None)]))
    # Version 0 (not flexible) answers the same.
    v0 = DescribeV0(components=(ComponentV0(entity_type="user", match_type=i8(0), match=user),), strict=True)
    assert _entries(_run(_request(node.port, v0, DescribeV0Response))) == {
        (("user", user),): {"producer_byte_rate": 1024.0, "request_percentage": 25.5}
    }

    # Removing a key; removing the last one removes the entity.
    assert _alter(node, {"user": user}, {"request_percentage": None}) == (0, None)
    assert _alter(node, {"user": user, "client-id": client}, {"consumer_byte_rate": None}) == (0, None)
    assert _alter(node, {"client-id": None}, {"consumer_byte_rate": None}) == (0, None)
    assert _entries(_describe(node, [("user", 0, user)])) == {(("user", user),): {"producer_byte_rate": 1024.0}}
    assert _alter(node, {"user": user}, {"producer_byte_rate": None}) == (0, None)


@pytest.mark.parametrize(
    ("entity", "ops", "fragment"),
    [
        ({"user": "x"}, {"bogus_rate": 1.0}, "Invalid configuration key bogus_rate"),
        ({"user": "x"}, {"producer_byte_rate": -5.0}, "must be a positive number"),
        ({"user": "x"}, {"producer_byte_rate": 10.5}, "must be a whole number"),
        ({"ip": "nowhere"}, {"connection_creation_rate": 1.0}, "not a valid IP"),
        ({"ip": None, "user": "x"}, {"producer_byte_rate": 1.0}, "IP entity should not be combined"),
        ({"group": "g"}, {"producer_byte_rate": 1.0}, "Unhandled client quota entity type: group"),
    ],
)
def test_bad_alterations_are_invalid_request(
    node: Broker, entity: dict[str, str | None], ops: dict[str, float | None], fragment: str
) -> None:
    for validate_only in (True, False):
        code, message = _alter(node, entity, ops, validate_only)
        assert code == 42 and message is not None and fragment in message, (code, message)


def test_bad_describe_filters(node: Broker) -> None:
    resp = _describe(node, [("user", 0, None)])
    assert int(resp.error_code.value) == 42 and resp.entries is None
    assert resp.error_message == "Request specified MATCH_TYPE_EXACT, but set match string to null."
    resp = _describe(node, [("group", 2, None)])
    assert int(resp.error_code.value) == 35 and resp.error_message == "Unsupported entity type group"
    assert _describe(node, []).error_code.value == 0  # the broker is still there


def _wait_for(condition: Any, what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _metrics(node: Broker) -> str:
    with urllib.request.urlopen(f"{node.admin}/metrics", timeout=30) as r:
        text: str = r.read().decode()
    return text


def _metric_value(text: str, name: str, client_id: str, quota_type: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'client_id="{client_id}"' in line and f'quota_type="{quota_type}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_producer_over_its_byte_rate_is_throttled(node: Broker) -> None:
    client_id = f"slow-producer-{uuid.uuid4().hex[:8]}"
    topic = f"quota-produce-{uuid.uuid4().hex[:8]}"
    assert _alter(node, {"client-id": client_id}, {"producer_byte_rate": float(RATE)}) == (0, None)
    throttles: list[float] = []
    p = Producer(
        {
            "bootstrap.servers": node.bootstrap,
            "client.id": client_id,
            "linger.ms": 5,
            "batch.size": 4096,
            "throttle_cb": lambda event: throttles.append(event.throttle_time),
        }
    )
    delivered: list[Any] = []
    payload = b"x" * 1024
    for i in range(300):  # 300 KiB, 15 s of quota at 20 KB/s: well over it
        p.produce(topic, payload, key=str(i).encode(), on_delivery=lambda err, msg: delivered.append(err))
        p.poll(0)
        if throttles:
            break
    _wait_for(lambda: p.poll(0.2) is not None and bool(throttles), "a throttle callback")
    p.flush(60)
    assert throttles and max(throttles) > 0
    assert all(err is None for err in delivered)  # throttled, not failed
    text = _metrics(node)
    assert _metric_value(text, "rafka_quota_throttle_time_ms_total", client_id, "produce") > 0
    assert _metric_value(text, "rafka_quota_bytes_total", client_id, "produce") > RATE


def test_consumer_over_its_byte_rate_is_throttled(node: Broker) -> None:
    client_id = f"slow-consumer-{uuid.uuid4().hex[:8]}"
    topic = f"quota-fetch-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": node.bootstrap, "linger.ms": 5, "batch.size": 16384})  # many batches
    for i in range(300):
        p.produce(topic, b"y" * 1024, key=str(i).encode())
    assert p.flush(60) == 0
    assert _alter(node, {"client-id": client_id}, {"consumer_byte_rate": float(RATE)}) == (0, None)
    throttles: list[float] = []
    c = Consumer(
        {
            "bootstrap.servers": node.bootstrap,
            "client.id": client_id,
            "group.id": f"g-{client_id}",
            "auto.offset.reset": "earliest",
            "throttle_cb": lambda event: throttles.append(event.throttle_time),
        }
    )
    received = 0
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S
        while received < 300 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                received += 1
    finally:
        c.close()
    assert received == 300  # every record arrives, paced
    assert throttles and max(throttles) > 0
    text = _metrics(node)
    assert _metric_value(text, "rafka_quota_throttle_time_ms_total", client_id, "fetch") > 0


@pytest.mark.parametrize("version", [5, 8])
def test_raw_produce_carries_throttle_time(node: Broker, version: int) -> None:
    """The broker's own bytes: a Produce response with throttle_time_ms. v8 (KIP-219: the client throttles itself):
    answered at once, then the connection muted, so the next request on it is answered only once (most of) the
    throttle time has passed; v5: the response itself is held for the throttle time."""
    request_module = importlib.import_module(f"kio.schema.produce.v{version}.request")
    response_type = importlib.import_module(f"kio.schema.produce.v{version}.response").ProduceResponse
    client_id = f"raw-v{version}-{uuid.uuid4().hex[:8]}"
    topic = f"quota-raw-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": node.bootstrap})
    p.produce(topic, b"create")  # auto-creates the topic
    assert p.flush(60) == 0
    assert _alter(node, {"client-id": client_id}, {"producer_byte_rate": 1000.0}) == (0, None)
    batch = build_batch([Record(None, b"z" * 30_000, BASE_TS)])
    partition = request_module.PartitionProduceData(index=0, records=batch)
    request = request_module.ProduceRequest(
        transactional_id=None,
        acks=1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(request_module.TopicProduceData(name=topic, partition_data=(partition,)),),
    )
    metadata = MetadataRequest(topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False)

    async def scenario() -> tuple[int, int, float, float]:
        client = await KafkaClient.connect(
            "127.0.0.1", node.port, client_id=client_id, response_bytes_max=RESPONSE_MAX, timeout_s=60
        )
        try:
            sent = time.monotonic()
            first = await client.request(request, response_type, timeout_s=60)
            answered = time.monotonic()
            await client.request(metadata, MetadataResponse, timeout_s=60)
            code = int(first.responses[0].partition_responses[0].error_code.value)
            throttle_ms = int(first.throttle_time.total_seconds() * 1000)
            return code, throttle_ms, answered - sent, time.monotonic() - answered
        finally:
            client.close()

    code, throttle_ms, produce_s, next_s = _run(scenario())
    assert code == 0
    # 30 kB over 10 s at 1 kB/s: (3000 - 1000) / 1000 * 10 s, bounded by the 11 windows of 1 s.
    assert 10_000 <= throttle_ms <= 11_000
    waited_s = produce_s if version < 6 else next_s
    assert waited_s >= throttle_ms / 1000 * 0.5


def test_request_percentage_throttles_metadata(node: Broker) -> None:
    client_id = f"busy-{uuid.uuid4().hex[:8]}"
    assert _alter(node, {"client-id": client_id}, {"request_percentage": 0.0001}) == (0, None)

    async def scenario() -> int:
        client = await KafkaClient.connect(
            "127.0.0.1", node.port, client_id=client_id, response_bytes_max=RESPONSE_MAX, timeout_s=60
        )
        try:
            for _ in range(20):
                resp = await client.request(
                    MetadataRequest(
                        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
                    ),
                    MetadataResponse,
                    timeout_s=60,
                )
                throttle_ms = int(resp.throttle_time.total_seconds() * 1000)
                if throttle_ms > 0:
                    return throttle_ms
            return 0
        finally:
            client.close()

    throttle_ms = _run(scenario())
    assert 0 < throttle_ms <= 1000  # bounded by one quota window
    assert _metric_value(_metrics(node), "rafka_quota_throttles_total", client_id, "request") > 0


# ---- a secured node: authorization on, SCRAM users, a user quota -------------------------------------------------

SECURE_USERS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, int, int]]:
    """INTERNAL (PLAINTEXT, the trusted inter-broker listener), EXTERNAL (PLAINTEXT: User:ANONYMOUS, checked like
    anyone) and CLIENT (SASL_PLAINTEXT, SCRAM users admin, a super user, and alice)."""
    b = Broker(tmp_path_factory.mktemp("quotas-secured") / "data")
    external, client = free_port_range(1), free_port_range(1)
    b.extra_args = [
        *("--listeners", f"INTERNAL://127.0.0.1:{b.port},EXTERNAL://127.0.0.1:{external},CLIENT://127.0.0.1:{client}"),
        *("--listener-security-protocol-map", "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CLIENT:SASL_PLAINTEXT"),
        *("--sasl-enabled-mechanisms", "SCRAM-SHA-512"),
        *("--authorization-enabled", "true", "--super-users", "User:admin"),
    ]
    for started in running(b):
        for user, password in SECURE_USERS.items():
            body = {"username": user, "password": password, "algorithm": "SCRAM-SHA-512"}
            status, answer = admin_call(started.admin, "POST", "/v1/security/users", body)
            assert status == 201, answer
        yield started, external, client


def _sasl(port: int, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": f"127.0.0.1:{port}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": SECURE_USERS[user],
        **extra,
    }


def test_quota_apis_need_cluster_permissions(secured: tuple[Broker, int, int]) -> None:
    """Kafka's rule: ALTER_CONFIGS on the cluster for AlterClientQuotas, DESCRIBE_CONFIGS for DescribeClientQuotas;
    without them CLUSTER_AUTHORIZATION_FAILED and nothing changes."""
    node, external, _ = secured
    assert _alter(node, {"user": "mallory"}, {"producer_byte_rate": 1e9}, port=external)[0] == 31
    described = _describe(node, [], port=external)
    assert int(described.error_code.value) == 31 and described.entries is None
    assert _entries(_describe(node, [("user", 0, "mallory")])) == {}  # the trusted listener sees nothing changed


def test_a_user_quota_throttles_that_user(secured: tuple[Broker, int, int]) -> None:
    """/users/alice: alice's producer over SASL is throttled whatever its client id, and the metrics name her."""
    node, _, client = secured
    topic = f"alice-{uuid.uuid4().hex[:8]}"
    status, created = admin_call(node.admin, "POST", "/v1/topics", {"name": topic, "partitions": 1})
    assert status == 201, created
    acl = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        "User:alice",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    admin = AdminClient(_sasl(client, "admin"))
    for future in admin.create_acls([acl], request_timeout=30).values():
        future.result()
    assert _alter(node, {"user": "alice"}, {"producer_byte_rate": float(RATE)}) == (0, None)
    throttles: list[float] = []
    p = Producer(
        _sasl(
            client,
            "alice",
            **{
                "client.id": f"any-{uuid.uuid4().hex[:6]}",
                "linger.ms": 5,
                "batch.size": 4096,
                "throttle_cb": lambda event: throttles.append(event.throttle_time),
            },
        )
    )
    errors: list[Any] = []
    for i in range(300):
        p.produce(topic, b"a" * 1024, key=str(i).encode(), on_delivery=lambda err, msg: errors.append(err))
        p.poll(0)
    _wait_for(lambda: p.poll(0.2) is not None and bool(throttles), "a throttle callback for alice")
    assert p.flush(90) == 0
    assert all(err is None for err in errors) and len(errors) == 300
    text = _metrics(node)
    throttled = [
        line
        for line in text.splitlines()
        if line.startswith("rafka_quota_throttle_time_ms_total{") and 'user="alice"' in line and 'client_id=""' in line
    ]
    assert throttled and float(throttled[0].rsplit(" ", 1)[1]) > 0
