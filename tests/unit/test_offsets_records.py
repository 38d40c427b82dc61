"""``__consumer_offsets`` records in Kafka's formats: bytes built by hand from the message specs, every value
version both ways, the group -> partition hash Java computes, and what a bounded decoder refuses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rafka_shards.groups.offsets_records import (
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetKey,
    OffsetValue,
    RecordFormatError,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_group_value,
    encode_key,
    encode_offset_value,
    partition_for,
)


def _s(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def test_keys_are_the_bytes_kafka_writes() -> None:
    offset_key = struct.pack(">h", 1) + _s("g1") + _s("orders") + struct.pack(">i", 7)
    assert encode_key(OffsetKey("g1", "orders", 7)) == offset_key
    assert decode_key(offset_key) == OffsetKey("g1", "orders", 7)
    assert decode_key(struct.pack(">h", 0) + offset_key[2:]) == OffsetKey("g1", "orders", 7)  # the legacy type
    group_key = struct.pack(">h", 2) + _s("g1")
    assert encode_key(GroupKey("g1")) == group_key
    assert decode_key(group_key) == GroupKey("g1")


def test_an_offset_value_v3_is_the_bytes_kafka_writes() -> None:
    value = OffsetValue(offset=42, leader_epoch=5, metadata="m", commit_timestamp=1_700_000_000_000)
    expected = struct.pack(">hqi", 3, 42, 5) + _s("m") + struct.pack(">q", 1_700_000_000_000)
    assert encode_offset_value(value) == expected
    assert decode_offset_value(expected) == value


def test_a_group_value_v3_is_the_bytes_kafka_writes() -> None:
    member = MemberValue("m-1", "static-1", "client", "/127.0.0.1", 300_000, 45_000, b"\x00\x01sub", b"asg")
    value = GroupValue("consumer", 4, "range", "m-1", 1_700_000_000_000, (member,))
    expected = (
        struct.pack(">h", 3)
        + _s("consumer")
        + struct.pack(">i", 4)
        + _s("range")
        + _s("m-1")
        + struct.pack(">q", 1_700_000_000_000)
        + struct.pack(">i", 1)
        + _s("m-1")
        + _s("static-1")
        + _s("client")
        + _s("/127.0.0.1")
        + struct.pack(">ii", 300_000, 45_000)
        + struct.pack(">i", 5)
        + b"\x00\x01sub"
        + struct.pack(">i", 3)
        + b"asg"
    )
    assert encode_group_value(value) == expected
    assert decode_group_value(expected) == value


def test_a_flexible_v4_group_value_skips_unknown_tagged_fields() -> None:
    value = GroupValue("consumer", 1, None, None, 5, ())
    flexible = encode_group_value(value, version=4)
    assert (
        flexible
        == struct.pack(">h", 4)
        + b"\x09consumer"
        + struct.pack(">i", 1)
        + b"\x00\x00"
        + struct.pack(">q", 5)
        + b"\x01\x00"
    )
    with_tag = flexible[:-1] + b"\x01\x07\x02ab"  # one tagged field (tag 7, 2 bytes) a newer writer added
    assert decode_group_value(with_tag) == value


names = st.text(max_size=20)
offset_values = st.builds(
    OffsetValue,
    offset=st.integers(-1, 2**63 - 1),
    leader_epoch=st.integers(-1, 2**31 - 1),
    metadata=names,
    commit_timestamp=st.integers(-1, 2**50),
    expire_timestamp=st.integers(-1, 2**50),
)
members = st.builds(
    MemberValue,
    member_id=names,
    group_instance_id=st.none() | names,
    client_id=names,
    client_host=names,
    rebalance_timeout_ms=st.integers(0, 2**31 - 1),
    session_timeout_ms=st.integers(0, 2**31 - 1),
    subscription=st.binary(max_size=40),
    assignment=st.binary(max_size=40),
)
group_values = st.builds(
    GroupValue,
    protocol_type=names,
    generation=st.integers(-1, 2**31 - 1),
    protocol=st.none() | names,
    leader=st.none() | names,
    current_state_timestamp=st.integers(-1, 2**50),
    members=st.lists(members, max_size=4).map(tuple),
)


@given(offset_values, st.integers(0, 4))
def test_every_offset_value_version_reads_back_what_it_carries(value: OffsetValue, version: int) -> None:
    got = decode_offset_value(encode_offset_value(value, version))
    assert got.offset == value.offset and got.metadata == value.metadata
    assert got.commit_timestamp == value.commit_timestamp
    assert got.leader_epoch == (value.leader_epoch if version >= 3 else -1)
    assert got.expire_timestamp == (value.expire_timestamp if version == 1 else -1)


@given(group_values, st.integers(0, 4))
def test_every_group_value_version_reads_back_what_it_carries(value: GroupValue, version: int) -> None:
    got = decode_group_value(encode_group_value(value, version))
    assert (got.protocol_type, got.generation, got.protocol, got.leader) == (
        value.protocol_type,
        value.generation,
        value.protocol,
        value.leader,
    )
    assert got.current_state_timestamp == (value.current_state_timestamp if version >= 2 else -1)
    assert len(got.members) == len(value.members)
    for g, m in zip(got.members, value.members, strict=True):
        assert (g.member_id, g.client_id, g.client_host, g.subscription, g.assignment) == (
            m.member_id,
            m.client_id,
            m.client_host,
            m.subscription,
            m.assignment,
        )
        assert g.session_timeout_ms == m.session_timeout_ms
        assert g.rebalance_timeout_ms == (m.rebalance_timeout_ms if version >= 1 else m.session_timeout_ms)
        assert g.group_instance_id == (m.group_instance_id if version >= 3 else None)


def test_the_partition_of_a_group_is_javas_string_hash() -> None:
    assert partition_for("", 50) == 0
    assert partition_for("hello", 50) == 99162322 % 50  # "hello".hashCode()
    assert partition_for("polygenelubricants", 50) == 0  # hashCode() == Integer.MIN_VALUE, and Utils.abs gives 0
    assert partition_for("Aa", 7) == partition_for("BB", 7)  # the classic String.hashCode collision
    assert partition_for("\U0001f600", 1000) == (0xD83D * 31 + 0xDE00) % 1000  # UTF-16 code units, not code points
    assert partition_for("group-x", 1) == 0
    with pytest.raises(ValueError):
        partition_for("g", 0)


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        b"\x00",
        struct.pack(">h", 9) + _s("g"),  # no such key type
        struct.pack(">h", 2) + _s("g") + b"x",  # trailing bytes
        struct.pack(">h", 1) + _s("g") + _s("t"),  # the partition is missing
        struct.pack(">h", 2) + struct.pack(">h", 10) + b"abc",  # a string longer than the record
        struct.pack(">h", 2) + struct.pack(">h", 2) + b"\xff\xfe",  # not UTF-8
    ],
)
def test_bad_keys_are_refused(buf: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_key(buf)


@pytest.mark.parametrize(
    "buf",
    [
        struct.pack(">h", 5) + b"\x00" * 20,  # a version from the future
        struct.pack(">h", -1),
        struct.pack(">h", 3)
        + _s("consumer")
        + struct.pack(">i", 1)
        + b"\xff\xff\xff\xff"
        + struct.pack(">q", 0)
        + struct.pack(">i", 1_000_000),  # 1,000,000 members in no bytes
        struct.pack(">h", 4)
        + b"\x09consumer"
        + struct.pack(">i", 1)
        + b"\x00\x00"
        + struct.pack(">q", 5)
        + b"\x01\xff\xff\xff\xff\xff",  # a varint of more than 5 bytes
        b"\x00" * (2 << 20),  # larger than any record this coordinator writes
    ],
)
def test_bad_group_values_are_refused(buf: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_group_value(buf)
