"""A small asyncio Kafka client: one connection to one broker, one request in flight, typed kio requests and responses.

Runs wherever this broker calls another broker's Kafka listener: the replica fetcher (shard process), the cross-node
admin calls and the liveness probe (controller process), later inter-broker calls such as WriteTxnMarkers. It lives
in ``ipc`` because three process packages use it and none may import another; the protocol is
``rafka_shards.protocol.client`` (sans-IO), this is only its socket shell.

Security (``security.client_security.ClientSecurity``, built from the config by ``inter_broker_security``): TLS
(handshake bounded by ``TLS_HANDSHAKE_TIMEOUT_S`` and by ``timeout_s``), then a SASL login (``security.sasl_client``
decides; this shell sends its requests) before ``connect`` returns. A server that limits the session (KIP-368's
session lifetime) is logged in to again on the same connection before the first request after
``REAUTH_FRACTION`` of the lifetime, as Kafka's clients do.

Every failure is a ``KafkaClientError`` whose ``failure`` says what happened, for callers that act on the difference
(the probe fences a broker only on ``REFUSED``). After any failure the connection is unusable: close it. A refused
certificate or login is ``SECURITY``; its message never holds the password.
Bounds: responses of at most ``response_bytes_max``; an optional ``timeout_s`` on connecting and on each wait for the
peer (sending the request, reading the response's length, reading its body).
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v1.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from kio.static.protocol import Entity

from rafka_shards import event_loop
from rafka_shards.protocol.client import ClientProtocol, ResponseError
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity
from rafka_shards.security.sasl_client import SaslClientError, SaslClientExchange, SaslClientSettings
from rafka_shards.security.tls import TLS_HANDSHAKE_TIMEOUT_S

REAUTH_FRACTION: Final = 0.85  # of the session lifetime the server granted: log in again after that much of it
SASL_ROUND_TRIPS_MAX: Final = 4  # SaslAuthenticate requests in one login (PLAIN takes 1, SCRAM 2)

T = TypeVar("T")
R = TypeVar("R", bound=Entity)  # a kio response class


class Failure(enum.Enum):
    REFUSED = "refused"  # connecting: ECONNREFUSED, nothing listens on that port
    UNREACHABLE = "unreachable"  # connecting: any other OSError (no route, reset, ...): not proof of anything
    TIMED_OUT = "timed out"  # connecting or waiting for the peer took longer than the timeout
    CLOSED = "closed"  # the connection closed, reset or failed after it was made
    MALFORMED = "malformed"  # the response broke the protocol (size, correlation id, encoding)
    SECURITY = "security"  # the TLS handshake or the SASL login failed (a refused certificate, wrong credentials)


class KafkaClientError(Exception):
    """A Kafka request could not be made or answered; ``failure`` says why (the message keeps the details)."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


async def _within(aw: Awaitable[T], timeout_s: float | None) -> T:
    return await (aw if timeout_s is None else event_loop.within(aw, timeout_s))


class KafkaClient:
    """One connection to one broker's Kafka listener (``connect`` makes it; ``close`` or ``abort`` ends it)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ClientProtocol,
        sasl: SaslClientSettings | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._broken = False
        self._sasl = sasl
        self._reauthenticate_at: float | None = None  # time.monotonic() after which the next request logs in again

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        response_bytes_max: int,
        timeout_s: float | None = None,
        security: ClientSecurity = PLAINTEXT,
    ) -> KafkaClient:
        tls: dict[str, Any] = {}
        if security.tls is not None:
            context = security.tls.context(time.monotonic_ns() // 1_000_000)  # rebuilt if the files changed
            handshake_s = TLS_HANDSHAKE_TIMEOUT_S if timeout_s is None else min(timeout_s, TLS_HANDSHAKE_TIMEOUT_S)
            tls = {"ssl": context, "server_hostname": host, "ssl_handshake_timeout": handshake_s}
        try:
            reader, writer = await _within(asyncio.open_connection(host, port, **tls), timeout_s)
        except ConnectionRefusedError as e:
            raise KafkaClientError(Failure.REFUSED, str(e)) from e
        except TimeoutError as e:
            raise KafkaClientError(Failure.TIMED_OUT, str(e) or f"connecting to {host}:{port} timed out") from e
        except ssl.SSLError as e:  # before OSError, its base: the peer's certificate or ours was refused
            raise KafkaClientError(Failure.SECURITY, f"TLS handshake with {host}:{port} failed: {e}") from e
        except OSError as e:
            raise KafkaClientError(Failure.UNREACHABLE, str(e)) from e
        client = cls(reader, writer, ClientProtocol(client_id, response_bytes_max), security.sasl)
        if security.sasl is not None:
            try:
                await client._authenticate(timeout_s)
            except BaseException:
                client.abort()
                raise
        return client

    async def _authenticate(self, timeout_s: float | None) -> None:
        """One SASL login (KIP-152 framing) on this connection: at connect, and again when the session is due."""
        assert self._sasl is not None
        exchange = SaslClientExchange(self._sasl)
        try:
            handshake = await self._exchange(exchange.handshake(), timeout_s, self._decoder(SaslHandshakeResponse))
            step: SaslAuthenticateRequest | None = exchange.on_handshake(handshake)
            for _ in range(SASL_ROUND_TRIPS_MAX):
                assert step is not None
                answer = await self._exchange(step, timeout_s, self._decoder(SaslAuthenticateResponse))
                # SCRAM's client-final message costs a PBKDF2 (4096+ HMACs): not on the event loop.
                step = await asyncio.to_thread(exchange.on_authenticate, answer)
                if step is None:
                    break
            else:  # the exchange's own states end it sooner; a server that would go on is refused
                raise SaslClientError(f"the SASL login took more than {SASL_ROUND_TRIPS_MAX} round trips")
        except SaslClientError as e:
            self._broken = True  # the server closes the connection after a failed login
            raise KafkaClientError(Failure.SECURITY, str(e)) from e
        lifetime_s = exchange.session_lifetime_ms / 1000
        self._reauthenticate_at = time.monotonic() + REAUTH_FRACTION * lifetime_s if lifetime_s > 0 else None

    async def _reauthenticate_if_due(self, timeout_s: float | None) -> None:
        if self._reauthenticate_at is not None and time.monotonic() >= self._reauthenticate_at:
            await self._authenticate(timeout_s)

    def _decoder(self, response_type: type[R]) -> Callable[[bytes], R]:
        return lambda frame: self._protocol.receive(frame, response_type)

    async def request(self, request: Any, response_type: type[R], timeout_s: float | None = None) -> R:
        """Send ``request`` (a kio request object) and return its response, decoded as ``response_type``."""
        await self._reauthenticate_if_due(timeout_s)
        return await self._exchange(request, timeout_s, self._decoder(response_type))

    async def request_answered(self, request: Any, timeout_s: float | None = None) -> None:
        """Send ``request`` and wait for the frame that answers it, without decoding its body (a liveness check)."""
        await self._reauthenticate_if_due(timeout_s)
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
