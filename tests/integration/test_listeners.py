"""Named listeners (issue 18): one node of two shards serving an INTERNAL plaintext listener, a CLIENT plaintext
listener advertised under another host name, and an SSL listener that requires client certificates. Metadata (and
FindCoordinator) answer with the addresses of the listener the client came in on; real clients produce and consume
over each; a client without a certificate, with an expired one or one from another CA is refused on the SSL listener
while the other listeners keep serving. Certificates are made in the test (tests/certs.py)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.certs import Pki, issue, make_pki, name
from tests.conftest import Broker, free_port_range, running
from tests.integration.helpers import admin_call

pytestmark = pytest.mark.integration

SHARDS = 2


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def node(tmp_path: Path, pki: Pki) -> Iterator[tuple[Broker, dict[str, int]]]:
    client_port, ssl_port = free_port_range(SHARDS), free_port_range(SHARDS)
    b = Broker(tmp_path / "data", shards=SHARDS)
    ports = {"INTERNAL": b.port, "CLIENT": client_port, "SECURE": ssl_port}
    b.extra_args = [
        "--listeners",
        ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "--advertised-listeners",
        f"CLIENT://localhost:{client_port}",
        "--listener-security-protocol-map",
        "INTERNAL:PLAINTEXT,CLIENT:PLAINTEXT,SECURE:SSL",
        *pki.server_args(client_auth="required"),
    ]
    for started in running(b):
        yield started, ports


def _ssl(pki: Pki, client: Any = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca.cert_file)}
    if client is not None:
        conf.update({"ssl.certificate.location": str(client.cert_file), "ssl.key.location": str(client.key_file)})
    return conf


def _brokers(conf: dict[str, Any]) -> dict[int, str]:
    md = AdminClient(conf).list_topics(timeout=20)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def _round_trip(conf: dict[str, Any], topic: str, tag: str) -> None:
    """Produce one record to each partition with acks=all and read them back, all over ``conf``'s listener."""
    producer = Producer({**conf, "acks": "all", "message.timeout.ms": 30000})
    for p in range(SHARDS):
        producer.produce(topic, value=f"{tag}-{p}".encode(), partition=p)
    assert producer.flush(40) == 0
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(SHARDS)])
    got: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(got & {f"{tag}-{p}".encode() for p in range(SHARDS)}) < SHARDS and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        value = None if m is None or m.error() is not None else m.value()
        if value is not None:
            got.add(value)
    consumer.close()
    assert {f"{tag}-{p}".encode() for p in range(SHARDS)} <= got


def test_each_listener_describes_the_brokers_by_its_own_addresses_and_serves_clients(
    node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str
) -> None:
    b, ports = node
    status, created = admin_call(b.admin, "POST", "/v1/topics", {"name": topic_name, "partitions": SHARDS})
    assert status == 201, created
    internal = {"bootstrap.servers": f"127.0.0.1:{ports['INTERNAL']}"}
    client = {"bootstrap.servers": f"127.0.0.1:{ports['CLIENT']}"}
    secure = {"bootstrap.servers": f"127.0.0.1:{ports['SECURE']}", **_ssl(pki, pki.client)}
    assert _brokers(internal) == {i: f"127.0.0.1:{ports['INTERNAL'] + i}" for i in range(SHARDS)}
    assert _brokers(client) == {i: f"localhost:{ports['CLIENT'] + i}" for i in range(SHARDS)}
    assert _brokers(secure) == {i: f"127.0.0.1:{ports['SECURE'] + i}" for i in range(SHARDS)}
    for conf, tag in ((internal, "internal"), (client, "client"), (secure, "secure")):
        _round_trip(conf, topic_name, tag)  # consumer groups too: FindCoordinator answers on the same listener
    registered = b.admin_get("/v1/brokers")
    assert isinstance(registered, list) and len(registered) == SHARDS


@pytest.mark.parametrize("who", ["no certificate", "expired", "another CA", "no TLS at all"])
def test_the_ssl_listener_refuses_clients_it_cannot_authenticate(
    node: tuple[Broker, dict[str, int]], pki: Pki, who: str
) -> None:
    b, ports = node
    bootstrap = {"bootstrap.servers": f"127.0.0.1:{ports['SECURE']}", "socket.timeout.ms": 5000}
    conf = {
        "no certificate": {**bootstrap, **_ssl(pki)},
        "expired": {**bootstrap, **_ssl(pki, pki.expired_client)},
        "another CA": {**bootstrap, **_ssl(pki, pki.foreign_client)},
        "no TLS at all": bootstrap,
    }[who]
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)
    # The shard is up and the other listeners unaffected.
    assert _brokers({"bootstrap.servers": f"127.0.0.1:{ports['INTERNAL']}"})
    assert _brokers({**bootstrap, **_ssl(pki, pki.client)})
    assert b.alive()


def test_a_rotated_server_certificate_is_used_without_a_restart(
    node: tuple[Broker, dict[str, int]], pki: Pki, tmp_path: Path
) -> None:
    """Replace the certificate and key files: new TLS connections get the new certificate (the shard checks the
    files every few seconds), while the node keeps running."""
    b, ports = node

    def served_subject() -> str:
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert_file))
        ctx.load_cert_chain(str(pki.client.cert_file), str(pki.client.key_file))
        with (
            socket.create_connection(("127.0.0.1", ports["SECURE"]), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        orgs = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(orgs[0].value) if orgs else ""

    assert served_subject() == ""
    (tmp_path / "renewed").mkdir()
    subject = name((NameOID.ORGANIZATION_NAME, "renewed"), (NameOID.COMMON_NAME, "localhost"))
    renewed = issue(tmp_path / "renewed", "server", pki.ca, subject, server=True)
    for new, old in ((renewed.key_file, pki.server.key_file), (renewed.cert_file, pki.server.cert_file)):
        os.replace(new, old)  # as a certificate manager does: each file replaced whole
    deadline = time.monotonic() + 120
    while served_subject() != "renewed":
        assert time.monotonic() < deadline, "the renewed certificate is not served"
        time.sleep(0.5)
    assert b.alive()


def test_kcat_over_mutual_tls(node: tuple[Broker, dict[str, int]], pki: Pki, topic_name: str) -> None:
    """kcat with a client certificate on the listener that requires one: produce, then consume from the start."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat is not installed (ops/test.sh installs it)")
    b, ports = node
    status, created = admin_call(b.admin, "POST", "/v1/topics", {"name": topic_name, "partitions": 1})
    assert status == 201, created
    anonymous = [
        kcat,
        *("-b", f"127.0.0.1:{ports['SECURE']}"),
        *("-X", "security.protocol=SSL"),
        *("-X", f"ssl.ca.location={pki.ca.cert_file}"),
    ]
    args = [
        *anonymous,
        *("-X", f"ssl.certificate.location={pki.client.cert_file}"),
        *("-X", f"ssl.key.location={pki.client.key_file}"),
        *("-t", topic_name),
    ]
    subprocess.run([*args, "-P"], input=b"one\ntwo\n", check=True, timeout=60)
    out = subprocess.run([*args, "-C", "-o", "beginning", "-e", "-q"], capture_output=True, check=True, timeout=60)
    assert out.stdout.split() == [b"one", b"two"]
    refused = subprocess.run([*anonymous, "-L", "-m", "5"], capture_output=True, timeout=60)
    assert refused.returncode != 0  # no certificate where one is required
