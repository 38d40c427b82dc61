"""A small asyncio Kafka client: one connection to one broker, one request in flight, typed kio requests and responses.

Runs wherever this broker calls another broker's Kafka listener: the replica fetcher (shard process), the cross-node
admin calls and the liveness probe (controller process), later inter-broker calls such as WriteTxnMarkers. It lives
in ``ipc`` because three process packages use it and none may import another; the protocol is
``rafka_shards.protocol.client`` (sans-IO), this is only its socket shell.

Every failure is a ``KafkaClientError`` whose ``failure`` says what happened, for callers that act on the difference
(the probe fences a broker only on ``REFUSED``). After any failure the connection is unusable: close it.
Bounds: responses of at most ``response_bytes_max``; an optional ``timeout_s`` on connecting and on each wait for the
peer (sending the request, reading the response's length, reading its body).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kio.static.protocol import Entity

from rafka_shards import event_loop
from rafka_shards.protocol.client import ClientProtocol, ResponseError

T = TypeVar("T")
R = TypeVar("R", bound=Entity)  # a kio response class


class Failure(enum.Enum):
    REFUSED = "refused"  # connecting: ECONNREFUSED, nothing listens on that port
    UNREACHABLE = "unreachable"  # connecting: any other OSError (no route, reset, ...): not proof of anything
    TIMED_OUT = "timed out"  # connecting or waiting for the peer took longer than the timeout
    CLOSED = "closed"  # the connection closed, reset or failed after it was made
    MALFORMED = "malformed"  # the response broke the protocol (size, correlation id, encoding)


class KafkaClientError(Exception):
    """A Kafka request could not be made or answered; ``failure`` says why (the message keeps the details)."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


async def _within(aw: Awaitable[T], timeout_s: float | None) -> T:
    return await (aw if timeout_s is None else event_loop.within(aw, timeout_s))


class KafkaClient:
    """One connection to one broker's Kafka listener (``connect`` makes it; ``close`` or ``abort`` ends it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._broken = False

    @classmethod
    async def connect(
        cls, host: str, port: int, *, client_id: str, response_bytes_max: int, timeout_s: float | None = None
    ) -> KafkaClient:
        try:
            reader, writer = await _within(asyncio.open_connection(host, port), timeout_s)
        except ConnectionRefusedError as e:
            raise KafkaClientError(Failure.REFUSED, str(e)) from e
        except TimeoutError as e:
            raise KafkaClientError(Failure.TIMED_OUT, str(e) or f"connecting to {host}:{port} timed out") from e
        except OSError as e:
            raise KafkaClientError(Failure.UNREACHABLE, str(e)) from e
        return cls(reader, writer, ClientProtocol(client_id, response_bytes_max))

    async def request(self, request: Any, response_type: type[R], timeout_s: float | None = None) -> R:
        """Send ``request`` (a kio request object) and return its response, decoded as ``response_type``."""
        return await self._exchange(request, timeout_s, lambda frame: self._protocol.receive(frame, response_type))

    async def request_answered(self, request: Any, timeout_s: float | None = None) -> None:
        """Send ``request`` and wait for the frame that answers it, without decoding its body (a liveness check)."""
        await self._exchange(request, timeout_s, self._protocol.receive_frame)

    async def _exchange(self, request: Any, timeout_s: float | None, receive: Callable[[bytes], T]) -> T:
        if self._broken or self._writer.transport.is_closing():  # uvloop raises on a write to a closed transport
            raise KafkaClientError(Failure.CLOSED, "the connection closed")
        self._broken = True  # until the response is in: a failure or a cancellation leaves the stream mid-frame
        try:
            self._writer.write(self._protocol.send(request))
            await _within(self._writer.drain(), timeout_s)
            size = self._protocol.response_size(await _within(self._reader.readexactly(4), timeout_s))
            out = receive(await _within(self._reader.readexactly(size), timeout_s))
        except TimeoutError as e:
            raise KafkaClientError(Failure.TIMED_OUT, str(e) or "no response in time") from e
        except ResponseError as e:
            raise KafkaClientError(Failure.MALFORMED, str(e)) from e
        except (asyncio.IncompleteReadError, OSError) as e:
            raise KafkaClientError(Failure.CLOSED, str(e)) from e
        self._broken = False
        return out

    def close(self) -> None:
        """Close after what is already written is sent."""
        self._writer.close()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all (never waits on a peer that stopped reading)."""
        self._writer.transport.abort()
