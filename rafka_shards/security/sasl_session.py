"""The SASL state of one connection of a SASL listener, sans-IO: Kafka's SaslServerAuthenticator (KIP-43, KIP-152)
with re-authentication (KIP-368).

Runs in a shard process; one ``SaslSession`` per connection of a SASL_PLAINTEXT or SASL_SSL listener, driven by the
connection shell (``rafka_shards.shard.connection``), which owns the socket, the clock and the thread PBKDF2 runs
in. The shell asks ``admit`` about each request before it decodes it: served as usual, handled here (SaslHandshake,
SaslAuthenticate), or the connection is closed. Before authentication only ApiVersions (first), SaslHandshake and
SaslAuthenticate are accepted; anything else closes the connection, as Kafka does.

The exchange: ``handshake`` picks the mechanism (v1: tokens come in SaslAuthenticate requests; v0: the client sends
raw length-prefixed tokens without a Kafka header, ``raw``), ``begin_step`` hands the shell the mechanism to run on
a token (``SaslServer.step``, in a thread for PLAIN's PBKDF2), ``step_done`` takes its outcome. Success makes the
principal ``User:<name>``; with ``reauth_ms`` > 0 the session expires that long after and a request on an expired
session closes the connection, unless it is a SaslHandshake, which begins a re-authentication: the same exchange
again, for the same principal and mechanism only (Kafka: "Cannot change principals during re-authentication").
Failures: UNSUPPORTED_SASL_MECHANISM (33) with the enabled list, ILLEGAL_SASL_STATE (34) for requests out of order,
SASL_AUTHENTICATION_FAILED (58) with ``SaslError``'s safe message, answered after the failed-authentication delay;
each closes the connection after its response. Nothing here sees a password in a form it keeps or logs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from rafka_shards.model import ErrorCode
from rafka_shards.security.sasl import SASL_TOKEN_BYTES_MAX, SaslError, SaslServer, server_for
from rafka_shards.security.scram_users import SaslCredentials

API_VERSIONS_KEY = 18
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
SASL_KEYS = frozenset({SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY})


class Admit(enum.Enum):
    SERVE = "serve"  # dispatch to the handler as on any listener
    SASL = "sasl"  # SaslHandshake / SaslAuthenticate: the shell calls handshake / begin_step
    CLOSE = "close"  # close the connection now, no response


class _Exchange(enum.Enum):
    IDLE = "idle"  # no exchange: before the first handshake, or between (re-)authentications
    STARTED = "started"  # a handshake v1 chose the mechanism: SaslAuthenticate requests carry the tokens
    RAW = "raw"  # a handshake v0 chose the mechanism: raw tokens follow, no Kafka framing
    STEPPING = "stepping"  # the shell runs the mechanism on a token
    FAILED = "failed"  # the connection is closing


@dataclass(frozen=True, slots=True)
class Admission:
    action: Admit
    reason: str = ""  # for CLOSE: what the shell logs (never the request's contents)


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    error_code: ErrorCode
    mechanisms: tuple[str, ...]
    close: bool  # close after this response


@dataclass(frozen=True, slots=True)
class StepReply:
    """A SaslAuthenticate response (or, in raw mode, ``auth_bytes`` alone), and what the shell does next."""

    error_code: ErrorCode
    error_message: str | None
    auth_bytes: bytes
    session_lifetime_ms: int
    close: bool  # close after this response
    delay: bool  # a failed authentication: answer after the failed-authentication delay
    authenticated: bool = False  # this reply completes a (re-)authentication: count it
    reason: str = ""  # for a failure: what the shell logs


@dataclass(frozen=True, slots=True)
class SaslSettings:
    """A SASL listener's settings (``BrokerConfig.sasl_mechanisms()`` and the two ``*_ms`` settings)."""

    mechanisms: tuple[str, ...]
    reauth_ms: int  # connections_max_reauth_ms: 0 = sessions never expire
    failed_authentication_delay_ms: int


class SaslSession:
    """The SASL state of one connection. ``credentials`` is called once per exchange: the shard's current image."""

    __slots__ = (
        "_bad_mechanism",
        "_credentials",
        "_exchange",
        "_expiry_ms",
        "_mechanism_authenticated",
        "_nonce_source",
        "_raw_step",
        "_server",
        "_settings",
        "principal",
    )

    def __init__(
        self,
        settings: SaslSettings,
        credentials: Callable[[], SaslCredentials],
        nonce_source: Callable[[], bytes] | None = None,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._nonce_source = nonce_source
        self._exchange = _Exchange.IDLE
        self._server: SaslServer | None = None
        self._expiry_ms: int | None = None
        self._raw_step = False
        self._mechanism_authenticated = ""  # the mechanism of the last authentication: re-authentication keeps it
        self._bad_mechanism: str | None = (
            None  # a re-authentication asked another mechanism: its SaslAuthenticate fails
        )
        self.principal: str | None = None  # "User:<name>" once authenticated

    @property
    def settings(self) -> SaslSettings:
        return self._settings

    @property
    def authenticated(self) -> bool:
        return self.principal is not None

    @property
    def raw(self) -> bool:
        """The next frame is a raw token (after a SaslHandshake v0), not a Kafka request."""
        return self._exchange is _Exchange.RAW

    @property
    def mechanism(self) -> str:
        return "" if self._server is None else self._server.mechanism_name

    @property
    def attempted_user(self) -> str:
        """The user name the client gave in the current exchange ("" before it named one), for the audit log."""
        return "" if self._server is None else self._server.attempted_user

    def expired(self, now_ms: int) -> bool:
        return self._expiry_ms is not None and now_ms >= self._expiry_ms

    def admit(self, api_key: int, now_ms: int) -> Admission:
        """What to do with a request of ``api_key`` (a Kafka request, not a raw token)."""
        if self._exchange is _Exchange.FAILED:
            return Admission(Admit.CLOSE, "request after a failed authentication")
        if api_key in SASL_KEYS:
            return Admission(Admit.SASL)
        if not self.authenticated:
            if api_key == API_VERSIONS_KEY and self._exchange is _Exchange.IDLE:
                return Admission(Admit.SERVE)  # before the handshake (again after an UNSUPPORTED_VERSION, KIP-511)
            return Admission(Admit.CLOSE, f"API key {api_key} before SASL authentication")
        if self.expired(now_ms):
            return Admission(Admit.CLOSE, "SASL session expired (connections_max_reauth_ms)")
        return Admission(Admit.SERVE)

    def handshake(self, version: int, mechanism: str) -> HandshakeReply:
        enabled = self._settings.mechanisms
        if self._exchange is not _Exchange.IDLE or (self.authenticated and version == 0):
            # A second handshake mid-exchange; or a re-authentication without SaslAuthenticate framing (KIP-368
            # needs v1: a raw exchange on a live connection could not be told apart from requests).
            self._exchange = _Exchange.FAILED
            return HandshakeReply(ErrorCode.ILLEGAL_SASL_STATE, enabled, close=True)
        if mechanism not in enabled:
            self._exchange = _Exchange.FAILED
            return HandshakeReply(ErrorCode.UNSUPPORTED_SASL_MECHANISM, enabled, close=True)
        lookup, mock_secret = self._credentials()
        server = server_for(mechanism, lookup, mock_secret=mock_secret, nonce_source=self._nonce_source)
        assert server is not None, f"enabled mechanism {mechanism} has no server"  # config checked the list
        if self.authenticated and mechanism != self._mechanism_authenticated:
            # Kafka answers this handshake and fails the SaslAuthenticate after it (REAUTH_BAD_MECHANISM).
            self._bad_mechanism = (
                f"SASL mechanism '{mechanism}' requested by client is not supported for re-authentication of "
                f"mechanism '{self._mechanism_authenticated}'"
            )
        self._server = server
        self._exchange = _Exchange.RAW if version == 0 else _Exchange.STARTED
        return HandshakeReply(ErrorCode.NONE, enabled, close=False)

    def begin_step(self, token_bytes: int) -> SaslServer | StepReply:
        """The mechanism to run on a token of ``token_bytes`` bytes, or the refusal to send (and close)."""
        if self._exchange not in (_Exchange.STARTED, _Exchange.RAW):
            self._exchange = _Exchange.FAILED
            return StepReply(
                ErrorCode.ILLEGAL_SASL_STATE,
                "SaslAuthenticate is only valid after a SaslHandshake",
                b"",
                0,
                close=True,
                delay=False,
                reason="SaslAuthenticate out of order",
            )
        if token_bytes > SASL_TOKEN_BYTES_MAX or self._bad_mechanism is not None:
            self._exchange = _Exchange.FAILED
            if self._bad_mechanism is not None:
                message = self._bad_mechanism
                return StepReply(
                    ErrorCode.SASL_AUTHENTICATION_FAILED, message, b"", 0, close=True, delay=True, reason=message
                )
            return StepReply(
                ErrorCode.SASL_AUTHENTICATION_FAILED,
                f"SASL token longer than {SASL_TOKEN_BYTES_MAX} bytes",
                b"",
                0,
                close=True,
                delay=True,
                reason=f"SASL token of {token_bytes} bytes",
            )
        assert self._server is not None
        self._raw_step = self._exchange is _Exchange.RAW
        self._exchange = _Exchange.STEPPING
        return self._server

    def step_done(self, outcome: bytes | SaslError, now_ms: int) -> StepReply:
        """The outcome of the ``SaslServer.step`` that ``begin_step`` handed out: its answer, or its error."""
        assert self._exchange is _Exchange.STEPPING and self._server is not None, self._exchange
        server = self._server
        if isinstance(outcome, SaslError):
            self._exchange = _Exchange.FAILED
            return StepReply(
                ErrorCode.SASL_AUTHENTICATION_FAILED,
                outcome.message,
                b"",
                0,
                close=True,
                delay=True,
                authenticated=False,
                reason=f"{server.mechanism_name} authentication failed: {outcome.message}",
            )
        if not server.done:
            self._exchange = _Exchange.RAW if self._raw_step else _Exchange.STARTED
            return StepReply(ErrorCode.NONE, None, outcome, 0, close=False, delay=False)
        assert server.principal is not None
        principal = f"User:{server.principal}"
        if self.principal is not None and principal != self.principal:
            self._exchange = _Exchange.FAILED
            message = f"Cannot change principals during re-authentication from {self.principal}: {principal}"
            return StepReply(
                ErrorCode.SASL_AUTHENTICATION_FAILED, message, b"", 0, close=True, delay=True, reason=message
            )
        self.principal = principal
        self._mechanism_authenticated = server.mechanism_name
        self._server = None
        self._exchange = _Exchange.IDLE
        reauth_ms = self._settings.reauth_ms
        self._expiry_ms = now_ms + reauth_ms if reauth_ms > 0 else None
        return StepReply(ErrorCode.NONE, None, outcome, reauth_ms, close=False, delay=False, authenticated=True)
