"""Inter-broker traffic over the inter-broker listener's security protocol (issue 18), on real multi-node clusters.

- Three nodes whose inter-broker listener (INTERNAL) and client listener (CLIENT) are both SASL_SSL with
  SCRAM-SHA-512: replica fetchers, the controller's liveness probes and the admin API's requests to brokers log in as
  the configured inter-broker user over TLS, with ACLs enforced. A replication-factor-3 topic gets a full ISR
  (replication works over the secured listener); confluent-kafka produces with acks=all over SASL_SSL; the partition
  leader's node is SIGKILLed (fenced by the probe, leadership moves), more is produced, and every acknowledged message
  is read back; the killed node comes back and rejoins the ISR. No password is in any node's log.
- Two nodes whose inter-broker listener is SSL with client certificates required (mTLS): the brokers present
  their certificates to each other, and replication fills the ISR.
- A node configured with the wrong inter-broker password: the brokers cannot log in to each other, replication
  does not happen (the ISR stays at the leader) and the logs say why, without the password.
- Two nodes with SASL_PLAINTEXT and PLAIN between them and short SASL sessions: brokers log in again in time (KIP-368).

Certificates are made by the test (``tests/certs.py``), with SANs 127.0.0.1 and localhost, and hostnames are
verified. No test asserts speed: each waits, with generous bounds, for the condition it checks.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from kio.schema.api_versions.v0.request import ApiVersionsRequest

from tests.certs import Pki, make_pki
from tests.conftest import free_port_range, stop_all
from tests.integration.helpers import admin_call, kafka_request
from tests.integration.test_cluster import Cluster

pytestmark = pytest.mark.integration

WAIT_S = 90
INTER_USER, INTER_PASSWORD = "interbroker", "inter-broker-Secret-1"
CLIENT_USER, CLIENT_PASSWORD = "alice", "alice-Secret-2"
WRONG_PASSWORD = "not-the-inter-broker-Secret-3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _wait(what: str, check: Callable[[], object], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass  # a node's admin API restarting
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _secure(cluster: Cluster, pki: Pki, protocol: str, extra: list[str]) -> dict[int, int]:
    """Give every node an INTERNAL (inter-broker, ``protocol``) and a CLIENT (SASL_SSL) listener; their ports."""
    client_ports: dict[int, int] = {}
    for i, b in cluster.nodes.items():
        client_ports[i] = free_port_range(1)
        b.extra_args += [
            "--listeners",
            f"INTERNAL://127.0.0.1:{b.port},CLIENT://127.0.0.1:{client_ports[i]}",
            "--listener-security-protocol-map",
            f"INTERNAL:{protocol},CLIENT:SASL_SSL",
            "--inter-broker-listener-name",
            "INTERNAL",
            *pki.server_args(),
            *("--ssl-ca-file", str(pki.ca.cert_file)),  # what the brokers' own connections verify peers with
            "--sasl-enabled-mechanisms",
            "SCRAM-SHA-512,SCRAM-SHA-256",
            *extra,
        ]
    return client_ports


def _sasl_login(password: str = INTER_PASSWORD) -> list[str]:
    return [
        "--inter-broker-sasl-mechanism",
        "SCRAM-SHA-512",
        "--inter-broker-sasl-username",
        INTER_USER,
        "--inter-broker-sasl-password",
        password,
    ]


def _partitions(cluster: Cluster, topic: str) -> list[dict[str, Any]]:
    b = next(b for b in cluster.nodes.values() if b.alive())
    t = b.admin_get(f"/v1/topics/{topic}")
    assert isinstance(t, dict)
    return list(t["partitions"])


def _create_topic(cluster: Cluster, topic: str, replicas: int, configs: dict[str, str]) -> None:
    body = {"name": topic, "partitions": 1, "replication_factor": replicas, "configs": configs}
    status, answer = admin_call(cluster.nodes[cluster.leader()].admin, "POST", "/v1/topics", body)
    assert status == 201, answer


def _client_conf(pki: Pki, client_ports: dict[int, int], live: list[int]) -> dict[str, Any]:
    return {
        "bootstrap.servers": ",".join(f"127.0.0.1:{client_ports[i]}" for i in live),
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": CLIENT_USER,
        "sasl.password": CLIENT_PASSWORD,
        "ssl.ca.location": str(pki.ca.cert_file),
    }


class Acked:
    """What the broker acknowledged, from confluent-kafka's delivery reports."""

    def __init__(self) -> None:
        self.values: dict[bytes, int] = {}  # value -> offset
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.values[msg.value()] = msg.offset()
            else:
                self.errors.append(str(err))


def _produce(conf: dict[str, Any], topic: str, tag: str, count: int, acked: Acked) -> None:
    producer = Producer({**conf, "acks": "all", "enable.idempotence": True, "message.timeout.ms": 120_000})
    for n in range(count):
        producer.produce(topic, b"%s-%05d" % (tag.encode(), n), partition=0, on_delivery=acked)
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0


def _read_all(conf: dict[str, Any], topic: str, expected: int) -> dict[bytes, int]:
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: dict[bytes, int] = {}
    deadline = time.monotonic() + WAIT_S
    while len(got) < expected and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None and m.value() is not None:
            got[m.value()] = m.offset()
    consumer.close()
    return got


def _logs(cluster: Cluster) -> str:
    return "".join(b.log(tail=10**8) for b in cluster.nodes.values())


@pytest.fixture
def sasl_ssl_cluster(tmp_path: Path, pki: Pki) -> Iterator[tuple[Cluster, dict[int, int]]]:
    c = Cluster(tmp_path, size=3, spare=0)
    # Authorization on: replica fetches and the admin API's requests pass as the inter-broker user, nobody else's.
    acl = ["--authorization-enabled", "true", "--super-users", f"User:{CLIENT_USER}"]
    # The audit topic too: brokers not leading it and the controller processes produce to it over the secured
    # inter-broker listener.
    audit = ["--audit-enabled", "true", "--audit-log-to-topic", "true"]
    ports = _secure(c, pki, "SASL_SSL", [*_sasl_login(), *acl, *audit])
    c.start()
    yield c, ports
    stop_all(c.nodes.values())


def test_a_sasl_ssl_cluster_replicates_over_its_inter_broker_listener_and_loses_nothing_when_a_leader_dies(
    sasl_ssl_cluster: tuple[Cluster, dict[int, int]], pki: Pki, topic_name: str
) -> None:
    cluster, client_ports = sasl_ssl_cluster
    body = {"username": CLIENT_USER, "password": CLIENT_PASSWORD, "algorithm": "SCRAM-SHA-512"}
    status, answer = admin_call(cluster.nodes[cluster.leader()].admin, "POST", "/v1/security/users", body)
    assert status == 201, answer
    # The inter-broker listener is TLS: a plaintext Kafka request there gets no Kafka answer (a TLS alert, or closed).
    with socket.create_connection(("127.0.0.1", cluster.nodes[1].port), timeout=10) as sock:
        sock.sendall(kafka_request(18, 0, ApiVersionsRequest()))
        try:
            answer_bytes = sock.recv(64)
        except ConnectionResetError:
            answer_bytes = b""
    assert not answer_bytes or answer_bytes[0] == 0x15, answer_bytes  # 0x15: a TLS alert record

    _create_topic(cluster, topic_name, 3, {"min.insync.replicas": "2"})
    # The ISR fills only if both followers fetched from the leader: over SASL_SSL, logged in as the inter-broker user.
    _wait("a full ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 3)

    conf = _client_conf(pki, client_ports, list(cluster.nodes))
    acked = Acked()
    _produce(conf, topic_name, "before", 300, acked)
    assert len(acked.values) == 300 and not acked.errors

    leader_broker = int(_partitions(cluster, topic_name)[0]["leader"])
    victim = leader_broker // 10 + 1
    cluster.nodes[victim].kill()  # SIGKILL, every process of the node at once
    survivors = [i for i in cluster.nodes if i != victim]
    _wait(
        "leadership to move off the killed node",
        lambda: _partitions(cluster, topic_name)[0]["leader"] not in (leader_broker, -1),
    )
    _produce(_client_conf(pki, client_ports, survivors), topic_name, "after", 300, acked)
    assert len(acked.values) == 600 and not acked.errors

    got = _read_all(_client_conf(pki, client_ports, survivors), topic_name, len(acked.values))
    missing = sorted(set(acked.values) - set(got))
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    assert all(got[v] == off for v, off in acked.values.items()), "a message moved to another offset"

    # Groups as the admin API sees them: it asks the coordinator over the secured inter-broker listener.
    group = f"g-{uuid.uuid4().hex}"
    consumer = Consumer({**_client_conf(pki, client_ports, survivors), "group.id": group})
    consumer.assign([TopicPartition(topic_name, 0, 7)])
    consumer.commit(offsets=[TopicPartition(topic_name, 0, 7)], asynchronous=False)
    consumer.close()
    watcher = cluster.nodes[survivors[0]]

    def group_listed() -> bool:
        listed = watcher.admin_get("/v1/groups")
        assert isinstance(listed, dict)
        return any(g["group_id"] == group for g in listed["groups"]) and not listed["errors"]

    _wait("the admin API to list the group", group_listed)

    # Back: the killed node's follower logs in again, catches up and rejoins the ISR.
    cluster.nodes[victim].start()
    _wait("the restarted node back in the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 3)
    logs = _logs(cluster)
    for secret in (INTER_PASSWORD, CLIENT_PASSWORD):
        assert secret not in logs

    # The audit topic holds lines of several processes: those that produce to its leader log in to the inter-broker
    # listener like the replica fetchers.
    processes: set[str] = set()
    reader = Consumer({**_client_conf(pki, client_ports, list(cluster.nodes)), "group.id": f"audit-{uuid.uuid4().hex}"})
    reader.assign([TopicPartition("_rafka.audit_log", 0, 0)])
    deadline = time.monotonic() + WAIT_S
    try:
        while not ("controller" in processes and len(processes) >= 3) and time.monotonic() < deadline:
            m = reader.poll(0.5)
            if m is not None and m.error() is None and m.value():
                processes.add(json.loads(m.value())["process"])
    finally:
        reader.close()
    assert "controller" in processes and len(processes) >= 3, processes


def test_mtls_between_brokers_replicates(tmp_path: Path, pki: Pki, topic_name: str) -> None:
    """SSL inter-broker listener requiring client certificates: each broker presents ssl_cert_file."""
    cluster = Cluster(tmp_path, size=2, spare=0)
    _secure(cluster, pki, "SSL", ["--ssl-client-auth", "required", *_sasl_login()])
    try:
        cluster.start()
        _create_topic(cluster, topic_name, 2, {})
        _wait("a full ISR over mTLS", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 2)
    finally:
        stop_all(cluster.nodes.values())


def test_a_wrong_inter_broker_password_stops_replication_and_the_log_says_why(
    tmp_path: Path, pki: Pki, topic_name: str
) -> None:
    cluster = Cluster(tmp_path, size=2, spare=0)
    _secure(cluster, pki, "SASL_SSL", ["--replica-lag-time-max-ms", "2000"])
    cluster.nodes[1].extra_args += _sasl_login()
    cluster.nodes[2].extra_args += _sasl_login(WRONG_PASSWORD)
    try:
        cluster.start()  # the quorum and the shards' registration do not need the inter-broker login
        _create_topic(cluster, topic_name, 2, {})
        refusal = f"login as '{INTER_USER}' failed: SaslAuthenticate answered SASL_AUTHENTICATION_FAILED"

        def follower_says_why() -> bool:
            return any("fetching from broker" in line and refusal in line for line in _logs(cluster).splitlines())

        _wait("the follower's log to tell why it cannot fetch", follower_says_why)
        # A new partition starts with every replica in its ISR; the leader drops the follower that never fetches.
        _wait("the follower out of the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 1)
        time.sleep(3)  # several fetch retries later, it has not come back
        assert len(_partitions(cluster, topic_name)[0]["isr"]) == 1
        logs = _logs(cluster)
        assert WRONG_PASSWORD not in logs and INTER_PASSWORD not in logs
    finally:
        stop_all(cluster.nodes.values())


def test_brokers_log_in_again_before_their_sasl_session_ends(tmp_path: Path, pki: Pki, topic_name: str) -> None:
    """SASL_PLAINTEXT with PLAIN between brokers, sessions of 1.5 s (KIP-368): the fetchers and probes log in again
    on their connections in time, so no broker closes one as expired and the ISR stays full."""
    cluster = Cluster(tmp_path, size=2, spare=0)
    _secure(
        cluster,
        pki,
        "SASL_PLAINTEXT",
        [
            "--connections-max-reauth-ms",
            "1500",
            "--sasl-enabled-mechanisms",
            "PLAIN,SCRAM-SHA-512",
            *_sasl_login(),
            "--inter-broker-sasl-mechanism",
            "PLAIN",
        ],
    )
    try:
        cluster.start()
        _create_topic(cluster, topic_name, 2, {})
        _wait("a full ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 2)
        time.sleep(6)  # four session lifetimes
        assert len(_partitions(cluster, topic_name)[0]["isr"]) == 2
        logs = _logs(cluster)
        assert "SASL session expired" not in logs
        assert "login as" not in logs  # no login failed
        assert INTER_PASSWORD not in logs
    finally:
        stop_all(cluster.nodes.values())
