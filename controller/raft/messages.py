"""Raft messages between controller nodes and their versioned binary format (no pickle; safe on untrusted bytes).

Runs in every controller process. A message body is ``[u8 version][u8 type][u32 src][u32 dst][u64 term]`` then the
fields of its type, big-endian. ``decode`` checks every length against the bytes present and the bounds below before
it allocates anything, and raises ``MessageDecodeError`` for an unknown version or type, a truncated body, trailing
bytes or an out-of-range field. Framing and authentication (length, HMAC of the shared secret) are the transport's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from controller.raft.types import NODE_ID_MAX, ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term

VERSION = 1
ENTRIES_PER_MESSAGE_MAX = 4096
ENTRY_BYTES_MAX = 1024 * 1024
SNAPSHOT_BYTES_MAX = 64 * 1024 * 1024
CONF_BYTES_MAX = 64 * 1024  # an encoded ConfState in an InstallSnapshot
_U63 = 2**63 - 1


class MessageDecodeError(Exception):
    """Bytes that are not a well-formed Raft message of a known version."""


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you vote for me at ``term``? Asked without raising anyone's term (dissertation section 9.6)."""

    src: NodeId
    dst: NodeId
    term: Term  # the term the sender would campaign at: its own term + 1
    last_index: Index
    last_term: Term


@dataclass(frozen=True, slots=True)
class PreVoteResp:
    src: NodeId
    dst: NodeId
    term: Term
    granted: bool


@dataclass(frozen=True, slots=True)
class Vote:
    src: NodeId
    dst: NodeId
    term: Term
    last_index: Index
    last_term: Term
    transfer: bool  # campaigning because the leader asked (TimeoutNow): voters may not ignore it for the lease


@dataclass(frozen=True, slots=True)
class VoteResp:
    src: NodeId
    dst: NodeId
    term: Term
    granted: bool


@dataclass(frozen=True, slots=True)
class Append:
    """AppendEntries; with no entries, the heartbeat. ``read_seq`` confirms leadership for ReadIndex."""

    src: NodeId
    dst: NodeId
    term: Term
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index
    read_seq: int


@dataclass(frozen=True, slots=True)
class AppendResp:
    src: NodeId
    dst: NodeId
    term: Term
    success: bool
    index: Index  # success: the last index now known to match; failure: the prev_index that did not match
    hint: Index  # failure: the follower's guess of the last index that may match
    read_seq: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: NodeId
    dst: NodeId
    term: Term
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """From the leader to its chosen successor: campaign now (leadership transfer, dissertation section 3.10)."""

    src: NodeId
    dst: NodeId
    term: Term


Message = PreVote | PreVoteResp | Vote | VoteResp | Append | AppendResp | InstallSnapshot | TimeoutNow

_HEAD = struct.Struct(">BBIIQ")
_LOG_POS = struct.Struct(">QQ")
_APPEND = struct.Struct(">QQQQI")
_ENTRY = struct.Struct(">QBI")
_APPEND_RESP = struct.Struct(">BQQQ")
_SNAP = struct.Struct(">QQI")
_U32 = struct.Struct(">I")
_TYPES: dict[type, int] = {
    PreVote: 1,
    PreVoteResp: 2,
    Vote: 3,
    VoteResp: 4,
    Append: 5,
    AppendResp: 6,
    InstallSnapshot: 7,
    TimeoutNow: 8,
}


def encode(msg: Message) -> bytes:
    parts = [_HEAD.pack(VERSION, _TYPES[type(msg)], msg.src, msg.dst, msg.term)]
    if isinstance(msg, PreVote):
        parts.append(_LOG_POS.pack(msg.last_index, msg.last_term))
    elif isinstance(msg, Vote):
        parts.append(_LOG_POS.pack(msg.last_index, msg.last_term) + bytes([msg.transfer]))
    elif isinstance(msg, PreVoteResp | VoteResp):
        parts.append(bytes([msg.granted]))
    elif isinstance(msg, Append):
        parts.append(_APPEND.pack(msg.prev_index, msg.prev_term, msg.commit, msg.read_seq, len(msg.entries)))
        for i, e in enumerate(msg.entries):
            assert e.index == msg.prev_index + 1 + i, (e.index, msg.prev_index, i)
            parts.append(_ENTRY.pack(e.term, e.kind, len(e.data)))
            parts.append(e.data)
    elif isinstance(msg, AppendResp):
        parts.append(_APPEND_RESP.pack(msg.success, msg.index, msg.hint, msg.read_seq))
    elif isinstance(msg, InstallSnapshot):
        s = msg.snapshot
        conf = s.conf.encode()
        parts.append(_SNAP.pack(s.index, s.term, len(conf)) + conf + _U32.pack(len(s.data)))
        parts.append(s.data)
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or len(self.view) - self.pos < n:
            raise MessageDecodeError("truncated message")
        out = self.view[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, s: struct.Struct) -> tuple[int, ...]:
        return s.unpack(self.take(s.size))

    def flag(self) -> bool:
        b = self.take(1)[0]
        if b > 1:
            raise MessageDecodeError(f"boolean field is {b}")
        return b == 1


def _u63(v: int, name: str) -> int:
    if v > _U63:
        raise MessageDecodeError(f"{name} {v} out of range")
    return v


def decode(data: bytes | memoryview) -> Message:
    r = _Reader(data)
    version, kind, src, dst, term = r.unpack(_HEAD)
    if version != VERSION:
        raise MessageDecodeError(f"unknown message version {version}")
    if not (0 < src <= NODE_ID_MAX and 0 < dst <= NODE_ID_MAX):
        raise MessageDecodeError(f"node ids {src}->{dst} out of range")
    s, d, t = NodeId(src), NodeId(dst), Term(_u63(term, "term"))
    msg: Message
    if kind == 1 or kind == 3:
        last_index, last_term = r.unpack(_LOG_POS)
        li, lt = Index(_u63(last_index, "last_index")), Term(_u63(last_term, "last_term"))
        msg = PreVote(s, d, t, li, lt) if kind == 1 else Vote(s, d, t, li, lt, r.flag())
    elif kind == 2:
        msg = PreVoteResp(s, d, t, r.flag())
    elif kind == 4:
        msg = VoteResp(s, d, t, r.flag())
    elif kind == 5:
        msg = _decode_append(r, s, d, t)
    elif kind == 6:
        success, index, hint, read_seq = r.unpack(_APPEND_RESP)
        if success > 1:
            raise MessageDecodeError(f"boolean field is {success}")
        msg = AppendResp(
            s, d, t, success == 1, Index(_u63(index, "index")), Index(_u63(hint, "hint")), _u63(read_seq, "read_seq")
        )
    elif kind == 7:
        msg = InstallSnapshot(s, d, t, _decode_snapshot(r))
    elif kind == 8:
        msg = TimeoutNow(s, d, t)
    else:
        raise MessageDecodeError(f"unknown message type {kind}")
    if r.pos != len(r.view):
        raise MessageDecodeError(f"{len(r.view) - r.pos} trailing bytes")
    return msg


def _decode_append(r: _Reader, s: NodeId, d: NodeId, t: Term) -> Append:
    prev_index, prev_term, commit, read_seq, count = r.unpack(_APPEND)
    if count > ENTRIES_PER_MESSAGE_MAX:
        raise MessageDecodeError(f"{count} entries in one message (max {ENTRIES_PER_MESSAGE_MAX})")
    _u63(prev_index + count, "last index")
    entries = []
    last_term = _u63(prev_term, "prev_term")
    for i in range(count):
        e_term, e_kind, length = r.unpack(_ENTRY)
        if length > ENTRY_BYTES_MAX:
            raise MessageDecodeError(f"entry of {length} bytes (max {ENTRY_BYTES_MAX})")
        if not last_term <= e_term <= t:
            raise MessageDecodeError(f"entry term {e_term} outside [{last_term}, {t}]")
        try:
            entry_kind = EntryKind(e_kind)
        except ValueError:
            raise MessageDecodeError(f"unknown entry kind {e_kind}") from None
        last_term = e_term
        entries.append(Entry(Term(e_term), Index(prev_index + 1 + i), entry_kind, bytes(r.take(length))))
    return Append(
        s, d, t, Index(prev_index), Term(prev_term), tuple(entries), Index(_u63(commit, "commit")),
        _u63(read_seq, "read_seq"),
    )  # fmt: skip


def _decode_snapshot(r: _Reader) -> Snapshot:
    index, snap_term, conf_len = r.unpack(_SNAP)
    if conf_len > CONF_BYTES_MAX:
        raise MessageDecodeError(f"configuration of {conf_len} bytes")
    try:
        conf = ConfState.decode(bytes(r.take(conf_len)))
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageDecodeError(f"bad configuration: {e}") from None
    (length,) = r.unpack(_U32)
    if length > SNAPSHOT_BYTES_MAX:
        raise MessageDecodeError(f"snapshot of {length} bytes (max {SNAPSHOT_BYTES_MAX})")
    return Snapshot(Index(_u63(index, "index")), Term(_u63(snap_term, "term")), conf, bytes(r.take(length)))
