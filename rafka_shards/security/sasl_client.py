"""The client side of Kafka's SASL exchange, sans-IO: the requests to send and what each response means.

Runs wherever this broker logs in to another broker's SASL listener: the replica fetchers (shard process), the
controller's liveness probes and the admin API's requests to shards (controller process). The asyncio shell is
``rafka_shards.ipc.kafka_client``; this module touches no socket and no clock. It speaks KIP-152's framing:
SaslHandshake v1 names the mechanism, then SaslAuthenticate v1 requests carry the tokens (v1 answers with the
session lifetime, KIP-368, so the shell knows when to re-authenticate). The same exchange re-authenticates a live
connection: Kafka's server accepts a SaslHandshake v1 after authentication for the same mechanism and principal.

Mechanisms: PLAIN (one token, ``NUL username NUL password``) and SCRAM-SHA-256/512 (``sasl.ScramClient``: the
client-first message, the client-final message with the proof, then the server's signature checked, so a server that
does not know the credential is refused too).

Every failure is a ``SaslClientError`` whose message is safe to log: it names the mechanism and the user, gives
the server's error code and (bounded) message, and never contains the password.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v1.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse

from rafka_shards.security.sasl import PLAIN, SASL_USERNAME_BYTES_MAX, SaslError, ScramClient, ScramMechanism

SERVER_MESSAGE_CHARS_MAX: Final = 200  # of the server's error_message repeated in a SaslClientError
MECHANISMS: Final = (*(m.value for m in ScramMechanism), PLAIN)


class SaslClientError(Exception):
    """The SASL exchange failed (refused credentials, an unsupported mechanism, a server breaking the protocol).
    The message is safe to log: it never holds the password."""


@dataclass(frozen=True, slots=True)
class SaslClientSettings:
    """Who this broker logs in as: Kafka's ``sasl.mechanism.inter.broker.protocol`` and the login's user and
    password (never shown by ``repr``)."""

    mechanism: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"SASL mechanism {self.mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if not self.username or len(self.username.encode()) > SASL_USERNAME_BYTES_MAX:
            raise ValueError(f"SASL username must be 1 to {SASL_USERNAME_BYTES_MAX} bytes")
        if not self.password:
            raise ValueError("SASL password must not be empty")


class _Stage(enum.Enum):
    HANDSHAKE = "handshake"  # to send the SaslHandshake
    HANDSHAKE_SENT = "handshake sent"
    TOKEN_SENT = "token sent"  # a SaslAuthenticate is in flight
    DONE = "done"
    FAILED = "failed"


class SaslClientExchange:
    """One authentication (or re-authentication) of one connection: ``handshake()`` is the first request, each
    response goes to ``on_handshake`` / ``on_authenticate``, which return the next request or None once the
    server accepted the login (``session_lifetime_ms`` is then what the server granted; 0: no limit)."""

    __slots__ = ("_password", "_scram", "_settings", "_stage", "session_lifetime_ms")

    def __init__(self, settings: SaslClientSettings, nonce_source: Callable[[], bytes] | None = None) -> None:
        self._settings = settings
        self._password = settings.password.encode("utf-8")
        scram = next((m for m in ScramMechanism if m.value == settings.mechanism), None)
        self._scram = None if scram is None else ScramClient(scram, settings.username, self._password, nonce_source)
        self._stage = _Stage.HANDSHAKE
        self.session_lifetime_ms = 0

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    def _fail(self, detail: str) -> SaslClientError:
        self._stage = _Stage.FAILED
        s = self._settings
        return SaslClientError(f"SASL {s.mechanism} login as {s.username!r} failed: {detail}")

    def _expect(self, stage: _Stage) -> None:
        if self._stage is not stage:
            raise self._fail(f"step out of order (at {self._stage.value}, expected {stage.value})")

    def handshake(self) -> SaslHandshakeRequest:
        self._expect(_Stage.HANDSHAKE)
        self._stage = _Stage.HANDSHAKE_SENT
        return SaslHandshakeRequest(mechanism=self._settings.mechanism)

    def on_handshake(self, response: SaslHandshakeResponse) -> SaslAuthenticateRequest:
        self._expect(_Stage.HANDSHAKE_SENT)
        if response.error_code is not ErrorCode.none:
            offered = ", ".join(str(m)[:64] for m in response.mechanisms[:16]) or "none"
            code = response.error_code.name.upper()
            raise self._fail(f"SaslHandshake answered {code} (the server offers: {offered})")
        if self._scram is None:
            token = b"\x00" + self._settings.username.encode("utf-8") + b"\x00" + self._password
        else:
            token = self._scram.first()
        self._stage = _Stage.TOKEN_SENT
        return SaslAuthenticateRequest(auth_bytes=token)

    def on_authenticate(self, response: SaslAuthenticateResponse) -> SaslAuthenticateRequest | None:
        self._expect(_Stage.TOKEN_SENT)
        if response.error_code is not ErrorCode.none:
            code = response.error_code.name.upper()
            raise self._fail(f"SaslAuthenticate answered {code}: {self._server_message(response)}")
        try:
            next_token = self._step(response.auth_bytes)
        except SaslError as e:  # the server broke SCRAM or did not prove it knows the credential
            raise self._fail(e.message) from None
        if next_token is not None:
            return SaslAuthenticateRequest(auth_bytes=next_token)
        self._stage = _Stage.DONE
        self.session_lifetime_ms = max(0, int(response.session_lifetime.total_seconds() * 1000))
        return None

    def _step(self, token: bytes) -> bytes | None:
        """The next token to send, or None: the exchange is complete."""
        scram = self._scram
        if scram is None:
            if token:
                raise SaslError("the server answered PLAIN with a non-empty token")
            return None
        if scram.done:
            raise SaslError("the server sent a token after the exchange ended")
        if scram.awaiting_server_final:
            scram.verify(token)
            return None
        return scram.final(token)

    def _server_message(self, response: SaslAuthenticateResponse) -> str:
        message = (response.error_message or "no message")[:SERVER_MESSAGE_CHARS_MAX]
        if self._settings.password in message:  # a server echoing what it got: never repeat a password
            return "(message withheld: it contains the password)"
        return message
