"""Shared pieces of the integration tests: the messages to send and how to compare what comes back, and a raw Kafka
request over a socket for tests that need the broker's exact answer (not a client's retries)."""

from __future__ import annotations

import datetime
import io
import json
import socket
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kio.schema.produce.v8.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.produce.v8.response import ProduceResponse
from kio.serial import entity_reader, entity_writer

BASE_TS = 1_700_000_000_000


@dataclass(frozen=True)
class Msg:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def messages(n: int, partitions: int, tag: str = "") -> list[Msg]:
    out = []
    for i in range(n):
        value: bytes | None = f"value-{tag}-{i}".encode() * (1 + i % 7)
        if i % 17 == 5:
            value = None
        elif i % 17 == 6:
            value = b""
        # A null key and a null value together are refused by kafka-python, so never both.
        key = None if i % 11 == 3 and value is not None else f"key-{i}".encode()
        headers = ((f"h{i % 3}", f"hv{i}".encode()),) if i % 4 else ()
        out.append(Msg(i % partitions, key, value, headers, BASE_TS + i))
    return out


def by_partition(msgs: list[Msg]) -> dict[int, list[Msg]]:
    out: dict[int, list[Msg]] = {}
    for m in msgs:
        out.setdefault(m.partition, []).append(m)
    return out


def kafka_request(api_key: int, version: int, body: Any, correlation_id: int = 1) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(body))(buf, body)
    payload = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test" + buf.getvalue()
    return struct.pack(">i", len(payload)) + payload


def recv_frame(sock: socket.socket) -> bytes:
    head = recv_exact(sock, 4)
    (n,) = struct.unpack(">i", head)
    return recv_exact(sock, n)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def raw_produce(port: int, topic: str, records: bytes, partition: int = 0) -> Any:
    """Produce v8 of ``records`` to one partition, sent to the given shard's port; the partition's response."""

    req = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=partition, records=records),)),
        ),
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(kafka_request(0, 8, req))
        frame = recv_frame(s)
    resp, _ = entity_reader(ProduceResponse)(frame[4:], 0)
    return resp.responses[0].partition_responses[0]


def admin_call(admin: str, method: str, path: str, body: bytes | str | dict[str, Any] | None = None) -> tuple[int, Any]:
    """One admin API call as curl makes it (a dict body is sent as JSON): the status and the decoded JSON answer,
    errors included."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"{admin}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
