"""The controller channel: typed messages between the node's controller process and each of its shard processes.

Sans-IO, runs in both processes: ``encode`` turns a message into one frame, ``ChannelDecoder.feed`` turns bytes into
messages. Frames are ``[u32 length][body]``, the length bounded by ``FRAME_BYTES_MAX``; the body is one message in the
channel's ``controller.wire`` codec (a JSON object with the message's type and schema version), which embeds the
metadata log's command encoding and the snapshot's image encoding verbatim. Anything malformed raises
``ChannelError`` (the peer is then disconnected). No pickle: the format is explicit and versioned. Both ends are
processes of one node, of one version; nothing persists these frames.

The conversation (KRaft's broker-to-controller metadata fetch, pushed instead of polled because both ends are on one
node): on connect the controller sends ``Hello`` with its snapshot image and then every later metadata record in
order as ``Records``, and keeps pushing new records as they are applied (``Image`` replaces the shard's image when
the controller installed a leader's snapshot past what the shard was sent). The shard applies them, reconciles its
partitions and answers ``Applied`` with the offset it has reached; it asks for changes with ``Propose`` (a command) or
``ProposeTopic`` (a topic request the Raft leader plans) and gets ``Proposed`` (committed, and applied by every ready
shard) or ``Rejected``. ``Ready`` says the shard is listening;
``Heartbeat``/``HeartbeatAck`` renew the broker's lease (``controller.leases``) and report how far its image is
behind; ``StatsRequest``/``Stats`` serve the admin API and ``/metrics`` with the live state only the shard knows (log
offsets, sizes, connections).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.commands import Command
from controller.image import MetadataImage
from controller.topics import TopicProposal
from controller.wire import Codec, Raw, WireError, rules

FRAME_BYTES_MAX = 64 * 1024 * 1024
RECORDS_PER_MESSAGE_MAX = 4096
_LEN = struct.Struct(">I")


class ChannelError(WireError):
    """Bytes from the peer that are not a valid channel message (or a peer that broke the conversation)."""


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
    # at first_offset, first_offset + 1, ...
    commands: tuple[Command, ...] = field(metadata=rules(max_items=RECORDS_PER_MESSAGE_MAX))


@dataclass(frozen=True, slots=True)
class Proposed:
    request_id: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: int
    kind: str  # a controller.state_machine.RejectKind value
    message: str
    field: str | None = None  # the request field at fault (a topic request's ``TopicRejected.field``), if one is


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
    status: str = field(metadata=rules(one_of=HEARTBEAT_STATUSES))
    message: str


# ---- shard -> controller -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propose:
    request_id: int
    command: Command


@dataclass(frozen=True, slots=True)
class ProposeTopic:
    """A topic request for the Raft leader to plan on its newest image (``controller.topics``); answered like
    ``Propose``, with the offset of its last command."""

    request_id: int
    proposal: TopicProposal


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
    # The log cleaner, for compacted topics (-1 and "" otherwise): the share of the cleanable log not cleaned yet,
    # where the dirty section starts, when the last pass swapped in (wall clock ms), why passes are skipped.
    dirty_ratio: float = 0.0
    first_dirty_offset: int = -1
    last_cleaned_ms: int = -1
    cleaner_error: str = ""


@dataclass(frozen=True, slots=True)
class CleanerTotals:
    """The shard's log cleaner since it started."""

    passes: int = 0
    failures: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    max_dirty_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class Stats:
    request_id: int
    connections: int
    partitions: tuple[PartitionStats, ...] = field(metadata=rules(positional=True))  # one array per partition
    cleaner: CleanerTotals = CleanerTotals()


Message = (
    Hello
    | Image
    | Records
    | Proposed
    | Rejected
    | StatsRequest
    | HeartbeatAck
    | Propose
    | ProposeTopic
    | Applied
    | Heartbeat
    | Ready
    | Stats
)


CODEC: Codec[Message] = Codec(
    "channel",
    {
        Hello: 1,
        Image: 1,
        Records: 1,
        Proposed: 1,
        Rejected: 2,
        StatsRequest: 1,
        HeartbeatAck: 1,
        Propose: 1,
        ProposeTopic: 1,
        Applied: 1,
        Heartbeat: 1,
        Ready: 1,
        Stats: 2,
    },
    bytes_max=FRAME_BYTES_MAX,
    error=ChannelError,
)


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body  # the codec bounds the body by FRAME_BYTES_MAX


def encode_records(first_offset: int, payloads: Sequence[bytes]) -> bytes:
    """A ``Records`` frame from metadata log payloads (each already a JSON command), without re-encoding them."""
    commands = Raw(b"[%b]" % b",".join(payloads))
    return _frame(CODEC.encode_fields(Records, first_offset=first_offset, commands=commands))


def encode_hello(high_offset: int, image: bytes) -> bytes:
    """A ``Hello`` frame embedding an encoded image verbatim."""
    return _frame(CODEC.encode_fields(Hello, high_offset=high_offset, image=Raw(image)))


def encode_image_message(image: bytes) -> bytes:
    """An ``Image`` frame embedding an encoded image verbatim."""
    return _frame(CODEC.encode_fields(Image, image=Raw(image)))


def encode(msg: Message) -> bytes:
    """One frame: ``msg`` in the channel's ``controller.wire`` codec, after its length."""
    return _frame(CODEC.encode(msg))


def decode(body: bytes) -> Message:
    """The message in one frame's body; ``ChannelError`` (a ``controller.wire.WireError``) says what is wrong."""
    return CODEC.decode(body)


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
