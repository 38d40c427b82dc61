"""The audit log (issue 18) on a real node: a PLAINTEXT inter-broker listener and a SASL_PLAINTEXT one (SCRAM and
PLAIN), ``audit_enabled`` and ``audit_log_to_topic``. Real clients log in (and fail to), create topics and SCRAM users
through the Kafka APIs, and the admin API does the same; the JSON lines in the node's audit files say who, what,
from where and the result, never a password, and the same events are consumed from ``_rafka.audit_log`` with
confluent-kafka."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.certs import Pki, make_pki
from tests.conftest import Broker, free_port_range, running
from tests.integration.helpers import admin_call

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-pw-5c0e9a1b77", "bob": "bob-pw-d21f8e6c40", "eve": "eve-pw-0b9d77e2c1"}
WRONG_PASSWORD = "not-alices-pw-83b1f6"
CAROL_PASSWORD = "carol-pw-kafka-api-6e02d9"
DAVE_PASSWORD = "dave-pw-admin-api-1f7c3a"
AUDIT_TOPIC = "_rafka.audit_log"
WAIT_S = 60
SHARDS = 2  # broker-0 and broker-1: one of them leads the audit topic's partition, the other produces to it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[Broker, int]]:
    b = Broker(tmp_path_factory.mktemp("audit") / "data", shards=SHARDS)
    sasl_port = free_port_range(2 * SHARDS)
    b.extra_args = [
        "--listeners",
        f"INTERNAL://127.0.0.1:{b.port},SASL://127.0.0.1:{sasl_port},MTLS://127.0.0.1:{sasl_port + SHARDS}",
        "--listener-security-protocol-map",
        "INTERNAL:PLAINTEXT,SASL:SASL_PLAINTEXT,MTLS:SSL",
        *pki.server_args(client_auth="required"),
        "--sasl-enabled-mechanisms",
        "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        "--authorization-enabled",
        "true",
        "--super-users",
        "User:alice;User:bob",
        "--audit-enabled",
        "true",
        "--audit-log-to-topic",
        "true",
    ]
    for started in running(b):
        for user, password in PASSWORDS.items():
            body = {"username": user, "password": password, "algorithm": "SCRAM-SHA-512"}
            status, answer = admin_call(started.admin, "POST", "/v1/security/users", body)
            assert status == 201, answer
        yield started, sasl_port
    # After the node stopped: no password reached any audit file or the node's log.
    audit = b"".join(p.read_bytes() for p in (b.data_dir / "audit").iterdir())
    for secret in (*PASSWORDS.values(), WRONG_PASSWORD, CAROL_PASSWORD, DAVE_PASSWORD):
        assert secret.encode() not in audit
        assert secret.encode() not in b.log_path.read_bytes()


def _conf(port: int, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    return {
        "bootstrap.servers": f"127.0.0.1:{port}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def _lines(b: Broker, process: str) -> list[dict[str, Any]]:
    """The lines of ``process``'s audit file (a glob: ``broker-*`` is every shard's)."""
    paths = sorted((b.data_dir / "audit").glob(f"audit-{process}.jsonl"))
    return [json.loads(line) for path in paths for line in path.read_bytes().splitlines()]


def _wait_line(b: Broker, process: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first line of ``process``'s audit file that ``match``es, waiting for the flush (every half second)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [line for line in _lines(b, process) if match(line)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no such line in audit-{process}.jsonl: {_lines(b, process)[-20:]}"
        time.sleep(0.2)


def _logged_in(port: int, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> AdminClient:
    """An admin client that has authenticated (the users reach the shard a moment after the admin API answered)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        admin = AdminClient(_conf(port, user, password, mechanism))
        try:
            admin.list_topics(timeout=5)
            return admin
        except KafkaException:
            assert time.monotonic() < deadline, f"{user} never authenticated"
            time.sleep(0.5)


def test_failed_and_successful_logins_are_lines_with_user_mechanism_result_and_client(
    node: tuple[Broker, int],
) -> None:
    b, port = node
    _logged_in(port, "alice", PASSWORDS["alice"], "PLAIN")
    errors: list[KafkaError] = []
    producer = Producer({**_conf(port, "alice", WRONG_PASSWORD), "error_cb": errors.append})
    deadline = time.monotonic() + WAIT_S
    while not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
    del producer

    ok = _wait_line(b, "broker-*", lambda e: e["kind"] == "authentication" and e["result"] == "success")
    assert (ok["user"], ok["principal"], ok["mechanism"], ok["listener"]) == ("alice", "User:alice", "PLAIN", "SASL")
    assert ok["client"].startswith("127.0.0.1:") and ok["process"].startswith("broker-") and ok["node"] == 1
    assert ok["ts"].endswith("Z") and abs(ok["ts_ms"] / 1000 - time.time()) < 3600
    failed = _wait_line(
        b, "broker-*", lambda e: e["kind"] == "authentication" and e["result"] == "failure" and e["user"] == "alice"
    )
    assert (failed["mechanism"], failed["reason"], failed["listener"]) == ("SCRAM-SHA-512", "bad_credentials", "SASL")
    assert failed["client"].startswith("127.0.0.1:") and failed["principal"] == ""


def test_a_client_certificate_login_is_a_tls_authentication(node: tuple[Broker, int], pki: Pki) -> None:
    b, port = node
    conf = {
        "bootstrap.servers": f"127.0.0.1:{port + SHARDS}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca.cert_file),
        "ssl.certificate.location": str(pki.client.cert_file),
        "ssl.key.location": str(pki.client.key_file),
    }
    assert AdminClient(conf).list_topics(timeout=20).brokers
    line = _wait_line(b, "broker-*", lambda e: e["kind"] == "authentication" and e["mechanism"] == "TLS")
    assert (line["result"], line["listener"], line["principal"]) == (
        "success",
        "MTLS",
        "User:CN=alice,OU=eng,O=acme,C=US",
    )
    assert line["user"] == "CN=alice,OU=eng,O=acme,C=US" and line["client"].startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("client", "reason"), [(None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"), ("foreign_client", "CERTIFICATE_VERIFY_FAILED")]
)
def test_a_failed_tls_handshake_is_a_failed_tls_authentication(
    node: tuple[Broker, int], pki: Pki, client: str | None, reason: str
) -> None:
    b, port = node
    conf: dict[str, Any] = {
        "bootstrap.servers": f"127.0.0.1:{port + SHARDS}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca.cert_file),
    }
    if client is not None:
        issued = getattr(pki, client)
        conf.update({"ssl.certificate.location": str(issued.cert_file), "ssl.key.location": str(issued.key_file)})
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)

    def failed(e: dict[str, Any]) -> bool:
        return e["kind"] == "authentication" and e.get("reason") == "tls_handshake" and reason in e["detail"]

    line = _wait_line(b, "broker-*", failed)
    assert (line["result"], line["listener"], line["mechanism"], line["client"]) == ("failure", "MTLS", "TLS", "")


def test_changes_through_kafka_apis_and_the_admin_api_are_mutations(node: tuple[Broker, int]) -> None:
    b, port = node
    admin = _logged_in(port, "bob", PASSWORDS["bob"])
    kafka_topic, admin_topic = f"audit-kafka-{uuid.uuid4().hex[:8]}", f"audit-admin-{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics([NewTopic(kafka_topic, 2, 1)]).values():
        future.result(timeout=30)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    for future in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", info, CAROL_PASSWORD.encode())]
    ).values():
        future.result(timeout=30)
    status, _ = admin_call(b.admin, "POST", "/v1/topics", {"name": admin_topic, "partitions": 1})
    assert status == 201
    body = {"username": "dave", "password": DAVE_PASSWORD, "algorithm": "SCRAM-SHA-256"}
    status, _ = admin_call(b.admin, "POST", "/v1/security/users", body)
    assert status == 201
    status, _ = admin_call(b.admin, "POST", "/v1/topics", {"name": "bad name!", "partitions": 1})
    assert status == 400

    def kafka(api: str, command: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["kind"] == "mutation" and e["api"] == api and e["commands"][0]["type"] == command

    created = _wait_line(b, "broker-*", kafka("create_topics", "NewTopic"))
    assert (created["principal"], created["source"], created["listener"], created["result"]) == (
        "User:bob",
        "kafka",
        "SASL",
        "success",
    )
    assert created["commands"][0]["name"] == kafka_topic and created["commands"][0]["partitions"] == 2
    assert created["client"].startswith("127.0.0.1:")
    user = _wait_line(b, "broker-*", kafka("alter_user_scram_credentials", "UpsertScramCredential"))
    assert user["principal"] == "User:bob" and user["result"] == "success"
    assert user["commands"] == [
        {"type": "UpsertScramCredential", "user": "carol", "mechanism": "SCRAM-SHA-256", "iterations": 4096}
    ]

    def admin_change(path: str, status: int) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["kind"] == "mutation" and e["api"] == f"POST {path}" and e["status"] == status

    topic = _wait_line(b, "controller", lambda e: admin_change("/v1/topics", 201)(e) and admin_topic in str(e))
    assert topic["source"] == "admin" and topic["result"] == "success" and topic["client"].startswith("127.0.0.1:")
    assert topic["principal"] == ""  # the admin API without authentication: nobody known
    assert topic["commands"] == [
        {
            "type": "NewTopic",
            "name": admin_topic,
            "partitions": 1,
            "replication_factor": 1,
            "configs": {},
            "assignments": None,
        }
    ]
    dave = _wait_line(b, "controller", lambda e: admin_change("/v1/security/users", 201)(e) and "dave" in str(e))
    assert dave["commands"] == [
        {"type": "UpsertScramCredential", "user": "dave", "mechanism": "SCRAM-SHA-256", "iterations": 4096}
    ]
    refused = _wait_line(b, "controller", admin_change("/v1/topics", 400))
    assert refused["result"] == "failure" and refused["commands"] == []
    # The broker's own changes are there too, as internal: its registration.
    registered = _wait_line(b, "broker-*", lambda e: e["kind"] == "mutation" and e["source"] == "internal")
    assert registered["principal"] == "" and registered["commands"][0]["type"] == "RegisterBroker"


def test_an_authorization_denial_is_a_line(node: tuple[Broker, int]) -> None:
    b, port = node
    admin = _logged_in(port, "eve", PASSWORDS["eve"])
    topic = f"audit-denied-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaException):
        for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(timeout=30)

    def denied(e: dict[str, Any]) -> bool:
        return e["kind"] == "authorization" and e["principal"] == "User:eve" and e["api"] == "create_topics"

    line = _wait_line(b, "broker-*", denied)
    assert (line["result"], line["operation"], line["listener"], line["client"]) == (
        "denied",
        "CREATE",
        "SASL",
        "127.0.0.1",
    )
    assert (line["resource_type"], line["resource_name"]) in (("TOPIC", topic), ("CLUSTER", "kafka-cluster"))


def test_clients_cannot_produce_to_the_audit_topic(node: tuple[Broker, int]) -> None:
    _, port = node
    _logged_in(port, "alice", PASSWORDS["alice"])  # a super user
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({**_conf(port, "alice", PASSWORDS["alice"]), "message.timeout.ms": 20000, "retries": 0})
    producer.produce(AUDIT_TOPIC, value=b'{"kind": "forged"}', on_delivery=delivered)
    producer.flush(30)
    assert errors and errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors


def test_events_are_consumed_from_the_audit_topic(node: tuple[Broker, int]) -> None:
    b, port = node
    _logged_in(port, "alice", PASSWORDS["alice"])
    status, _ = admin_call(b.admin, "POST", "/v1/topics", {"name": f"audit-topic-{uuid.uuid4().hex[:8]}"})
    assert status == 201
    consumer = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    got: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + WAIT_S
    assigned = False
    while time.monotonic() < deadline:
        if not assigned:
            if AUDIT_TOPIC not in consumer.list_topics(timeout=5).topics:
                time.sleep(0.5)
                continue
            consumer.assign([TopicPartition(AUDIT_TOPIC, 0, 0)])
            assigned = True
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            key, value = m.key(), m.value()
            assert key is not None and value is not None
            got.append((key, json.loads(value)))
        processes = {k for k, _ in got}
        logins = [e for _, e in got if e["kind"] == "authentication" and e["user"] == "alice"]
        if {b"broker-0", b"broker-1", b"controller"} <= processes and logins:
            break
    consumer.close()
    assert {k for k, _ in got} >= {b"broker-0", b"broker-1", b"controller"}, got[-10:]
    for key, event in got:
        assert key.decode() == event["process"]
    assert any(e["kind"] == "authentication" and e["user"] == "alice" for _, e in got)
    assert any(e["kind"] == "mutation" and e["source"] == "admin" for _, e in got)
    assert not any(e["kind"] == "forged" for _, e in got)
    # Each process's sequence numbers rise in the topic as in its file (one batch per flush, in order).
    for process in (b"broker-0", b"broker-1", b"controller"):
        seqs = [e["seq"] for k, e in got if k == process]
        assert seqs == sorted(seqs)


def test_metrics_count_the_events_by_kind(node: tuple[Broker, int]) -> None:
    b, port = node
    _logged_in(port, "bob", PASSWORDS["bob"])
    deadline = time.monotonic() + WAIT_S
    while True:
        with urllib.request.urlopen(f"{b.admin}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        kinds = [k for k in ("authentication", "mutation") if f'rafka_audit_events_total{{kind="{k}"}}' in metrics]
        if len(kinds) == 2:
            break
        assert time.monotonic() < deadline, [line for line in metrics.splitlines() if "audit" in line]
        time.sleep(0.5)


def test_the_active_controllers_own_changes_are_internal_mutations(node: tuple[Broker, int]) -> None:
    """Last in this module: a shard is killed, the controller fences its broker, the supervisor restarts it."""
    b, port = node
    os.kill(b.shard_pids()[0], signal.SIGKILL)  # shard 0: broker 0

    def fenced(e: dict[str, Any]) -> bool:
        return e["kind"] == "mutation" and any(c["type"] == "FenceBroker" for c in e["commands"])

    line = _wait_line(b, "controller", fenced)
    assert (line["source"], line["api"], line["principal"], line["result"]) == ("internal", "controller", "", "success")
    assert line["commands"][0]["broker_id"] == 0
    # The restarted shard registers a new incarnation and appends to the same file.
    incarnations: set[str] = set()
    deadline = time.monotonic() + WAIT_S
    while len(incarnations) < 2:
        assert time.monotonic() < deadline, incarnations
        time.sleep(0.2)
        for e in _lines(b, "broker-0"):
            if e["kind"] == "mutation" and e["commands"] and e["commands"][0]["type"] == "RegisterBroker":
                incarnations.add(e["commands"][0]["incarnation"])
    b.wait_ready()
    _logged_in(port, "bob", PASSWORDS["bob"])
