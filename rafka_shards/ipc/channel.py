"""The controller channel: typed messages between the node's controller (in the supervisor) and its shards.

Sans-IO, runs in both processes: ``encode`` turns a message into one frame, ``ChannelDecoder.feed`` turns bytes into
messages. Frames are ``[u32 length][JSON object]``, with a bound on the length; anything malformed raises
``ChannelError`` (the peer is then disconnected). No pickle: the format is explicit and versioned like the metadata
log, whose command encoding it embeds verbatim.

The conversation (KRaft's broker-to-controller metadata fetch, pushed instead of polled because both ends are on one
node): on connect the controller sends ``Hello`` with its snapshot image and then every later metadata record in
order as ``Records``, and keeps pushing new records as they are applied (``Image`` replaces the shard's image when
the controller installed a leader's snapshot past what the shard was sent). The shard applies them, reconciles its
partitions and answers ``Applied`` with the offset it has reached; it asks for changes with ``Propose`` and gets
``Proposed`` (committed, and applied by every ready shard) or ``Rejected``. ``Ready`` says the shard is listening;
``Heartbeat``/``HeartbeatAck`` renew the broker's lease (``controller.leases``) and report how far its image is
behind; ``StatsRequest``/``Stats`` serve the admin API and ``/metrics`` with the live state only the shard knows (log
offsets, sizes, connections).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from controller.commands import Command, CommandDecodeError, command_from_json, encode_command
from controller.image import ImageDecodeError, MetadataImage, encode_image, image_from_json

FRAME_BYTES_MAX = 64 * 1024 * 1024
RECORDS_PER_MESSAGE_MAX = 4096
_LEN = struct.Struct(">I")


class ChannelError(Exception):
    """Bytes from the peer that are not a valid channel message."""


# ---- controller -> shard -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    high_offset: int  # the controller's last applied offset when the session started
    image: MetadataImage  # the controller's snapshot: the shard starts here, Records follow from image.offset + 1


@dataclass(frozen=True, slots=True)
class Image:
    """The controller installed a snapshot past what this shard was sent: replace the image, records follow."""

    image: MetadataImage


@dataclass(frozen=True, slots=True)
class Records:
    first_offset: int
    commands: tuple[Command, ...]  # at first_offset, first_offset + 1, ...


@dataclass(frozen=True, slots=True)
class Proposed:
    request_id: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: int
    kind: str  # a controller.state_machine.RejectKind value
    message: str


@dataclass(frozen=True, slots=True)
class StatsRequest:
    request_id: int


HEARTBEAT_OK = "ok"  # the lease is renewed from when the heartbeat was sent
HEARTBEAT_FENCED = "fenced"  # the controller fenced this broker (or does not know this incarnation): serve nothing
HEARTBEAT_UNAVAILABLE = "unavailable"  # no controller leader answered: the lease is not renewed
HEARTBEAT_STATUSES = (HEARTBEAT_OK, HEARTBEAT_FENCED, HEARTBEAT_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    request_id: int
    status: str  # one of HEARTBEAT_STATUSES
    message: str


# ---- shard -> controller -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propose:
    request_id: int
    command: Command


@dataclass(frozen=True, slots=True)
class Applied:
    offset: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The broker is alive, runs ``incarnation`` and has applied metadata up to ``offset`` (its lag is known)."""

    request_id: int
    broker_id: int
    incarnation: str
    offset: int


@dataclass(frozen=True, slots=True)
class Ready:
    broker_id: int
    port: int


@dataclass(frozen=True, slots=True)
class PartitionStats:
    topic: str
    partition: int
    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Stats:
    request_id: int
    connections: int
    partitions: tuple[PartitionStats, ...]


Message = (
    Hello
    | Image
    | Records
    | Proposed
    | Rejected
    | StatsRequest
    | HeartbeatAck
    | Propose
    | Applied
    | Heartbeat
    | Ready
    | Stats
)


def _frame(body: bytes) -> bytes:
    if len(body) > FRAME_BYTES_MAX:
        raise ChannelError(f"message of {len(body)} bytes exceeds the channel limit {FRAME_BYTES_MAX}")
    return _LEN.pack(len(body)) + body


def encode_records(first_offset: int, payloads: Sequence[bytes]) -> bytes:
    """A ``Records`` frame from metadata log payloads (each already a JSON command), without re-encoding them."""
    return _frame(b'{"t":"records","first":%d,"commands":[%b]}' % (first_offset, b",".join(payloads)))


def encode_hello(high_offset: int, image: bytes) -> bytes:
    """A ``Hello`` frame embedding an encoded image verbatim."""
    return _frame(b'{"t":"hello","high":%d,"image":%b}' % (high_offset, image))


def encode_image_message(image: bytes) -> bytes:
    return _frame(b'{"t":"image","image":%b}' % image)


def encode(msg: Message) -> bytes:
    body: dict[str, Any]
    if isinstance(msg, Hello):
        return encode_hello(msg.high_offset, encode_image(msg.image))
    if isinstance(msg, Image):
        return encode_image_message(encode_image(msg.image))
    if isinstance(msg, Records):
        return encode_records(msg.first_offset, [encode_command(c) for c in msg.commands])
    if isinstance(msg, Propose):
        return _frame(b'{"t":"propose","id":%d,"command":%b}' % (msg.request_id, encode_command(msg.command)))
    if isinstance(msg, Proposed):
        body = {"t": "proposed", "id": msg.request_id, "offset": msg.offset}
    elif isinstance(msg, Rejected):
        body = {"t": "rejected", "id": msg.request_id, "kind": msg.kind, "message": msg.message}
    elif isinstance(msg, StatsRequest):
        body = {"t": "stats_request", "id": msg.request_id}
    elif isinstance(msg, Applied):
        body = {"t": "applied", "offset": msg.offset}
    elif isinstance(msg, Ready):
        body = {"t": "ready", "broker_id": msg.broker_id, "port": msg.port}
    elif isinstance(msg, Heartbeat):
        body = {
            "t": "heartbeat",
            "id": msg.request_id,
            "broker_id": msg.broker_id,
            "incarnation": msg.incarnation,
            "offset": msg.offset,
        }
    elif isinstance(msg, HeartbeatAck):
        body = {"t": "heartbeat_ack", "id": msg.request_id, "status": msg.status, "message": msg.message}
    else:
        body = {
            "t": "stats",
            "id": msg.request_id,
            "connections": msg.connections,
            "partitions": [
                [p.topic, p.partition, p.log_start_offset, p.high_watermark, p.log_end_offset, p.size_bytes]
                for p in msg.partitions
            ],
        }
    return _frame(orjson.dumps(body))


def _int(body: dict[str, Any], key: str) -> int:
    v = body.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ChannelError(f"{body.get('t')}.{key}: expected an integer")
    return v


def _str(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str):
        raise ChannelError(f"{body.get('t')}.{key}: expected a string")
    return v


def _partition_stats(item: Any) -> PartitionStats:
    if (
        not isinstance(item, list)
        or len(item) != 6
        or not isinstance(item[0], str)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])
    ):
        raise ChannelError("stats.partitions: expected [topic, partition, start, hw, end, size]")
    return PartitionStats(item[0], item[1], item[2], item[3], item[4], item[5])


def decode(body_bytes: bytes) -> Message:
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError as e:
        raise ChannelError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ChannelError("a channel message is a JSON object")
    kind = body.get("t")
    try:
        if kind == "records":
            commands = body.get("commands")
            if not isinstance(commands, list) or len(commands) > RECORDS_PER_MESSAGE_MAX:
                raise ChannelError(f"records.commands: expected a list of at most {RECORDS_PER_MESSAGE_MAX}")
            return Records(_int(body, "first"), tuple(command_from_json(c) for c in commands))
        if kind == "propose":
            return Propose(_int(body, "id"), command_from_json(body.get("command")))
        if kind == "hello":
            return Hello(_int(body, "high"), image_from_json(body.get("image")))
        if kind == "image":
            return Image(image_from_json(body.get("image")))
    except (CommandDecodeError, ImageDecodeError) as e:
        raise ChannelError(f"{kind}: {e}") from None
    if kind == "proposed":
        return Proposed(_int(body, "id"), _int(body, "offset"))
    if kind == "rejected":
        return Rejected(_int(body, "id"), _str(body, "kind"), _str(body, "message"))
    if kind == "stats_request":
        return StatsRequest(_int(body, "id"))
    if kind == "applied":
        return Applied(_int(body, "offset"))
    if kind == "ready":
        return Ready(_int(body, "broker_id"), _int(body, "port"))
    if kind == "heartbeat":
        return Heartbeat(_int(body, "id"), _int(body, "broker_id"), _str(body, "incarnation"), _int(body, "offset"))
    if kind == "heartbeat_ack":
        status = _str(body, "status")
        if status not in HEARTBEAT_STATUSES:
            raise ChannelError(f"heartbeat_ack.status: unknown {status!r}")
        return HeartbeatAck(_int(body, "id"), status, _str(body, "message"))
    if kind == "stats":
        partitions = body.get("partitions")
        if not isinstance(partitions, list):
            raise ChannelError("stats.partitions: expected a list")
        return Stats(_int(body, "id"), _int(body, "connections"), tuple(_partition_stats(p) for p in partitions))
    raise ChannelError(f"unknown message type {kind!r}")


class ChannelDecoder:
    """Bytes in, messages out; holds at most one partial frame (bounded by ``frame_bytes_max``)."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buf = bytearray()
        self._max = frame_bytes_max

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= _LEN.size:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self._max:
                raise ChannelError(f"frame of {length} bytes exceeds the channel limit {self._max}")
            end = pos + _LEN.size + length
            if len(buf) < end:
                break
            out.append(decode(bytes(buf[pos + _LEN.size : end])))
            pos = end
        del buf[:pos]
        return out
