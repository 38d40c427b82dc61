"""The Kafka client: request framing and response headers checked against kio's own encoders (generated from Kafka's
message specs), the protocol state (correlation ids, bounds), and the asyncio shell's failures against a local
listener."""

from __future__ import annotations

import asyncio
import datetime
import io
import socket
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse
from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.list_offsets.v1.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.list_offsets.v1.response import (
    ListOffsetsPartitionResponse,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.schema.types import BrokerId, TopicName
from kio.serial import entity_writer
from kio.static.primitive import i16, i32, i32Timedelta, i64

from rafka_shards.config import SecurityProtocol
from rafka_shards.ipc.kafka_client import Failure, KafkaClient, KafkaClientError
from rafka_shards.protocol.client import (
    ClientProtocol,
    ResponseError,
    decode_response,
    frame_request,
    read_response,
    request_header_version,
    response_header_version,
)
from rafka_shards.protocol.framing import parse_request_header
from rafka_shards.protocol.kio_codec import response_class
from rafka_shards.security.client_security import ClientSecurity, ClientTls
from rafka_shards.security.tls import TlsSettings, client_context, server_context
from tests.certs import make_pki
from tests.unit.test_liveness import _listener  # a local listening socket the test drives by hand

# (api key, version, request header version, response header version): Kafka's generated ApiMessageType says so.
_HEADERS = [
    (0, 3, 1, 0),  # Produce v3: classic
    (0, 9, 2, 1),  # Produce v9: flexible
    (1, 15, 2, 1),  # Fetch v15 (the replica fetcher)
    (2, 1, 1, 0),  # ListOffsets v1 (the admin API's cross-node call)
    (18, 0, 1, 0),  # ApiVersions v0 (the liveness probe)
    (18, 3, 2, 0),  # ApiVersions v3: flexible request, but its response header stays v0 (KIP-511)
    (23, 3, 1, 0),  # OffsetForLeaderEpoch v3 (the replica fetcher)
    (23, 4, 2, 1),  # OffsetForLeaderEpoch v4: flexible
]


def _write(entity: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


@pytest.mark.parametrize(("key", "version", "request_header", "response_header"), _HEADERS)
def test_header_versions_follow_the_message_specs(
    key: int, version: int, request_header: int, response_header: int
) -> None:
    assert request_header_version(key, version) == request_header
    assert response_header_version(key, version) == response_header


@pytest.mark.parametrize(("key", "version", "header_version"), [(k, v, h) for k, v, h, _ in _HEADERS])
@settings(deadline=None)  # the first example imports kio's module for the API: slow on a busy machine
@given(
    correlation_id=st.integers(0, 2**31 - 1),
    client_id=st.one_of(st.none(), st.text(max_size=40)),
    body=st.binary(max_size=64),
)
def test_frame_request_is_what_kio_writes_and_the_broker_parses(
    key: int, version: int, header_version: int, correlation_id: int, client_id: str | None, body: bytes
) -> None:
    header_class = RequestHeaderV2 if header_version == 2 else RequestHeaderV1
    header = header_class(
        request_api_key=i16(key),
        request_api_version=i16(version),
        correlation_id=i32(correlation_id),
        client_id=client_id,
    )
    expected = _write(header) + body
    frame = frame_request(key, version, correlation_id, client_id, body)
    assert frame == struct.pack(">i", len(expected)) + expected
    parsed, offset = parse_request_header(frame[4:], flexible=header_version == 2)
    assert (parsed.api_key, parsed.api_version, parsed.correlation_id, parsed.client_id) == (
        key,
        version,
        correlation_id,
        client_id,
    )
    assert frame[4 + offset :] == body


@pytest.mark.parametrize(("key", "version", "header_version"), [(k, v, h) for k, v, _, h in _HEADERS])
@settings(deadline=None)
@given(correlation_id=st.integers(-(2**31), 2**31 - 1), body=st.binary(max_size=64))
def test_read_response_reads_what_kio_writes(
    key: int, version: int, header_version: int, correlation_id: int, body: bytes
) -> None:
    header = (ResponseHeaderV1 if header_version == 1 else ResponseHeaderV0)(correlation_id=i32(correlation_id))
    header_bytes = _write(header)
    assert read_response(header_bytes + body, key, version) == (correlation_id, len(header_bytes))


def test_read_response_skips_tagged_fields_of_header_v1() -> None:
    frame = struct.pack(">i", 7) + bytes([2, 0, 1, 0xAA, 5, 2, 0xBB, 0xCC]) + b"body"  # two tagged fields
    assert read_response(frame, 1, 15) == (7, len(frame) - 4)
    with pytest.raises(ResponseError):
        read_response(struct.pack(">i", 7) + bytes([1, 0, 9]), 1, 15)  # a tagged field longer than the frame
    with pytest.raises(ResponseError):
        read_response(b"\x00\x00", 1, 15)


def _list_offsets_request() -> ListOffsetsRequest:
    partition = ListOffsetsPartition(partition_index=i32(3), timestamp=i64(-2))
    return ListOffsetsRequest(
        replica_id=BrokerId(-1), topics=(ListOffsetsTopic(name=TopicName("t"), partitions=(partition,)),)
    )


def _list_offsets_response(offset: int) -> ListOffsetsResponse:
    partition = ListOffsetsPartitionResponse(
        partition_index=i32(3), error_code=KioErrorCode.none, timestamp=i64(-1), offset=i64(offset)
    )
    return ListOffsetsResponse(
        topics=(ListOffsetsTopicResponse(name=TopicName("t"), partitions=(partition,)),),
    )


def test_decode_response_round_trips_kio_entities_in_place() -> None:
    response = ApiVersionsResponse(
        error_code=KioErrorCode.none, api_keys=(), throttle_time=i32Timedelta.parse(timedelta(0))
    )
    frame = b"\xff" * 9 + _write(response)
    assert decode_response(ApiVersionsResponse, frame, 9) == response
    with pytest.raises(ResponseError, match="malformed ApiVersionsResponse"):
        decode_response(ApiVersionsResponse, frame[:-1], 9)


def test_client_protocol_checks_size_and_correlation_and_wraps_ids() -> None:
    proto = ClientProtocol("me", response_bytes_max=100)
    frame = proto.send(_list_offsets_request())
    header, _ = parse_request_header(frame[4:], flexible=False)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (2, 1, 1, "me")
    assert proto.response_size(struct.pack(">i", 100)) == 100
    for bad in (3, 101, -1):
        with pytest.raises(ResponseError):
            proto.response_size(struct.pack(">i", bad))
    answer = _list_offsets_response(42)
    assert proto.receive(struct.pack(">i", 1) + _write(answer), ListOffsetsResponse) == answer
    proto.send(_list_offsets_request())
    with pytest.raises(ResponseError, match="correlation id 7, expected 2"):
        proto.receive(struct.pack(">i", 7) + _write(answer), ListOffsetsResponse)
    proto._last_correlation_id = 2**31 - 1
    frame = proto.send(ApiVersionsRequest())
    assert parse_request_header(frame[4:], flexible=False)[0].correlation_id == 0
    assert proto.receive_frame(struct.pack(">i", 0)) == 4  # the probe's check: any body will do
    assert response_class(18, 0) is not None


# ---- the asyncio shell ----------------------------------------------------------------------------------------------


async def _serve(listener: socket.socket, answer: Any) -> None:
    """Accept one connection and answer each request frame with ``answer(correlation id bytes)``."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(listener)
    with conn:
        while True:
            head = await loop.sock_recv(conn, 4)
            if len(head) < 4:
                return
            (size,) = struct.unpack(">i", head)
            request = b""
            while len(request) < size:
                request += await loop.sock_recv(conn, size - len(request))
            reply = answer(request[4:8])
            if reply is None:
                return
            await loop.sock_sendall(conn, struct.pack(">i", len(reply)) + reply)


def _run_against(answer: Any, body: Any) -> Any:
    async def run() -> Any:
        listener = _listener()
        server = asyncio.get_running_loop().create_task(_serve(listener, answer))
        try:
            client = await KafkaClient.connect(
                "127.0.0.1", listener.getsockname()[1], client_id="t", response_bytes_max=1024, timeout_s=5
            )
            try:
                return await body(client)
            finally:
                client.abort()
        finally:
            listener.close()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)

    return asyncio.run(run())


def test_client_sends_typed_requests_and_returns_typed_responses() -> None:
    async def body(client: KafkaClient) -> list[int]:
        out = []
        for _ in range(2):
            resp = await client.request(_list_offsets_request(), ListOffsetsResponse)
            out.append(int(resp.topics[0].partitions[0].offset))
        return out

    assert _run_against(lambda corr: corr + _write(_list_offsets_response(int.from_bytes(corr, "big"))), body) == [1, 2]


@pytest.mark.parametrize(
    ("answer", "timeout_s", "failure"),
    [
        (lambda corr: None, 5, Failure.CLOSED),  # the peer closes the connection
        (lambda corr: b"\x00\x00\x00\x63" + b"x" * 10, 5, Failure.MALFORMED),  # wrong correlation id
        (lambda corr: corr + b"\xff" * 2000, 5, Failure.MALFORMED),  # larger than response_bytes_max
        (lambda corr: corr + b"\x00", 5, Failure.MALFORMED),  # does not decode
    ],
)
def test_client_failures_are_one_exception_type(answer: Any, timeout_s: float, failure: Failure) -> None:
    async def body(client: KafkaClient) -> Failure:
        with pytest.raises(KafkaClientError) as e:
            await client.request(_list_offsets_request(), ListOffsetsResponse, timeout_s)
        with pytest.raises(KafkaClientError, match="closed"):
            await client.request(_list_offsets_request(), ListOffsetsResponse)  # unusable after a failure
        return e.value.failure

    assert _run_against(answer, body) is failure


def test_client_times_out_and_tells_refused_from_other_connect_failures() -> None:
    async def run() -> tuple[Failure, Failure]:
        listener = _listener()  # accepts into the backlog, never answers
        port = listener.getsockname()[1]
        try:
            client = await KafkaClient.connect("127.0.0.1", port, client_id="t", response_bytes_max=64, timeout_s=1)
            with pytest.raises(KafkaClientError) as timed_out:
                await client.request_answered(ApiVersionsRequest(), 0.05)
            client.abort()
        finally:
            listener.close()
        with pytest.raises(KafkaClientError) as refused:
            await KafkaClient.connect("127.0.0.1", port, client_id="t", response_bytes_max=64, timeout_s=1)
        return timed_out.value.failure, refused.value.failure

    assert asyncio.run(run()) == (Failure.TIMED_OUT, Failure.REFUSED)


def test_tls_verifies_the_brokers_certificate_and_a_refusal_is_a_security_failure(tmp_path: Path) -> None:
    """``security`` with a TLS context: the handshake is made before ``connect`` returns; a certificate the CA file
    did not sign is ``Failure.SECURITY`` (not a sign of a dead broker), and says why."""
    pki = make_pki(tmp_path)
    server = server_context(TlsSettings(cert_file=pki.server.cert_file, key_file=pki.server.key_file))

    async def run() -> tuple[bool, KafkaClientError]:
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server)
        port = srv.sockets[0].getsockname()[1]
        try:
            trusted = ClientSecurity(SecurityProtocol.SSL, ClientTls.fixed(client_context(pki.ca.cert_file)))
            client = await KafkaClient.connect(
                "127.0.0.1", port, client_id="t", response_bytes_max=1024, timeout_s=10, security=trusted
            )
            ok = client._writer.get_extra_info("ssl_object") is not None
            client.abort()
            foreign = ClientSecurity(SecurityProtocol.SSL, ClientTls.fixed(client_context(pki.other_ca.cert_file)))
            with pytest.raises(KafkaClientError) as e:
                await KafkaClient.connect(
                    "127.0.0.1", port, client_id="t", response_bytes_max=1024, timeout_s=10, security=foreign
                )
            return ok, e.value
        finally:
            srv.close()

    ok, refused = asyncio.run(run())
    assert ok
    assert refused.failure is Failure.SECURITY and "certificate verify failed" in str(refused)


def test_the_hostname_check_refuses_a_certificate_for_another_host_unless_turned_off(tmp_path: Path) -> None:
    """Kafka's ssl.endpoint.identification.algorithm=https: a certificate the CA signed, but for another name."""
    pki = make_pki(tmp_path)
    elsewhere = _certificate_for(tmp_path, pki.ca, "elsewhere.example")
    server = server_context(TlsSettings(cert_file=elsewhere[0], key_file=elsewhere[1]))

    async def attempt(check_hostname: bool) -> KafkaClientError | None:
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server)
        port = srv.sockets[0].getsockname()[1]
        context = client_context(pki.ca.cert_file, check_hostname=check_hostname)
        security = ClientSecurity(SecurityProtocol.SSL, ClientTls.fixed(context))
        try:
            client = await KafkaClient.connect(
                "127.0.0.1", port, client_id="t", response_bytes_max=1024, timeout_s=10, security=security
            )
            client.abort()
            return None
        except KafkaClientError as e:
            return e
        finally:
            srv.close()

    refused = asyncio.run(attempt(True))
    assert refused is not None and refused.failure is Failure.SECURITY and "mismatch" in str(refused)
    assert asyncio.run(attempt(False)) is None


def _certificate_for(directory: Path, ca: Any, dns_name: str) -> tuple[Path, Path]:
    """A server certificate signed by ``ca`` whose only name is ``dns_name`` (not 127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_file, key_file = directory / "elsewhere.crt", directory / "elsewhere.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
