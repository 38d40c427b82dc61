"""One client connection of a shard: frames in, handler tasks, responses out in request order.

Runs in a shard process on its event loop; the thin shell around the sans-IO framing and codec. Requests on one
connection are handled concurrently (so pipelined acks=all produces share one fsync) but answered in the order they
arrived, as the protocol requires. Bounds: at most ``inflight_requests_per_connection_max`` requests in flight (then
reading pauses), frames above ``socket_request_max_bytes`` close the connection before anything is allocated, and
reading also pauses while the socket's write buffer is full.

Malformed input closes this connection only (Kafka does the same: the stream cannot be resynchronised): a bad
length, an unknown API key, an unsupported version of an API other than ApiVersions, a header or body that does not
parse. Errors about data (bad CRC, unknown topic, offset out of range) are error codes inside a normal response.

A connection sees its shard only through ``ConnectionHost`` (declared here, provided by ``shard.Shard``): the API
declarations, the request probe, its limits, the handlers' context, admission and the fatal-error exit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
import types
import typing
from collections.abc import Awaitable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Protocol

from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec, throttle
from rafka_shards.protocol.framing import (
    FrameDecoder,
    FrameError,
    HeaderError,
    RequestHeader,
    frame_response,
    parse_request_header,
    peek_api,
)
from rafka_shards.security.audit import Actor, AuditEvent, AuthenticationEvent, AuthFailure, Source, current_actor
from rafka_shards.security.quota import QuotaType, Recorded
from rafka_shards.security.sasl import PLAIN, SaslError, SaslProtocolError
from rafka_shards.security.sasl_session import SASL_HANDSHAKE_KEY, SASL_KEYS, Admit, SaslSession, StepReply
from rafka_shards.security.tls import ANONYMOUS, PrincipalError, PrincipalMapper, principal_from_certificate
from rafka_shards.shard.authz import acl_host
from rafka_shards.shard.kafka.api import ApiHandler, CloseConnection, RequestContext, ResponseBody
from rafka_shards.shard.kafka.handlers import sasl_authenticate, sasl_handshake
from rafka_shards.shard.kafka.handlers.api_versions import API_KEY as API_VERSIONS_KEY
from rafka_shards.shard.kafka.handlers.api_versions import unsupported_version_body
from rafka_shards.shard.limits import MALFORMED_FRAME_LOG_BYTES_MAX
from rafka_shards.shard.quotas import ShardQuotas

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds of one connection (from ``BrokerConfig``)."""

    request_bytes_max: int  # socket_request_max_bytes: a longer frame closes the connection
    inflight_requests_max: int  # inflight_requests_per_connection_max: reading pauses at this many
    connections_max: int  # the shard's bound, named when it refuses a connection


class RequestProbe(Protocol):
    """Where a connection counts requests (``rafka_shards.shard.probe.Probe``)."""

    def request(self, api: str, latency_s: float) -> None: ...

    def request_error(self, api: str, error: str) -> None: ...

    def sasl_authentication(self, mechanism: str, success: bool) -> None: ...


class ConnectionHost(Protocol):
    """What a connection needs of the shard that accepted it; ``rafka_shards.shard.shard.Shard`` provides it."""

    @property
    def apis(self) -> Mapping[int, ApiHandler]:
        """Every handler's declaration, by API key."""
        ...

    @property
    def probe(self) -> RequestProbe: ...

    @property
    def connection_limits(self) -> ConnectionLimits: ...

    @property
    def quotas(self) -> ShardQuotas | None:
        """The shard's client quotas (None: not enforced)."""
        ...

    def request_context(self, header: RequestHeader, conn: KafkaConnection) -> RequestContext:
        """What a handler gets besides its request (the partition manager, the group coordinator, the config, the
        API declarations, the connection's client address, listener and principal)."""
        ...

    def connection_opened(self, conn: KafkaConnection) -> bool:
        """Admit ``conn`` (False: refuse it, the shard is full or not ready)."""
        ...

    def connection_closed(self, conn: KafkaConnection) -> None: ...

    def fatal(self, exc: BaseException) -> None:
        """An invariant broke while handling a request: stop the shard."""
        ...

    def audit(self, event: AuditEvent) -> None:
        """Record an audit event (authentication results here)."""
        ...


class _Metered:
    """A request of a client while quotas are in force: what it is charged, and the throttle time it gets."""

    __slots__ = ("api_key", "client_id", "loop_ns", "request_bytes", "version")

    def __init__(self, api_key: int, version: int, client_id: str | None, request_bytes: int) -> None:
        self.api_key = api_key
        self.version = version
        self.client_id = client_id
        self.request_bytes = request_bytes
        self.loop_ns = 0  # event-loop time spent on it: decoding, then each step of its handler


# Counted against the request quota but never throttled (Kafka exempts the SASL exchange; ApiVersions is how a client
# starts, and its response carries the throttle time in no fixed place): the client's next request pays.
_UNTHROTTLED_APIS = frozenset({*SASL_KEYS, API_VERSIONS_KEY})


class _Pending:
    __slots__ = (
        "api",
        "body",
        "close_reason",
        "correlation_id",
        "flexible_header",
        "hold_until",
        "metered",
        "raw",
        "ready",
        "started",
        "task",
        "throttle_ms",
    )

    def __init__(self, api: str, correlation_id: int, flexible_header: bool) -> None:
        self.api = api
        self.correlation_id = correlation_id
        self.flexible_header = flexible_header
        self.started = time.perf_counter()
        self.task: asyncio.Future[ResponseBody | None] | None = None
        # Set by the request's own task as its last step (``_answer``): the response is written from there, a turn
        # of the event loop before the task's done-callbacks would run.
        self.ready = False
        self.body: ResponseBody | None = None
        self.raw = False  # a raw SASL token (after SaslHandshake v0): written with its length only, no header
        self.close_reason: str | None = None  # close the connection once this response is written
        self.metered: _Metered | None = None  # set while client quotas are in force
        self.throttle_ms = 0  # the quota throttle time the response carries; the connection is muted that long
        self.hold_until = 0.0  # loop time before which the response is not written (a client that does not throttle)


class KafkaConnection(asyncio.Protocol):
    def __init__(
        self,
        shard: ConnectionHost,
        listener: str = "PLAINTEXT",
        principals: PrincipalMapper | None = None,
        sasl: SaslSession | None = None,
    ) -> None:
        self._shard = shard
        self._sasl = sasl  # a SASL listener's: requests pass its state machine first
        self.listener = listener  # the name of the listener it came in on (Metadata answers with that listener's)
        self._principals = principals  # an SSL listener's ssl.principal.mapping.rules
        self.principal = ANONYMOUS
        self._limits = limits = shard.connection_limits
        self._decoder = FrameDecoder(limits.request_bytes_max)
        self._transport: asyncio.Transport | None = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._inflight_max = limits.inflight_requests_max
        self._reading_paused = False
        self._writing_paused = False
        self._closing = False
        self._muted_until = 0.0  # loop time: reading stays paused until then (quota throttling, KIP-219)
        self._wake: asyncio.TimerHandle | None = None  # the one timer ending a mute or releasing a held response
        self._wake_at = 0.0
        self.peer = "?"
        self.host = ""  # the client's address, as Kafka shows it in group descriptions ("/127.0.0.1")
        self.acl_host = ""  # the client's address as ACL hosts are written ("127.0.0.1", "0:0:0:0:0:0:0:1")

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport but implements it.
        transport = typing.cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = f"/{peer[0]}" if isinstance(peer, tuple) else ""
        self.acl_host = acl_host(peer[0]) if isinstance(peer, tuple) else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and self._principals is not None:  # called once the TLS handshake is done
            certificate = tls.getpeercert(binary_form=True)
            try:
                self.principal = principal_from_certificate(certificate, self._principals)
            except PrincipalError as e:  # Kafka fails the authentication: the client certificate maps to no one
                log.warning("refusing %s on listener %s: %s", self.peer, self.listener, e)
                self._audit_authentication("", "TLS", False, AuthFailure.PRINCIPAL_MAPPING)
                self._closing = True
                transport.abort()
                return
            if certificate is not None:
                user = self.principal.partition(":")[2]
                self._audit_authentication(user, "TLS", True, principal=self.principal)
        if not self._shard.connection_opened(self):
            log.warning("refusing %s: connections_max %d reached", self.peer, self._limits.connections_max)
            self._closing = True
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.cancel()
        for p in self._pending:
            if p.task is not None:
                p.task.cancel()
        self._pending.clear()
        self._shard.connection_closed(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self._abort(f"bad frame: {e}")
            return
        for frame in frames:
            if self._closing:
                return
            self._dispatch(frame)
        self._update_reading()

    # ---- requests --------------------------------------------------------------------------------------------

    def _dispatch(self, frame: bytes) -> None:
        started_ns = time.perf_counter_ns()
        sasl = self._sasl
        if sasl is not None and sasl.raw:
            self._raw_token(sasl, frame)
            return
        try:
            api_key, version, correlation_id = peek_api(frame)
        except HeaderError as e:
            self._abort(str(e))
            return
        if sasl is not None:
            admission = sasl.admit(api_key, _monotonic_ms())
            if admission.action is Admit.CLOSE:
                self._close_after_writes(admission.reason)
                return
            if admission.action is not Admit.SASL:
                sasl = None
        handler = self._shard.apis.get(api_key)
        if handler is None:
            self._abort(f"unknown API key {api_key}")
            return
        if not handler.supports(version):
            if api_key == API_VERSIONS_KEY:
                # KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the client can downgrade.
                body = unsupported_version_body(self._shard.apis)
                self._enqueue(_Pending(handler.name, correlation_id, False), _done(body))
                return
            self._shard.probe.request_error(handler.name, "UNSUPPORTED_VERSION")
            self._abort(
                f"{handler.name} v{version} is not supported (versions {handler.min_version}-{handler.max_version})"
            )
            return
        try:
            header, body_offset = parse_request_header(frame, kio_codec.is_flexible(api_key, version))
            request = kio_codec.decode_request(api_key, version, frame, body_offset)
        except (HeaderError, kio_codec.RequestDecodeError) as e:
            log.debug("malformed frame from %s: %s", self.peer, frame[:MALFORMED_FRAME_LOG_BYTES_MAX].hex())
            self._shard.probe.request_error(handler.name, "MALFORMED_REQUEST")
            self._abort(f"malformed {handler.name} v{version} request: {e}")
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s v%d correlation id %d", self.peer, handler.name, version, correlation_id)
        # ApiVersions responses always use header v0 so that any client can read them (KIP-511).
        flexible_header = api_key != API_VERSIONS_KEY and kio_codec.is_flexible(api_key, version)
        p = _Pending(handler.name, correlation_id, flexible_header)
        handling: Coroutine[typing.Any, typing.Any, ResponseBody | None]
        if sasl is not None:
            handling = self._sasl_request(sasl, p, api_key, version, request)
        else:
            handling = handler.handle(self._shard.request_context(header, self), request)  # type: ignore[assignment]
            quotas = self._shard.quotas
            if quotas is not None and quotas.active:
                metered = p.metered = _Metered(api_key, version, header.client_id, len(frame))
                if quotas.timing:
                    handling = _timed(handling, metered)
                    metered.loop_ns += time.perf_counter_ns() - started_ns
        self._enqueue(p, asyncio.ensure_future(self._answer(p, handling)))

    # ---- SASL (a SASL listener's SaslHandshake and SaslAuthenticate, and raw tokens after a handshake v0) ------

    async def _sasl_request(
        self, sasl: SaslSession, p: _Pending, api_key: int, version: int, request: typing.Any
    ) -> ResponseBody | None:
        if api_key == SASL_HANDSHAKE_KEY:
            reply = sasl.handshake(version, str(request.mechanism))
            if reply.close:
                p.close_reason = f"SaslHandshake refused: {reply.error_code.name}"
                self._shard.probe.sasl_authentication(sasl.mechanism, False)
                unsupported = reply.error_code is ErrorCode.UNSUPPORTED_SASL_MECHANISM
                reason = AuthFailure.UNSUPPORTED_MECHANISM if unsupported else AuthFailure.ILLEGAL_STATE
                self._audit_authentication(sasl.attempted_user, str(request.mechanism), False, reason)
            return sasl_handshake.response(version, reply.error_code, reply.mechanisms)
        step = await self._sasl_step(sasl, p, bytes(request.auth_bytes))
        return sasl_authenticate.response(
            version, step.error_code, step.error_message, step.auth_bytes, step.session_lifetime_ms
        )

    def _raw_token(self, sasl: SaslSession, frame: bytes) -> None:
        p = _Pending("SaslAuthenticate", 0, False)
        p.raw = True

        async def answer() -> ResponseBody | None:
            step = await self._sasl_step(sasl, p, frame)
            return None if step.close else step.auth_bytes  # Kafka answers a failed raw exchange by closing

        self._enqueue(p, asyncio.ensure_future(self._answer(p, answer())))

    async def _sasl_step(self, sasl: SaslSession, p: _Pending, token: bytes) -> StepReply:
        """Run the session's mechanism on ``token``: PLAIN's PBKDF2 in a thread (milliseconds of CPU), SCRAM's few
        HMACs here. A failure is answered after the failed-authentication delay, then the connection closes."""
        server = sasl.begin_step(len(token))
        failure = AuthFailure.BAD_CREDENTIALS
        if isinstance(server, StepReply):
            reply = server
            if reply.error_code is ErrorCode.ILLEGAL_SASL_STATE:
                failure = AuthFailure.ILLEGAL_STATE
            elif "re-authentication" in reply.reason:
                failure = AuthFailure.REAUTHENTICATION
            else:
                failure = AuthFailure.MALFORMED  # the token was too large
        else:
            outcome: bytes | SaslError
            try:
                if server.mechanism_name == PLAIN:
                    outcome = await asyncio.get_running_loop().run_in_executor(None, server.step, token)
                else:
                    outcome = server.step(token)
            except SaslError as e:
                outcome = e
                if isinstance(e, SaslProtocolError):
                    failure = AuthFailure.MALFORMED
            reply = sasl.step_done(outcome, _monotonic_ms())
            if reply.authenticated:
                assert sasl.principal is not None
                self.principal = sasl.principal
                self._shard.probe.sasl_authentication(server.mechanism_name, True)
                user = sasl.principal.partition(":")[2]
                self._audit_authentication(user, server.mechanism_name, True, principal=sasl.principal)
                log.debug("%s: authenticated as %s on listener %s", self.peer, sasl.principal, self.listener)
            elif reply.close and not isinstance(outcome, SaslError):
                failure = AuthFailure.REAUTHENTICATION  # a re-authentication as another principal
        if reply.close:
            self._shard.probe.sasl_authentication(sasl.mechanism, False)
            self._audit_authentication(sasl.attempted_user, sasl.mechanism, False, failure)
            p.close_reason = f"SASL: {reply.reason}"
            if reply.delay and sasl.settings.failed_authentication_delay_ms:
                await asyncio.sleep(sasl.settings.failed_authentication_delay_ms / 1000)
        return reply

    def _audit_authentication(
        self,
        user: str,
        mechanism: str,
        success: bool,
        reason: AuthFailure | None = None,
        principal: str = "",
    ) -> None:
        event = AuthenticationEvent(user, mechanism, self.listener, self.peer, success, reason, principal)
        self._shard.audit(event)

    async def _answer(self, p: _Pending, handling: Awaitable[ResponseBody | None]) -> ResponseBody | None:
        """Run the handler; its response is written at once if every earlier one on this connection is. An
        exception or a cancellation is left to the task's done-callback (``_on_response_ready``).

        The request's task has its own context: who is asking (``security.audit.current_actor``) is set there for
        whatever the handler changes (``PartitionManager.propose`` audits each change as theirs)."""
        current_actor.set(Actor(self.principal, self.peer, Source.KAFKA, p.api, self.listener))
        body = await handling
        if p.metered is not None:
            body = self._throttle(p, p.metered, body)
        p.body, p.ready = body, True
        self._on_response_ready(None)
        return body

    def _enqueue(self, p: _Pending, task: asyncio.Future[ResponseBody | None]) -> None:
        p.task = task
        self._pending.append(p)
        task.add_done_callback(self._on_response_ready)

    def _on_response_ready(self, _task: asyncio.Future[ResponseBody | None] | None) -> None:
        transport = self._transport
        if self._closing or transport is None:
            return
        pending = self._pending
        probe = self._shard.probe
        while pending and (pending[0].ready or _finished(pending[0].task)):
            p = pending[0]
            if p.hold_until and p.hold_until > asyncio.get_running_loop().time():
                break  # a throttled response to a client that does not throttle itself: written when the time is up
            pending.popleft()
            if p.ready:
                probe.request(p.api, time.perf_counter() - p.started)
                self._write_response(transport, p, p.body)
                if p.throttle_ms and not p.hold_until:  # KIP-219: answered at once, then not read for that long
                    self._mute(p.throttle_ms)
                if p.close_reason is not None:
                    self._close_after_writes(p.close_reason)
                    return
                continue
            assert p.task is not None
            if p.task.cancelled():
                probe.request_error(p.api, "CANCELLED")
                self._abort("request cancelled")
                return
            exc = p.task.exception()
            probe.request(p.api, time.perf_counter() - p.started)
            if exc is not None:
                probe.request_error(p.api, "CONNECTION_CLOSED" if isinstance(exc, CloseConnection) else "INTERNAL")
                if isinstance(exc, CloseConnection):
                    self._close_after_writes(str(exc))
                    return
                if isinstance(exc, AssertionError):
                    # An invariant broke: crash the shard loudly rather than serve from a state we do not trust.
                    self._shard.fatal(exc)
                    return
                log.error("%s: request failed, closing the connection", self.peer, exc_info=exc)
                self._abort(f"internal error: {type(exc).__name__}")
                return
            self._write_response(transport, p, p.task.result())
            if p.close_reason is not None:
                self._close_after_writes(p.close_reason)
                return
        self._update_reading()

    @staticmethod
    def _write_response(transport: asyncio.Transport, p: _Pending, body: ResponseBody | None) -> None:
        if body is None:
            return  # acks=0: no response
        if p.raw:
            assert isinstance(body, bytes)
            transport.write(len(body).to_bytes(4, "big") + body)
        elif isinstance(body, bytes):
            transport.write(frame_response(p.correlation_id, p.flexible_header, len(body)) + body)
        else:
            size = sum(len(b) for b in body)
            transport.writelines([frame_response(p.correlation_id, p.flexible_header, size), *body])

    # ---- flow control and closing ----------------------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        should_pause = (
            self._writing_paused
            or len(self._pending) >= self._inflight_max
            or (self._muted_until > 0 and self._muted_until > asyncio.get_running_loop().time())
        )
        if should_pause and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif not should_pause and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False

    # ---- quota throttling (KIP-219) ----------------------------------------------------------------------------

    def _throttle(self, p: _Pending, m: _Metered, body: ResponseBody | None) -> ResponseBody | None:
        """Charge the request to the client's quotas, and give its response the longest throttle time any of them
        asks for (the Fetch handler may have put its own in already): written into the body, and the connection
        muted that long, or the response held that long for a client that does not throttle itself."""
        quotas = self._shard.quotas
        assert quotas is not None
        exempt = m.api_key in _UNTHROTTLED_APIS
        worst: tuple[QuotaType, Recorded] | None = None
        if quotas.timing:
            recorded = quotas.record_request_time(self.principal, m.client_id, m.loop_ns, not exempt)
            worst = _longer(worst, QuotaType.REQUEST, recorded)
        if m.api_key == throttle.PRODUCE_KEY:
            recorded = quotas.record(QuotaType.PRODUCE, self.principal, m.client_id, m.request_bytes)
            worst = _longer(worst, QuotaType.PRODUCE, recorded)
        if exempt:
            return body
        position = throttle.throttle_position(m.api_key, m.version)
        head = body if isinstance(body, bytes) else body[0] if body else None
        located: tuple[bytes, int] | None = None  # the encoded buffer holding throttle_time_ms, and where
        if position is not None and isinstance(head, bytes) and throttle.has_field(head, position):
            located = (head, position)
        in_body = 0 if located is None else throttle.read_throttle(*located)  # a throttled fetch sets its own
        ours = 0 if worst is None else worst[1].throttle_ms
        if worst is not None and ours > in_body:
            quotas.throttled(*worst)
            if located is not None:
                patched = throttle.with_throttle(*located, ours)
                body = patched if isinstance(body, bytes) else [patched, *typing.cast(list[bytes], body)[1:]]
        p.throttle_ms = max(ours, in_body)
        if p.throttle_ms and not throttle.client_throttles(m.api_key, m.version):
            p.hold_until = asyncio.get_running_loop().time() + p.throttle_ms / 1000
            self._mute(p.throttle_ms)
            self._wake_up_at(p.hold_until)
        return body

    def _mute(self, throttle_ms: int) -> None:
        """Stop reading for ``throttle_ms`` (extending a mute in progress, never shortening it)."""
        until = asyncio.get_running_loop().time() + throttle_ms / 1000
        if until > self._muted_until:
            self._muted_until = until
            self._wake_up_at(until)
        self._update_reading()

    def _wake_up_at(self, when: float) -> None:
        """One timer per connection, at the earliest moment something waits for (a mute's end, a held response's
        release); ``_woken`` re-arms it for the next one."""
        if self._closing:
            return
        if self._wake is not None:
            if self._wake_at <= when:
                return
            self._wake.cancel()
        self._wake_at = when
        self._wake = asyncio.get_running_loop().call_at(when, self._woken)

    def _woken(self) -> None:
        self._wake = None
        if self._closing:
            return
        if self._pending and self._pending[0].hold_until:
            self._on_response_ready(None)
        self._update_reading()
        now = asyncio.get_running_loop().time()
        held = self._pending[0].hold_until if self._pending else 0.0
        later = [t for t in (self._muted_until, held) if t > now]
        if later:
            self._wake_up_at(min(later))

    def _abort(self, reason: str) -> None:
        log.warning("closing connection from %s: %s", self.peer, reason)
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _close_after_writes(self, reason: str) -> None:
        log.info("closing connection from %s: %s", self.peer, reason)
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def stop_reading(self) -> None:
        """Graceful shutdown: take no new requests; the ones in flight still get their responses."""
        if self._transport is not None and not self._reading_paused and not self._closing:
            self._transport.pause_reading()
            self._reading_paused = True
        self._inflight_max = 0  # keeps reading paused from now on

    def pending_tasks(self) -> list[asyncio.Future[ResponseBody | None]]:
        return [p.task for p in self._pending if p.task is not None and not p.task.done()]

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


T = typing.TypeVar("T")


def _longer(
    worst: tuple[QuotaType, Recorded] | None, kind: QuotaType, recorded: Recorded | None
) -> tuple[QuotaType, Recorded] | None:
    if recorded is None or recorded.throttle_ms <= (0 if worst is None else worst[1].throttle_ms):
        return worst
    return kind, recorded


@types.coroutine
def _timed(coro: Coroutine[typing.Any, typing.Any, T], m: _Metered) -> Generator[typing.Any, typing.Any, T]:
    """Run ``coro`` as the request's own task would, adding the time of each of its steps on the event loop to
    ``m.loop_ns`` (Kafka's request handler thread time: the waits in between are not the client's cost)."""
    send: typing.Any = None
    error: BaseException | None = None
    while True:
        started = time.perf_counter_ns()
        try:
            yielded = coro.send(send) if error is None else coro.throw(error)
        except StopIteration as done:
            m.loop_ns += time.perf_counter_ns() - started
            return typing.cast(T, done.value)
        m.loop_ns += time.perf_counter_ns() - started
        try:
            send, error = (yield yielded), None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # noqa: BLE001  (a cancellation or any exception thrown in goes to the handler)
            send, error = None, e


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _finished(task: asyncio.Future[ResponseBody | None] | None) -> bool:
    return task is not None and task.done()


def _done(body: bytes) -> asyncio.Future[ResponseBody | None]:
    fut: asyncio.Future[ResponseBody | None] = asyncio.get_running_loop().create_future()
    fut.set_result(body)
    return fut
