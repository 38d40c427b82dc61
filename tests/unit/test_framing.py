"""Framing and request headers: frames split at any byte boundary, bounds enforced before allocation, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rafka_shards.protocol.framing import (
    FrameDecoder,
    FrameError,
    HeaderError,
    frame_response,
    parse_request_header,
    skip_tagged_fields,
)


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_frames_survive_any_split(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(_frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(max_frame_bytes=1000)
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[prev:cut])
        prev = cut
    assert out == bodies
    assert decoder.buffered_bytes == 0


def test_oversized_frame_refused_from_its_length_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=100 * 1024 * 1024)
    with pytest.raises(FrameError, match=r"exceeds socket\.request\.max\.bytes"):
        decoder.feed(struct.pack(">i", 2**31 - 1))
    # Nothing of the claimed size was buffered.
    assert decoder.buffered_bytes == 4


def test_negative_frame_length() -> None:
    with pytest.raises(FrameError, match="negative"):
        FrameDecoder(100).feed(struct.pack(">i", -5) + b"xxxx")


def test_partial_frame_waits() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(struct.pack(">i", 10) + b"abc") == []
    assert decoder.feed(b"defghij") == [b"abcdefghij"]


def _header(key: int, version: int, corr: int, client: bytes | None, tagged: bytes = b"") -> bytes:
    h = struct.pack(">hhi", key, version, corr)
    h += struct.pack(">h", -1) if client is None else struct.pack(">h", len(client)) + client
    return h + tagged


def test_header_v1_and_v2() -> None:
    frame = _header(3, 4, 77, b"kcat") + b"BODY"
    header, pos = parse_request_header(frame, flexible=False)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (3, 4, 77, "kcat")
    assert frame[pos:] == b"BODY"
    # v2: one tagged field (tag 5, 3 bytes) after client_id.
    frame = _header(0, 9, 1, None, b"\x01\x05\x03abc") + b"B"
    header, pos = parse_request_header(frame, flexible=True)
    assert header.client_id is None
    assert frame[pos:] == b"B"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x03",
        _header(3, 1, 1, b"abc")[:-1],
        _header(0, 9, 1, b"", b"\x01\x05\x09ab"),
        _header(0, 9, 1, b"", b"\xff\xff\xff\xff\xff\xff"),
    ],
)
def test_bad_headers_raise_header_error(frame: bytes) -> None:
    with pytest.raises(HeaderError):
        parse_request_header(frame, flexible=True)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_header_parser_only_raises_header_error(frame: bytes, flexible: bool) -> None:
    try:
        header, pos = parse_request_header(frame, flexible)
    except HeaderError:
        return
    assert 8 <= pos <= len(frame)
    assert isinstance(header.client_id, str | None)


def test_skip_tagged_fields_empty() -> None:
    assert skip_tagged_fields(b"\x00", 0) == 1


def test_response_header_has_empty_tagged_fields() -> None:
    assert frame_response(9, True, 3) == struct.pack(">iiB", 8, 9, 0)
    assert frame_response(9, False, 3) == struct.pack(">ii", 7, 9)
