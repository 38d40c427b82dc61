"""Kafka framing and headers, sans-IO: bytes in, frames and parsed request headers out (h11 style).

Runs in every shard process, on its event loop thread, but touches no socket: the connection shell feeds it what
it read. Kafka frames are a signed 32-bit big-endian length followed by that many bytes; see the protocol guide
("Common Request and Response Structure") and KIP-482 for flexible versions and tagged fields.

Bounds: a frame larger than ``max_frame_bytes`` (socket.request.max.bytes) is refused from its length prefix alone,
before anything is allocated for it, and the buffer never holds more than one partial frame plus one read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_I32 = struct.Struct(">i")
_HEADER_FIXED = struct.Struct(">hhi")  # api_key, api_version, correlation_id


class FrameError(Exception):
    """The peer broke the framing rules; the connection must be closed (nothing can be resynchronised)."""


class HeaderError(Exception):
    """A frame's request header cannot be parsed; the connection is closed, as Kafka does."""


class FrameDecoder:
    """Splits a byte stream into Kafka frames without copying more than once per partial frame."""

    __slots__ = ("_buf", "_max_frame_bytes")

    def __init__(self, max_frame_bytes: int) -> None:
        assert max_frame_bytes > 0
        self._max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return every complete frame body (without its length prefix)."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = _I32.unpack_from(buf, pos)
                if size < 0:
                    raise FrameError(f"negative frame length {size}")
                if size > self._max_frame_bytes:
                    raise FrameError(f"frame length {size} exceeds socket.request.max.bytes {self._max_frame_bytes}")
                if end - pos - 4 < size:
                    break
                frames.append(bytes(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        if pos:
            del buf[:pos]
        return frames


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def peek_api(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id): the part of every request header that all versions share."""
    if len(frame) < _HEADER_FIXED.size:
        raise HeaderError(f"request of {len(frame)} bytes is shorter than a request header")
    key, version, correlation_id = _HEADER_FIXED.unpack_from(frame, 0)
    return key, version, correlation_id


def parse_request_header(frame: bytes, flexible: bool) -> tuple[RequestHeader, int]:
    """Parse request header v1 (or v2 when ``flexible``); return it and the offset where the body starts.

    client_id stays a classic nullable string even in header v2 (KIP-482 kept it for compatibility).
    """
    api_key, api_version, correlation_id = peek_api(frame)
    pos = _HEADER_FIXED.size
    if len(frame) < pos + 2:
        raise HeaderError("request header ends before client_id")
    (n,) = struct.unpack_from(">h", frame, pos)
    pos += 2
    client_id: str | None
    if n < 0:
        client_id = None
    else:
        if len(frame) < pos + n:
            raise HeaderError("request header ends inside client_id")
        try:
            client_id = frame[pos : pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError("client_id is not valid UTF-8") from None
        pos += n
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    return RequestHeader(api_key, api_version, correlation_id, client_id), pos


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Unsigned varint (protobuf style, at most 5 bytes for a 32-bit value) -> (value, new position)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise HeaderError("varint runs past the end of the request")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HeaderError("varint longer than 5 bytes")


def skip_tagged_fields(buf: bytes, pos: int) -> int:
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise HeaderError("tagged field runs past the end of the request")
    return pos


def frame_response(correlation_id: int, flexible_header: bool, body_len: int) -> bytes:
    """Length prefix + response header v0 (or v1 with an EMPTY tagged-field section) for a body of body_len bytes.

    The tagged-field section is always empty: librdkafka before 2.2 (Debian's kcat) misreads non-empty ones.
    """
    if flexible_header:
        return struct.pack(">iiB", 4 + 1 + body_len, correlation_id, 0)
    return struct.pack(">ii", 4 + body_len, correlation_id)
