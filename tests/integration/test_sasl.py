"""SASL on the Kafka listeners (issue 18): one node with a PLAINTEXT inter-broker listener, a SASL_PLAINTEXT and a
SASL_SSL listener (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN enabled); users made with the admin API. Real clients
(confluent-kafka, kafka-python, aiokafka, kcat) authenticate, produce and consume (groups too); bad credentials
are refused while the broker and other connections go on; a request before authentication closes the connection;
the raw tokens of SaslHandshake v0 work; librdkafka re-authenticates by itself on a node with a short
connections_max_reauth_ms."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer

from rafka_shards.security.sasl import SASL_TOKEN_BYTES_MAX
from tests.certs import Pki, make_pki
from tests.conftest import Broker, free_port_range, running
from tests.integration.helpers import admin_call, recv_frame

pytestmark = pytest.mark.integration

USERS = {"alice": ("alice-secret", "SCRAM-SHA-512"), "bob": ("bob-secret", "SCRAM-SHA-256")}
MECHANISMS = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"


def _start(root: Path, pki: Pki, reauth_ms: int) -> Iterator[tuple[Broker, dict[str, int]]]:
    b = Broker(root / "data")
    ports = {"INTERNAL": b.port, "SASLPLAIN": free_port_range(1), "SASLSSL": free_port_range(1)}
    b.extra_args = [
        "--listeners",
        ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "--listener-security-protocol-map",
        "INTERNAL:PLAINTEXT,SASLPLAIN:SASL_PLAINTEXT,SASLSSL:SASL_SSL",
        "--ssl-cert-file",
        str(pki.server.cert_file),
        "--ssl-key-file",
        str(pki.server.key_file),
        "--sasl-enabled-mechanisms",
        MECHANISMS,
        "--connections-max-reauth-ms",
        str(reauth_ms),
    ]
    for started in running(b):
        for user, (password, algorithm) in USERS.items():
            body = {"username": user, "password": password, "algorithm": algorithm}
            status, answer = admin_call(started.admin, "POST", "/v1/security/users", body)
            assert status == 201, answer
        yield started, ports


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[Broker, dict[str, int]]]:
    yield from _start(tmp_path_factory.mktemp("sasl"), pki, 0)


def _conf(ports: dict[str, int], pki: Pki, listener: str, user: str, mechanism: str, **extra: Any) -> dict[str, Any]:
    password = USERS.get(user, ("whatever", ""))[0]
    conf: dict[str, Any] = {
        "bootstrap.servers": f"127.0.0.1:{ports[listener]}",
        "security.protocol": "SASL_SSL" if listener == "SASLSSL" else "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        **extra,
    }
    if listener == "SASLSSL":
        conf["ssl.ca.location"] = str(pki.ca.cert_file)
    return conf


def _wait_for_users(conf: dict[str, Any]) -> None:
    """The users reach the shard's image a moment after the admin API answered."""
    deadline = time.monotonic() + 30
    while True:
        try:
            AdminClient(conf).list_topics(timeout=5)
            return
        except KafkaException:
            assert time.monotonic() < deadline, "the users never authenticated"
            time.sleep(0.5)


def _create_topic(b: Broker, topic: str) -> None:
    status, created = admin_call(b.admin, "POST", "/v1/topics", {"name": topic, "partitions": 1})
    assert status == 201, created


def _confluent_round_trip(conf: dict[str, Any], topic: str, count: int = 5) -> None:
    producer = Producer({**conf, "acks": "all", "message.timeout.ms": 30000})
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode())
    assert producer.flush(40) == 0
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None and m.value() is not None:
            got.append(m.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    assert got == [f"v{i}".encode() for i in range(count)]


@pytest.mark.parametrize(
    ("listener", "user", "mechanism"),
    [("SASLSSL", "alice", "SCRAM-SHA-512"), ("SASLPLAIN", "bob", "SCRAM-SHA-256"), ("SASLSSL", "bob", "PLAIN")],
)
def test_confluent_kafka_produces_and_consumes_in_a_group(
    node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str, listener: str, user: str, mechanism: str
) -> None:
    b, ports = node
    conf = _conf(ports, pki, listener, user, mechanism)
    _wait_for_users(conf)
    _create_topic(b, topic_name)
    _confluent_round_trip(conf, topic_name)


@pytest.mark.parametrize(("user", "mechanism"), [("alice", "PLAIN"), ("bob", "SCRAM-SHA-256")])
def test_kafka_python_produces_and_consumes(
    node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str, user: str, mechanism: str
) -> None:
    b, ports = node
    _wait_for_users(_conf(ports, pki, "SASLPLAIN", user, mechanism))
    _create_topic(b, topic_name)
    common: dict[str, Any] = {
        "bootstrap_servers": f"127.0.0.1:{ports['SASLPLAIN']}",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": USERS[user][0],
    }
    producer = KafkaProducer(acks="all", **common)
    for i in range(3):
        producer.send(topic_name, f"k{i}".encode()).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic_name, group_id=f"g-{uuid.uuid4()}", auto_offset_reset="earliest", consumer_timeout_ms=20000, **common
    )
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == 3:
            break
    consumer.close()
    assert got == [b"k0", b"k1", b"k2"]


@pytest.mark.parametrize(("user", "mechanism"), [("alice", "SCRAM-SHA-512"), ("bob", "PLAIN")])
def test_aiokafka_produces_and_consumes_over_tls(
    node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str, user: str, mechanism: str
) -> None:
    b, ports = node
    _wait_for_users(_conf(ports, pki, "SASLSSL", user, mechanism))
    _create_topic(b, topic_name)

    async def run() -> list[bytes]:
        common: dict[str, Any] = {
            "bootstrap_servers": f"127.0.0.1:{ports['SASLSSL']}",
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=str(pki.ca.cert_file)),
            "sasl_mechanism": mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": USERS[user][0],
        }
        producer = AIOKafkaProducer(acks="all", **common)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic_name, f"a{i}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic_name, group_id=f"g-{uuid.uuid4()}", auto_offset_reset="earliest", **common)
        await consumer.start()
        got: list[bytes] = []
        try:
            async with asyncio.timeout(60):
                async for m in consumer:
                    assert m.value is not None
                    got.append(m.value)
                    if len(got) == 3:
                        break
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(run()) == [b"a0", b"a1", b"a2"]


def test_kcat_over_sasl_ssl(node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat is not installed (ops/test.sh installs it)")
    b, ports = node
    _wait_for_users(_conf(ports, pki, "SASLSSL", "alice", "SCRAM-SHA-512"))
    _create_topic(b, topic_name)
    args = [
        kcat,
        "-b",
        f"127.0.0.1:{ports['SASLSSL']}",
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        "sasl.username=alice",
        "-X",
        f"sasl.password={USERS['alice'][0]}",
        "-X",
        f"ssl.ca.location={pki.ca.cert_file}",
        "-t",
        topic_name,
    ]
    subprocess.run([*args, "-P"], input=b"one\ntwo\n", check=True, timeout=60)
    out = subprocess.run([*args, "-C", "-o", "beginning", "-e", "-q"], capture_output=True, check=True, timeout=60)
    assert out.stdout.split() == [b"one", b"two"]


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "whatever")])
def test_bad_credentials_are_refused_and_the_broker_goes_on(
    node: tuple[Broker, dict[str, int]], pki: Pki, user: str, password: str
) -> None:
    b, ports = node
    good = _conf(ports, pki, "SASLPLAIN", "bob", "SCRAM-SHA-256")
    _wait_for_users(good)
    keep = AdminClient(good)  # a connection authenticated before, and still served after
    keep.list_topics(timeout=10)
    bad = {**_conf(ports, pki, "SASLPLAIN", user, "SCRAM-SHA-512"), "sasl.password": password}
    errors: list[KafkaError] = []
    producer = Producer({**bad, "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
    assert "Authentication failed" in errors[0].str()
    del producer
    assert keep.list_topics(timeout=10).brokers
    assert b.alive()
    assert password.encode() not in b.log_path.read_bytes()


def _frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, -1)  # header v1, no client id
    return struct.pack(">i", len(header) + len(body)) + header + body


def test_a_request_before_authentication_closes_the_connection(node: tuple[Broker, dict[str, int]]) -> None:
    b, ports = node
    with socket.create_connection(("127.0.0.1", ports["SASLPLAIN"]), timeout=10) as sock:
        sock.sendall(_frame(3, 1, 7, struct.pack(">i", -1)))  # Metadata v1, all topics
        assert sock.recv(4096) == b""  # closed, nothing answered
    assert b.alive()


def test_raw_tokens_after_a_handshake_v0(node: tuple[Broker, dict[str, int]], pki: Pki) -> None:
    """SaslHandshake v0: the PLAIN token goes raw (length-prefixed, no Kafka header), then requests are served."""
    ports = node[1]
    _wait_for_users(_conf(ports, pki, "SASLPLAIN", "bob", "PLAIN"))
    with socket.create_connection(("127.0.0.1", ports["SASLPLAIN"]), timeout=10) as sock:
        mechanism = b"PLAIN"
        sock.sendall(_frame(17, 0, 1, struct.pack(">h", len(mechanism)) + mechanism))
        answer = recv_frame(sock)
        correlation_id, error_code = struct.unpack(">ih", answer[:6])
        assert (correlation_id, error_code) == (1, 0)
        token = b"\x00bob\x00" + USERS["bob"][0].encode()
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert recv_frame(sock) == b""  # PLAIN's empty answer, raw
        sock.sendall(_frame(3, 1, 2, struct.pack(">i", -1)))  # Metadata v1 now served
        assert struct.unpack(">i", recv_frame(sock)[:4])[0] == 2
    with socket.create_connection(("127.0.0.1", ports["SASLPLAIN"]), timeout=10) as sock:
        sock.sendall(_frame(17, 0, 1, struct.pack(">h", len(mechanism)) + mechanism))
        recv_frame(sock)
        token = b"\x00bob\x00wrong"
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert sock.recv(4096) == b""  # a failed raw exchange is answered by closing


@pytest.fixture
def reauth_node(tmp_path: Path, pki: Pki) -> Iterator[tuple[Broker, dict[str, int]]]:
    yield from _start(tmp_path, pki, 3000)


def test_librdkafka_reauthenticates_by_itself(
    reauth_node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str
) -> None:
    """Sessions last 3 s: librdkafka re-authenticates on the same connection before that (KIP-368), so a producer
    keeps producing well past the lifetime."""
    b, ports = reauth_node
    conf = _conf(ports, pki, "SASLSSL", "alice", "SCRAM-SHA-512")
    _wait_for_users(conf)
    _create_topic(b, topic_name)
    producer = Producer({**conf, "acks": "all", "message.timeout.ms": 30000})
    sent = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        producer.produce(topic_name, value=f"r{sent}".encode())
        sent += 1
        assert producer.flush(10) == 0
        time.sleep(0.25)
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic_name])
    got = 0
    end = time.monotonic() + 60
    while got < sent and time.monotonic() < end:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    consumer.close()
    assert got == sent
    with urllib.request.urlopen(f"{b.admin}/metrics", timeout=30) as r:
        metrics = r.read().decode()
    successes = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rafka_sasl_authentications_total{") and 'result="success"' in line
    ]
    # The producer's and the consumer's connections, and the re-authentications of the producer's.
    assert sum(successes) >= 4, metrics
    assert b"SASL session expired" not in b.log_path.read_bytes()  # re-authenticated in time: never cut off


def _authenticate_frame(correlation_id: int, token: bytes) -> bytes:
    return _frame(36, 1, correlation_id, struct.pack(">i", len(token)) + token)  # SaslAuthenticate v1


def _handshake(sock: socket.socket, mechanism: bytes) -> int:
    sock.sendall(_frame(17, 1, 1, struct.pack(">h", len(mechanism)) + mechanism))
    return int(struct.unpack(">ih", recv_frame(sock)[:6])[1])


def _authenticate_error(sock: socket.socket, token: bytes) -> tuple[int, str | None]:
    """Send one SaslAuthenticate v1; its (error_code, error_message)."""
    sock.sendall(_authenticate_frame(9, token))
    answer = recv_frame(sock)
    (error_code,) = struct.unpack(">h", answer[4:6])
    (length,) = struct.unpack(">h", answer[6:8])
    return error_code, None if length < 0 else answer[8 : 8 + length].decode()


@pytest.mark.parametrize(
    "case",
    [
        "authenticate before handshake",
        "unknown mechanism",
        "malformed client-first",
        "malformed client-final",
        "oversized token",
    ],
)
def test_a_bad_sasl_exchange_fails_alone(node: tuple[Broker, dict[str, int]], pki: Pki, case: str) -> None:
    """Each bad exchange gets its precise error and its connection closed; the broker and an authenticated
    connection go on, and nothing of the attempted secrets reaches the log."""
    b, ports = node
    good = _conf(ports, pki, "SASLPLAIN", "bob", "SCRAM-SHA-256")
    _wait_for_users(good)
    keep = AdminClient(good)
    keep.list_topics(timeout=10)
    secret = b"p=c2VjcmV0LXByb29mLW5vdC1sb2dnZWQ="
    with socket.create_connection(("127.0.0.1", ports["SASLPLAIN"]), timeout=20) as sock:
        if case == "authenticate before handshake":
            sock.sendall(_authenticate_frame(1, b"n,,n=bob,r=abc"))
            answer = recv_frame(sock)
            assert struct.unpack(">h", answer[4:6])[0] == 34  # ILLEGAL_SASL_STATE
        elif case == "unknown mechanism":
            assert _handshake(sock, b"GSSAPI") == 33  # UNSUPPORTED_SASL_MECHANISM, with the enabled list
        elif case == "malformed client-first":
            assert _handshake(sock, b"SCRAM-SHA-256") == 0
            code, message = _authenticate_error(sock, b"\xff\xfenot a scram message" + secret)
            assert code == 58 and message  # SASL_AUTHENTICATION_FAILED, with a reason
            assert secret.decode() not in message
        elif case == "malformed client-final":
            assert _handshake(sock, b"SCRAM-SHA-256") == 0
            assert _authenticate_error(sock, b"n,,n=bob,r=client-nonce")[0] == 0  # server-first comes back
            code, message = _authenticate_error(sock, b"c=biws,r=not-the-nonce," + secret)
            assert code == 58 and message and secret.decode() not in message
        else:
            assert _handshake(sock, b"SCRAM-SHA-256") == 0
            sock.sendall(_authenticate_frame(1, b"n,,n=bob,r=" + b"x" * SASL_TOKEN_BYTES_MAX))
            answer = recv_frame(sock)
            assert struct.unpack(">h", answer[4:6])[0] == 58
        assert sock.recv(4096) == b""  # then closed
    assert keep.list_topics(timeout=10).brokers
    assert b.alive()
    assert secret not in b.log_path.read_bytes()


@pytest.mark.parametrize("when", ["before the handshake", "during the handshake"])
def test_garbage_on_the_tls_listener_closes_only_that_connection(
    node: tuple[Broker, dict[str, int]], pki: Pki, when: str
) -> None:
    b, ports = node
    with socket.create_connection(("127.0.0.1", ports["SASLSSL"]), timeout=20) as sock:
        if when == "during the handshake":
            # A real ClientHello first (from Python's ssl module, driven by hand), then garbage.
            ctx = ssl.create_default_context(cafile=str(pki.ca.cert_file))
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
            sock.sendall(outgoing.read())
        sock.sendall(bytes(range(256)) * 4)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass  # the server's half of the handshake, an alert, then the end
    conf = _conf(ports, pki, "SASLSSL", "alice", "SCRAM-SHA-512")
    _wait_for_users(conf)
    assert AdminClient(conf).list_topics(timeout=10).brokers
    assert b.alive()
