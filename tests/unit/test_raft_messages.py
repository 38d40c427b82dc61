"""The Raft wire format: every message round-trips, and hostile bytes raise MessageDecodeError, never anything else."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.raft.messages import (
    ENTRIES_PER_MESSAGE_MAX,
    Append,
    AppendResp,
    InstallSnapshot,
    Message,
    MessageDecodeError,
    PreVote,
    PreVoteResp,
    TimeoutNow,
    Vote,
    VoteResp,
    decode,
    encode,
)
from controller.raft.types import ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term

N1, N2 = NodeId(1), NodeId(2)
T5 = Term(5)
SAMPLES: list[Message] = [
    PreVote(N1, N2, T5, Index(10), Term(4)),
    PreVoteResp(N2, N1, T5, True),
    Vote(N1, N2, T5, Index(10), Term(4), transfer=True),
    VoteResp(N2, N1, T5, False),
    Append(
        N1,
        N2,
        T5,
        Index(9),
        Term(4),
        (Entry(Term(4), Index(10), EntryKind.NORMAL, b"x" * 100), Entry(T5, Index(11), EntryKind.NOOP, b"")),
        Index(9),
        7,
    ),
    Append(N1, N2, T5, Index(0), Term(0), (), Index(0), 0),
    AppendResp(N2, N1, T5, False, Index(9), Index(3), 7),
    InstallSnapshot(
        N1, N2, T5, Snapshot(Index(100), Term(4), ConfState(frozenset({N1, N2}), frozenset({NodeId(3)})), b"{}")
    ),
    TimeoutNow(N1, N2, T5),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_trailing_byte_is_refused(msg: Message) -> None:
    data = encode(msg)
    for cut in range(len(data)):
        with pytest.raises(MessageDecodeError):
            decode(data[:cut])
    with pytest.raises(MessageDecodeError, match="trailing"):
        decode(data + b"\0")


def test_unknown_version_type_and_node_ids() -> None:
    data = bytearray(encode(SAMPLES[0]))
    with pytest.raises(MessageDecodeError, match="version"):
        decode(bytes([2]) + bytes(data[1:]))
    with pytest.raises(MessageDecodeError, match="type"):
        decode(bytes(data[:1]) + bytes([99]) + bytes(data[2:]))
    struct.pack_into(">I", data, 2, 0)
    with pytest.raises(MessageDecodeError, match="node ids"):
        decode(bytes(data))


def test_counts_and_lengths_are_checked_before_allocation() -> None:
    head = struct.pack(">BBIIQ", 1, 5, 1, 2, 5)
    too_many = head + struct.pack(">QQQQI", 0, 0, 0, 0, ENTRIES_PER_MESSAGE_MAX + 1)
    with pytest.raises(MessageDecodeError, match="entries"):
        decode(too_many)
    huge_entry = head + struct.pack(">QQQQI", 0, 0, 0, 0, 1) + struct.pack(">QBI", 5, 0, 2**32 - 1)
    with pytest.raises(MessageDecodeError, match="bytes"):
        decode(huge_entry)
    future_term = head + struct.pack(">QQQQI", 0, 0, 0, 0, 1) + struct.pack(">QBI", 6, 0, 0)
    with pytest.raises(MessageDecodeError, match="term"):
        decode(future_term)
    bad_kind = head + struct.pack(">QQQQI", 0, 0, 0, 0, 1) + struct.pack(">QBI", 5, 9, 0)
    with pytest.raises(MessageDecodeError, match="kind"):
        decode(bad_kind)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(MessageDecodeError):
        decode(data)


@given(st.binary(min_size=1, max_size=8), st.integers(min_value=0))
def test_mutated_messages_decode_or_raise_cleanly(patch: bytes, where: int) -> None:
    for msg in SAMPLES:
        data = bytearray(encode(msg))
        at = where % len(data)
        data[at : at + len(patch)] = patch
        with contextlib.suppress(MessageDecodeError):
            decode(bytes(data))
