"""The client side of the Kafka protocol, sans-IO: request frames out, response frames in (h11 style).

Runs wherever this broker is a Kafka client of another broker: the replica fetcher in a shard process, the cross-node
admin calls and the liveness probe in the controller process (``rafka_shards.ipc.kafka_client`` is the asyncio shell
that does the socket I/O). Touches no socket and no clock.

Headers follow the protocol guide ("Common Request and Response Structure") and KIP-482: a request goes with request
header v2 (client_id stays a classic nullable string, then tagged fields) when its version is flexible, v1 otherwise;
its response comes with response header v1 (correlation id, tagged fields) when flexible, v0 otherwise, except
ApiVersions, whose response header is always v0 so that a client can read it before it knows what the broker speaks.
The choice is read from kio's classes, generated from Kafka's JSON message specs, as Kafka's own client reads it
from the generated ``ApiMessageType``.

Bounds: a response whose length prefix exceeds ``response_bytes_max`` is refused before it is read; one request is in
flight per connection.
"""

from __future__ import annotations

import io
import struct
from typing import Any, TypeVar

from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.protocol import Entity

from rafka_shards.protocol.framing import HeaderError, skip_tagged_fields
from rafka_shards.protocol.kio_codec import request_class, response_class

_I32 = struct.Struct(">i")
_REQUEST_FIXED = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length
_CORRELATION_IDS = 2**31  # correlation ids are int32: they wrap to 0 before they would turn negative
_DECODE_ERRORS = (SerialError, HeaderError, ValueError, TypeError, KeyError, OverflowError, UnicodeDecodeError)

R = TypeVar("R", bound=Entity)  # a kio response class


class ResponseError(Exception):
    """The broker's response breaks the protocol (size, correlation id, encoding): the connection cannot be trusted
    any more and must be closed."""


def request_header_version(api_key: int, api_version: int) -> int:
    """1, or 2 when (``api_key``, ``api_version``) is a flexible version."""
    cls: Any = request_class(api_key, api_version)
    if cls is None:
        raise ValueError(f"no request class for API key {api_key} v{api_version}")
    return int(cls.__header_schema__.__version__)


def response_header_version(api_key: int, api_version: int) -> int:
    """0, or 1 when (``api_key``, ``api_version``) is a flexible version other than ApiVersions."""
    cls: Any = response_class(api_key, api_version)
    if cls is None:
        raise ValueError(f"no response class for API key {api_key} v{api_version}")
    return int(cls.__header_schema__.__version__)


def frame_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body_bytes: bytes
) -> bytes:
    """Length prefix + request header (v1, or v2 for a flexible version, with no tagged fields) + ``body_bytes``."""
    assert 0 <= correlation_id < _CORRELATION_IDS, correlation_id
    client = b"" if client_id is None else client_id.encode("utf-8")
    header = _REQUEST_FIXED.pack(api_key, api_version, correlation_id, -1 if client_id is None else len(client))
    tagged = b"\x00" if request_header_version(api_key, api_version) >= 2 else b""
    size = len(header) + len(client) + len(tagged) + len(body_bytes)
    return b"".join((_I32.pack(size), header, client, tagged, body_bytes))


def read_response(frame: bytes, api_key: int, api_version: int) -> tuple[int, int]:
    """(correlation id, offset where the body starts) of a response frame (without its length prefix) to a request
    of ``api_key`` v``api_version``: response header v0, or v1 whose tagged fields are skipped."""
    if len(frame) < _I32.size:
        raise ResponseError(f"response of {len(frame)} bytes is shorter than a response header")
    (correlation_id,) = _I32.unpack_from(frame, 0)
    if response_header_version(api_key, api_version) == 0:
        return correlation_id, _I32.size
    try:
        return correlation_id, skip_tagged_fields(frame, _I32.size)
    except HeaderError as e:
        raise ResponseError(f"response header: {e}") from None


def encode_request(request: Any) -> tuple[int, int, bytes]:
    """(api key, version, body bytes) of a kio request object."""
    cls: Any = type(request)
    buf = io.BytesIO()
    entity_writer(cls)(buf, request)
    return int(cls.__api_key__), int(cls.__version__), buf.getvalue()


def decode_response(response_type: type[R], frame: bytes, offset: int) -> R:
    """The kio response object whose body starts at ``offset`` of ``frame`` (read in place: no copy of the frame)."""
    try:
        response, _ = entity_reader(response_type)(frame, offset)
    except _DECODE_ERRORS as e:
        raise ResponseError(f"malformed {response_type.__name__}: {e}") from None
    return response


class ClientProtocol:
    """One client connection's protocol state: its correlation ids and the one request in flight.

    ``send`` turns a kio request object into the bytes to write; ``response_size`` checks a response's length prefix
    before its body is read; ``receive`` checks the frame answers the request in flight and decodes it
    (``receive_frame`` only checks).
    """

    __slots__ = ("_in_flight", "_last_correlation_id", "client_id", "response_bytes_max")

    def __init__(self, client_id: str, response_bytes_max: int) -> None:
        assert response_bytes_max >= _I32.size, response_bytes_max
        self.client_id = client_id
        self.response_bytes_max = response_bytes_max
        self._last_correlation_id = 0
        self._in_flight: tuple[int, int, int] | None = None  # (api key, version, correlation id)

    def send(self, request: Any) -> bytes:
        """The frame of ``request``, a kio request object; its response must be received before the next send."""
        assert self._in_flight is None, "one request in flight per connection"
        api_key, api_version, body = encode_request(request)
        correlation_id = self._last_correlation_id = (self._last_correlation_id + 1) % _CORRELATION_IDS
        self._in_flight = (api_key, api_version, correlation_id)
        return frame_request(api_key, api_version, correlation_id, self.client_id, body)

    def response_size(self, prefix: bytes) -> int:
        """The size of the response frame announced by its 4-byte length ``prefix``."""
        size: int = _I32.unpack(prefix)[0]
        if not _I32.size <= size <= self.response_bytes_max:
            raise ResponseError(f"response of {size} bytes")
        return size

    def receive_frame(self, frame: bytes) -> int:
        """Where the body starts in ``frame``, checked to answer the request in flight (its body is not read)."""
        assert self._in_flight is not None, "no request in flight"
        api_key, api_version, expected = self._in_flight
        self._in_flight = None
        correlation_id, offset = read_response(frame, api_key, api_version)
        if correlation_id != expected:
            raise ResponseError(f"correlation id {correlation_id}, expected {expected}")
        return offset

    def receive(self, frame: bytes, response_type: type[R]) -> R:
        """The response to the request in flight, decoded as ``response_type`` (its kio class)."""
        cls: Any = response_type
        assert self._in_flight is not None, "no request in flight"
        assert (int(cls.__api_key__), int(cls.__version__)) == self._in_flight[:2], (response_type, self._in_flight)
        return decode_response(response_type, frame, self.receive_frame(frame))
