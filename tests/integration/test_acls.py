"""ACLs (issue 18): one node with authorization on, a trusted PLAINTEXT inter-broker listener and a SASL_PLAINTEXT
client listener; SCRAM users admin (a super user), alice and bob. ACLs are managed with confluent-kafka's
AdminClient (CreateAcls, DescribeAcls, DeleteAcls) and enforced on real clients: a principal without WRITE gets
TOPIC_AUTHORIZATION_FAILED and appends nothing; a prefixed ACL; a deny overriding an allow; Metadata lists only the
topics a principal may describe; consumer groups need READ on the group; ACL requests with invalid types get
INVALID_REQUEST with a reason, and the broker goes on."""

from __future__ import annotations

import datetime
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kio.schema.create_acls.v1.request import AclCreation, CreateAclsRequest
from kio.schema.create_acls.v1.response import CreateAclsResponse
from kio.schema.describe_acls.v1.request import DescribeAclsRequest
from kio.schema.describe_acls.v1.response import DescribeAclsResponse
from kio.schema.fetch.v4.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.fetch.v4.response import FetchResponse
from kio.serial import entity_reader
from kio.static.primitive import i8, i32, i64

from tests.certs import Pki, make_pki
from tests.conftest import Broker, free_port_range, running
from tests.integration.helpers import admin_call, kafka_request, recv_frame

pytestmark = pytest.mark.integration

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
EXTERNAL_PORT = [0]  # a PLAINTEXT client listener: its clients are User:ANONYMOUS, checked like anyone else
MTLS_PORT = [0]  # an SSL listener that requires client certificates: the principal comes from the subject


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[Broker, int]]:
    root: Path = tmp_path_factory.mktemp("acls")
    b = Broker(root / "data")
    client_port = free_port_range(1)
    EXTERNAL_PORT[0] = free_port_range(1)
    MTLS_PORT[0] = free_port_range(1)
    b.extra_args = [
        "--listeners",
        f"INTERNAL://127.0.0.1:{b.port},CLIENT://127.0.0.1:{client_port},EXTERNAL://127.0.0.1:{EXTERNAL_PORT[0]},"
        f"MTLS://127.0.0.1:{MTLS_PORT[0]}",
        "--listener-security-protocol-map",
        "INTERNAL:PLAINTEXT,CLIENT:SASL_PLAINTEXT,EXTERNAL:PLAINTEXT,MTLS:SSL",
        *pki.server_args(client_auth="required"),
        # The certificate CN=alice,OU=eng,O=acme,C=US is User:alice, the same principal as SASL's alice.
        *("--ssl-principal-mapping-rules", "RULE:^CN=([^,]+),.*$/$1/,DEFAULT"),
        "--authorization-enabled",
        "true",
        "--super-users",
        "User:admin",
    ]
    for started in running(b):
        for user, password in USERS.items():
            body = {"username": user, "password": password, "algorithm": "SCRAM-SHA-512"}
            status, answer = admin_call(started.admin, "POST", "/v1/security/users", body)
            assert status == 201, answer
        yield started, client_port


def conf(port: int, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": f"127.0.0.1:{port}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": USERS[user],
        **extra,
    }


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def admin(port: int) -> AdminClient:
    return AdminClient(conf(port, "admin"))


def create_topic(b: Broker, topic: str) -> None:
    status, created = admin_call(b.admin, "POST", "/v1/topics", {"name": topic, "partitions": 1})
    assert status == 201, created


def allow(
    principal: str,
    op: AclOperation,
    name: str,
    *,
    prefixed: bool = False,
    rt: ResourceType = ResourceType.TOPIC,
    deny: bool = False,
    host: str = "*",
) -> AclBinding:
    return AclBinding(
        rt,
        name,
        ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
        principal,
        host,
        op,
        AclPermissionType.DENY if deny else AclPermissionType.ALLOW,
    )


def create_acls(port: int, *bindings: AclBinding) -> None:
    client = admin(port)  # kept until the results are in: the futures fail once the handle is destroyed
    for future in client.create_acls(list(bindings), request_timeout=30).values():
        future.result()


def produce_one(port: int, user: str, topic: str) -> KafkaError | None:
    """Produce one record as ``user``; its delivery error (None: acknowledged)."""
    outcome: list[KafkaError | None] = []
    producer = Producer(conf(port, user, acks="all", **{"message.timeout.ms": 20000, "retries": 0}))
    producer.produce(topic, b"v", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(30)
    assert outcome, "no delivery report"
    return outcome[0]


def end_offset(port: int, topic: str) -> int:
    c = Consumer(conf(port, "admin", **{"group.id": "offsets-probe"}))
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)[1])
    finally:
        c.close()


def test_a_principal_without_write_is_refused_and_nothing_is_appended(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"guarded-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    err = produce_one(port, "alice", topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert end_offset(port, topic) == 0  # nothing appended
    # The super user writes; once alice is allowed, she does too.
    assert produce_one(port, "admin", topic) is None
    create_acls(port, allow("User:alice", AclOperation.WRITE, topic))
    wait_for(lambda: produce_one(port, "alice", topic) is None, "alice never allowed to write")
    assert end_offset(port, topic) >= 2


def test_a_prefixed_acl_covers_every_topic_of_the_prefix(node: tuple[Broker, int]) -> None:
    b, port = node
    prefix = f"team-{uuid.uuid4().hex[:6]}-"
    create_topic(b, prefix + "a")
    create_topic(b, "other-" + prefix)
    create_acls(port, allow("User:bob", AclOperation.WRITE, prefix, prefixed=True))
    wait_for(lambda: produce_one(port, "bob", prefix + "a") is None, "the prefixed ACL never applied")
    err = produce_one(port, "bob", "other-" + prefix)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_an_acl_for_one_host_applies_to_clients_from_that_address_only(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"by-host-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    create_acls(port, allow("User:bob", AclOperation.WRITE, topic, host="10.9.9.9"))
    err = produce_one(port, "bob", topic)  # bob connects from 127.0.0.1: the ACL is not his
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    create_acls(port, allow("User:bob", AclOperation.WRITE, topic, host="127.0.0.1"))
    wait_for(lambda: produce_one(port, "bob", topic) is None, "the ACL for 127.0.0.1 never applied to bob")


def test_a_deny_overrides_an_allow(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"denied-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    assert produce_one(port, "admin", topic) is None
    group = f"g-{uuid.uuid4().hex[:6]}"
    create_acls(
        port,
        allow("User:alice", AclOperation.READ, topic),
        allow("User:alice", AclOperation.READ, group, rt=ResourceType.GROUP),
    )

    def consume() -> tuple[list[bytes], KafkaError | None]:
        c = Consumer(conf(port, "alice", **{"group.id": group, "auto.offset.reset": "earliest"}))
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        error = None
        deadline = time.monotonic() + 20
        try:
            while not got and error is None and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error() is not None:
                    error = m.error()
                else:
                    got.append(m.value())
        finally:
            c.close()
        return got, error

    wait_for(lambda: bool(consume()[0]), "alice never read with the allow")
    create_acls(port, allow("User:alice", AclOperation.READ, topic, deny=True))

    def refused() -> bool:
        got, error = consume()
        return not got and error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    wait_for(refused, "the deny never took over")


def test_metadata_lists_only_describable_topics(node: tuple[Broker, int]) -> None:
    b, port = node
    visible = f"visible-{uuid.uuid4().hex[:8]}"
    hidden = f"hidden-{uuid.uuid4().hex[:8]}"
    create_topic(b, visible)
    create_topic(b, hidden)
    create_acls(port, allow("User:bob", AclOperation.DESCRIBE, visible))

    def bob_sees() -> set[str]:
        return set(AdminClient(conf(port, "bob")).list_topics(timeout=20).topics)

    wait_for(lambda: visible in bob_sees(), "bob never saw the topic he may describe")
    assert hidden not in bob_sees()
    assert {visible, hidden} <= set(admin(port).list_topics(timeout=20).topics)  # the super user sees all


def test_a_group_needs_read(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"grouped-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    create_acls(port, allow("User:bob", AclOperation.READ, topic))
    c = Consumer(conf(port, "bob", **{"group.id": f"nogroup-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    error = None
    deadline = time.monotonic() + 60
    try:
        while error is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is not None:
                error = m.error()
    finally:
        c.close()
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error


def test_acls_are_described_and_deleted(node: tuple[Broker, int]) -> None:
    _, port = node
    name = f"listed-{uuid.uuid4().hex[:8]}"
    bindings = [allow("User:alice", AclOperation.READ, name), allow("User:bob", AclOperation.WRITE, name)]
    create_acls(port, *bindings)
    only_these = AclBindingFilter(
        ResourceType.TOPIC, name, ResourcePatternType.LITERAL, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    client = admin(port)
    assert set(client.describe_acls(only_these, request_timeout=30).result()) == set(bindings)
    deleted = client.delete_acls([only_these], request_timeout=30)[only_these].result()
    assert set(deleted) == set(bindings)
    assert client.describe_acls(only_these, request_timeout=30).result() == []


def test_a_non_super_user_cannot_change_acls(node: tuple[Broker, int]) -> None:
    _, port = node
    client = AdminClient(conf(port, "alice"))
    futures = client.create_acls([allow("User:alice", AclOperation.ALL, "*")])
    with pytest.raises(KafkaException) as raised:
        for f in futures.values():
            f.result()
    assert raised.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def _raw(port: int, api_key: int, body: Any, response: Any, version: int = 1) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(kafka_request(api_key, version, body))  # not flexible: the helper's header v1 fits
        frame = recv_frame(s)
    decoded, _ = entity_reader(response)(frame[4:], 0)
    return decoded


def test_invalid_acl_requests_get_invalid_request_and_the_broker_goes_on(node: tuple[Broker, int]) -> None:
    b, port = node

    def creation(resource_type: int, pattern: int, name: str = "t", principal: str = "User:x") -> AclCreation:
        return AclCreation(
            resource_type=i8(resource_type),
            resource_name=name,
            resource_pattern_type=i8(pattern),
            principal=principal,
            host="*",
            operation=i8(3),
            permission_type=i8(3),
        )

    request = CreateAclsRequest(
        creations=(
            creation(1, 3),  # ANY resource type: a filter's value
            creation(99, 3),  # a code Kafka does not know
            creation(2, 2),  # MATCH pattern type
            creation(4, 3, name="not-the-cluster"),
            creation(2, 3, principal="no-colon"),
        )
    )
    answer = _raw(b.port, 30, request, CreateAclsResponse)
    codes = [int(r.error_code) for r in answer.results]
    assert codes == [42] * 5, answer
    messages = [r.error_message for r in answer.results]
    assert "resourceType" in messages[0] and "patternType" in messages[2] and "CLUSTER" in messages[3]
    bad_filter = DescribeAclsRequest(
        resource_type_filter=i8(0),
        resource_name_filter=None,
        pattern_type_filter=i8(1),
        principal_filter=None,
        host_filter=None,
        operation=i8(1),
        permission_type=i8(1),
    )
    described = _raw(b.port, 29, bad_filter, DescribeAclsResponse)
    assert int(described.error_code) == 42 and described.error_message
    assert set(admin(port).list_topics(timeout=20).topics) is not None  # still serving


def _fetch_as_replica(port: int, topic: str) -> int:
    """A Fetch v4 claiming to come from broker 0 (the only broker); the partition's error code."""
    request = FetchRequest(
        replica_id=i32(0),
        max_wait=datetime.timedelta(milliseconds=0),
        min_bytes=i32(0),
        max_bytes=i32(1 << 20),
        isolation_level=i8(0),
        topics=(
            FetchTopic(
                topic=topic,
                partitions=(FetchPartition(partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20)),),
            ),
        ),
    )
    answer = _raw(port, 1, request, FetchResponse, version=4)
    return int(answer.responses[0].partitions[0].error_code)


def test_replica_fetches_only_on_the_inter_broker_listener(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    assert produce_one(port, "admin", topic) is None
    # From a client listener, even one whose principal the ACLs would allow nothing: refused, nothing recorded.
    create_acls(port, allow("User:ANONYMOUS", AclOperation.CLUSTER_ACTION, "kafka-cluster", rt=ResourceType.BROKER))
    assert _fetch_as_replica(EXTERNAL_PORT[0], topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # On the (trusted, PLAINTEXT) inter-broker listener it passes authorization and meets the replication rules:
    # broker 0 leads the partition, so it is no follower of it (NOT_LEADER_OR_FOLLOWER, not an authorization error).
    assert _fetch_as_replica(b.port, topic) == KafkaError.NOT_LEADER_FOR_PARTITION


def test_an_anonymous_client_sees_no_topic_without_acls(node: tuple[Broker, int]) -> None:
    b, _ = node
    topic = f"private-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    anonymous = AdminClient({"bootstrap.servers": f"127.0.0.1:{EXTERNAL_PORT[0]}"})
    assert topic not in anonymous.list_topics(timeout=20).topics
    outcome: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{EXTERNAL_PORT[0]}", "message.timeout.ms": 10000})
    producer.produce(topic, b"v", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(30)
    assert outcome and outcome[0] is not None


def test_a_client_certificate_principal_is_authorized_like_any_other(node: tuple[Broker, int], pki: Pki) -> None:
    b, port = node
    topic = f"by-certificate-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    tls = {
        "bootstrap.servers": f"127.0.0.1:{MTLS_PORT[0]}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca.cert_file),
        "ssl.certificate.location": str(pki.client.cert_file),
        "ssl.key.location": str(pki.client.key_file),
    }

    def produce() -> KafkaError | None:
        outcome: list[KafkaError | None] = []
        producer = Producer({**tls, "acks": "all", "message.timeout.ms": 20000, "retries": 0})
        producer.produce(topic, b"v", on_delivery=lambda err, _msg: outcome.append(err))
        producer.flush(30)
        assert outcome, "no delivery report"
        return outcome[0]

    err = produce()
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    create_acls(port, allow("User:alice", AclOperation.WRITE, topic))
    wait_for(lambda: produce() is None, "the certificate's principal never got the ACL")


def test_authorized_operations_are_reported(node: tuple[Broker, int]) -> None:
    b, port = node
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)
    create_acls(port, allow("User:bob", AclOperation.READ, topic))
    bob = AdminClient(conf(port, "bob"))

    def bob_ops() -> set[AclOperation]:
        described = bob.describe_topics(TopicCollection([topic]), include_authorized_operations=True)[topic].result()
        return set(described.authorized_operations or ())

    wait_for(lambda: bool(bob_ops()), "bob never described the topic")
    assert bob_ops() == {AclOperation.READ, AclOperation.DESCRIBE}  # READ implies DESCRIBE
    root = admin(port)
    described = root.describe_topics(TopicCollection([topic]), include_authorized_operations=True)[topic].result()
    assert AclOperation.DELETE in set(described.authorized_operations)
    cluster = root.describe_cluster(include_authorized_operations=True).result()
    assert AclOperation.ALTER in set(cluster.authorized_operations)
    assert bob.describe_cluster(include_authorized_operations=True).result().authorized_operations in (None, [])
