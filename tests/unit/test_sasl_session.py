"""The SASL state machine of a connection (Kafka's SaslServerAuthenticator, KIP-43/152/368): the sans-IO
``SaslSession`` with a fake clock, then the ``KafkaConnection`` shell on a fake transport (frames in, frames out,
closes), and the SASL settings of the config."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest

from rafka_shards.config import load_config
from rafka_shards.model import ErrorCode
from rafka_shards.protocol.framing import RequestHeader
from rafka_shards.security.audit import AuditEvent, AuthenticationEvent, AuthFailure
from rafka_shards.security.sasl import (
    SASL_TOKEN_BYTES_MAX,
    SaslError,
    ScramClient,
    ScramCredential,
    ScramMechanism,
    make_credential,
)
from rafka_shards.security.sasl_session import Admit, SaslSession, SaslSettings, StepReply
from rafka_shards.security.scram_users import SaslCredentials
from rafka_shards.shard.connection import ConnectionLimits, KafkaConnection
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext
from rafka_shards.shard.kafka.registry import HANDLERS

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
CREDENTIALS = {
    ("alice", SHA512): make_credential(SHA512, b"alice-pw"),
    ("bob", SHA256): make_credential(SHA256, b"bob-pw"),
    ("carol", SHA512): make_credential(SHA512, b"carol-pw"),
}
SECRET = b"s" * 32
SETTINGS = SaslSettings(("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"), reauth_ms=0, failed_authentication_delay_ms=0)


def lookup(username: str, mechanism: ScramMechanism) -> ScramCredential | None:
    return CREDENTIALS.get((username, mechanism))


def credentials() -> SaslCredentials:
    return SaslCredentials(lookup, SECRET)


def session(settings: SaslSettings = SETTINGS) -> SaslSession:
    return SaslSession(settings, credentials)


def step(s: SaslSession, token: bytes, now_ms: int = 0) -> StepReply:
    server = s.begin_step(len(token))
    if isinstance(server, StepReply):
        return server
    try:
        outcome: bytes | SaslError = server.step(token)
    except SaslError as e:
        outcome = e
    return s.step_done(outcome, now_ms)


def scram(s: SaslSession, user: str, password: bytes, mechanism: ScramMechanism, now_ms: int = 0) -> StepReply:
    assert s.handshake(1, mechanism.value).error_code is ErrorCode.NONE
    cli = ScramClient(mechanism, user, password)
    first = step(s, cli.first(), now_ms)
    if first.close:
        return first
    final = step(s, cli.final(first.auth_bytes), now_ms)
    if not final.close:
        cli.verify(final.auth_bytes)
    return final


# ---- the core --------------------------------------------------------------------------------------------------


def test_before_authentication_only_api_versions_and_sasl_requests_are_admitted() -> None:
    s = session()
    assert s.admit(18, 0).action is Admit.SERVE  # ApiVersions, first (and again after UNSUPPORTED_VERSION)
    assert s.admit(18, 0).action is Admit.SERVE
    assert s.admit(17, 0).action is Admit.SASL
    assert s.admit(36, 0).action is Admit.SASL
    refused = s.admit(3, 0)  # Metadata
    assert refused.action is Admit.CLOSE and "before SASL authentication" in refused.reason


def test_scram_authenticates_and_the_principal_is_the_user() -> None:
    for user, password, mechanism in (("alice", b"alice-pw", SHA512), ("bob", b"bob-pw", SHA256)):
        s = session()
        reply = scram(s, user, password, mechanism)
        assert (reply.error_code, reply.close, reply.authenticated) == (ErrorCode.NONE, False, True)
        assert s.principal == f"User:{user}" and s.admit(3, 0).action is Admit.SERVE


def test_plain_authenticates_against_the_scram_credential() -> None:
    s = session()
    assert s.handshake(1, "PLAIN").error_code is ErrorCode.NONE
    reply = step(s, b"\x00alice\x00alice-pw")
    assert reply.authenticated and reply.auth_bytes == b"" and s.principal == "User:alice"


@pytest.mark.parametrize(("user", "password"), [("alice", b"wrong"), ("mallory", b"whatever")])
def test_bad_credentials_fail_with_sasl_authentication_failed_after_the_delay_and_close(
    user: str, password: bytes
) -> None:
    s = session()
    reply = scram(s, user, password, SHA512)
    assert (reply.error_code, reply.close, reply.delay) == (ErrorCode.SASL_AUTHENTICATION_FAILED, True, True)
    assert reply.error_message == "Authentication failed: invalid username or password"  # same for both: no tell
    assert password.decode() not in (reply.error_message or "") and not s.authenticated
    assert s.admit(18, 0).action is Admit.CLOSE  # nothing more on this connection


def test_an_unknown_or_disabled_mechanism_is_unsupported_with_the_enabled_list() -> None:
    scram_only = SaslSettings(("SCRAM-SHA-256", "SCRAM-SHA-512"), 0, 0)
    for mechanism in ("GSSAPI", "PLAIN"):
        reply = session(scram_only).handshake(1, mechanism)
        assert (reply.error_code, reply.mechanisms, reply.close) == (
            ErrorCode.UNSUPPORTED_SASL_MECHANISM,
            ("SCRAM-SHA-256", "SCRAM-SHA-512"),
            True,
        )


def test_out_of_order_requests_are_illegal_sasl_state() -> None:
    s = session()
    reply = step(s, b"n,,n=alice,r=abc")  # SaslAuthenticate before SaslHandshake
    assert (reply.error_code, reply.close) == (ErrorCode.ILLEGAL_SASL_STATE, True)
    s = session()
    s.handshake(1, "SCRAM-SHA-256")
    again = s.handshake(1, "SCRAM-SHA-256")  # a second handshake mid-exchange
    assert (again.error_code, again.close) == (ErrorCode.ILLEGAL_SASL_STATE, True)
    s = session()
    s.handshake(1, "SCRAM-SHA-256")
    assert s.admit(18, 0).action is Admit.CLOSE  # ApiVersions mid-exchange (Kafka: unexpected request)


def test_an_oversized_token_fails_and_closes() -> None:
    s = session()
    s.handshake(1, "PLAIN")
    reply = s.begin_step(SASL_TOKEN_BYTES_MAX + 1)
    assert isinstance(reply, StepReply) and reply.close and reply.error_code is ErrorCode.SASL_AUTHENTICATION_FAILED


def test_handshake_v0_switches_to_raw_tokens_until_the_exchange_ends() -> None:
    s = session()
    assert s.handshake(0, "SCRAM-SHA-256").error_code is ErrorCode.NONE
    assert s.raw
    cli = ScramClient(SHA256, "bob", b"bob-pw")
    first = step(s, cli.first())
    assert s.raw and not first.close
    final = step(s, cli.final(first.auth_bytes))
    cli.verify(final.auth_bytes)
    assert not s.raw and s.principal == "User:bob"


def test_sessions_expire_and_reauthentication_renews_them_for_the_same_principal() -> None:
    s = session(SaslSettings(SETTINGS.mechanisms, reauth_ms=1000, failed_authentication_delay_ms=0))
    reply = scram(s, "alice", b"alice-pw", SHA512, now_ms=10_000)
    assert reply.session_lifetime_ms == 1000
    assert s.admit(0, 10_999).action is Admit.SERVE
    expired = s.admit(0, 11_000)
    assert expired.action is Admit.CLOSE and "expired" in expired.reason
    assert s.admit(17, 11_500).action is Admit.SASL  # a handshake begins a re-authentication, even when expired
    again = scram(s, "alice", b"alice-pw", SHA512, now_ms=11_500)
    assert again.authenticated and s.admit(0, 12_000).action is Admit.SERVE  # renewed until 12 500
    assert s.admit(0, 12_500).action is Admit.CLOSE
    other = scram(s, "carol", b"carol-pw", SHA512, now_ms=12_600)  # another principal: refused, closed
    assert other.close and "Cannot change principals" in (other.error_message or "")
    assert s.principal == "User:alice"


def test_reauthentication_keeps_the_mechanism() -> None:
    s = session()
    scram(s, "alice", b"alice-pw", SHA512)
    assert s.handshake(1, "PLAIN").error_code is ErrorCode.NONE  # answered, as Kafka does; the token then fails
    reply = step(s, b"\x00alice\x00alice-pw")
    assert reply.close and reply.error_code is ErrorCode.SASL_AUTHENTICATION_FAILED
    assert "not supported for re-authentication of mechanism 'SCRAM-SHA-512'" in (reply.error_message or "")


def test_reauthentication_needs_handshake_v1() -> None:
    s = session()
    scram(s, "alice", b"alice-pw", SHA512)
    assert s.handshake(0, "PLAIN").error_code is ErrorCode.ILLEGAL_SASL_STATE


def test_without_reauth_sessions_never_expire_and_the_lifetime_is_zero() -> None:
    s = session()
    assert scram(s, "bob", b"bob-pw", SHA256).session_lifetime_ms == 0
    assert s.admit(0, 2**62).action is Admit.SERVE


# ---- the shell: KafkaConnection on a fake transport ----------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.out += c

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def frames(self) -> list[bytes]:
        out, data = [], bytes(self.out)
        while data:
            (size,) = struct.unpack(">i", data[:4])
            out.append(data[4 : 4 + size])
            data = data[4 + size :]
        self.out.clear()
        return out


class FakeProbe:
    def __init__(self) -> None:
        self.sasl: list[tuple[str, bool]] = []

    def request(self, api: str, latency_s: float) -> None:
        pass

    def request_error(self, api: str, error: str) -> None:
        pass

    def sasl_authentication(self, mechanism: str, success: bool) -> None:
        self.sasl.append((mechanism, success))


class FakeHost:
    def __init__(self) -> None:
        self.apis: Mapping[int, ApiHandler] = HANDLERS
        self.probe = FakeProbe()
        self.connection_limits = ConnectionLimits(1 << 20, 10, 10)
        self.quotas = None
        self.audited: list[AuditEvent] = []

    def request_context(self, header: RequestHeader, conn: KafkaConnection) -> RequestContext:
        fake: Any = None
        return RequestContext(header, fake, fake, self.apis, fake, conn.host, conn.listener, conn.principal)

    def connection_opened(self, conn: KafkaConnection) -> bool:
        return True

    def connection_closed(self, conn: KafkaConnection) -> None:
        pass

    def fatal(self, exc: BaseException) -> None:
        raise exc

    def audit(self, event: AuditEvent) -> None:
        self.audited.append(event)


def request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, -1)
    return struct.pack(">i", len(header) + len(body)) + header + body


def string(s: bytes) -> bytes:
    return struct.pack(">h", len(s)) + s


def authenticate(token: bytes, correlation_id: int) -> bytes:
    return request(36, 1, correlation_id, struct.pack(">i", len(token)) + token)


def authenticate_reply(frame: bytes) -> tuple[int, ErrorCode, str | None, bytes, int]:
    correlation_id, code, msg_len = struct.unpack(">ihh", frame[:8])
    rest = frame[8:]
    message = None if msg_len < 0 else rest[:msg_len].decode()
    rest = rest[max(msg_len, 0) :]
    (token_len,) = struct.unpack(">i", rest[:4])
    token, rest = rest[4 : 4 + token_len], rest[4 + token_len :]
    (lifetime,) = struct.unpack(">q", rest)
    return correlation_id, ErrorCode(code), message, token, lifetime


def run(
    scenario: Callable[[KafkaConnection, FakeTransport, FakeHost], Any], settings: SaslSettings = SETTINGS
) -> FakeHost:
    host = FakeHost()

    async def main() -> None:
        conn = KafkaConnection(cast(Any, host), "SASL", None, SaslSession(settings, credentials))
        transport = FakeTransport()
        conn.connection_made(cast(Any, transport))
        await scenario(conn, transport, host)

    asyncio.run(main())
    return host


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)  # the handler tasks, and PLAIN's PBKDF2 thread


def test_shell_serves_api_versions_then_scram_then_requests_as_the_user() -> None:
    async def scenario(conn: KafkaConnection, t: FakeTransport, host: FakeHost) -> None:
        conn.data_received(request(18, 0, 1, b""))
        await settle()
        (versions,) = t.frames()
        assert struct.unpack(">ih", versions[:6]) == (1, 0)
        conn.data_received(request(17, 1, 2, string(b"SCRAM-SHA-512")))
        await settle()
        (hs,) = t.frames()
        assert struct.unpack(">ih", hs[:6]) == (2, 0)
        cli = ScramClient(SHA512, "alice", b"alice-pw")
        conn.data_received(authenticate(cli.first(), 3))
        await settle()
        (first,) = t.frames()
        _, code, _, server_first, _ = authenticate_reply(first)
        conn.data_received(authenticate(cli.final(server_first), 4))
        await settle()
        (final,) = t.frames()
        cid, code, _, server_final, _ = authenticate_reply(final)
        cli.verify(server_final)
        assert (cid, code, conn.principal, t.closed) == (4, ErrorCode.NONE, "User:alice", False)
        assert host.probe.sasl == [("SCRAM-SHA-512", True)]
        peer = conn.peer
        success = AuthenticationEvent("alice", "SCRAM-SHA-512", "SASL", peer, True, None, "User:alice")
        assert host.audited == [success]

    run(scenario)


def test_shell_closes_on_a_request_before_authentication_without_answering() -> None:
    async def scenario(conn: KafkaConnection, t: FakeTransport, host: FakeHost) -> None:
        conn.data_received(request(3, 1, 1, struct.pack(">i", -1)))
        await settle()
        assert t.closed and t.frames() == []

    run(scenario)


def test_shell_answers_a_failed_plain_after_the_delay_then_closes() -> None:
    async def scenario(conn: KafkaConnection, t: FakeTransport, host: FakeHost) -> None:
        conn.data_received(request(17, 1, 1, string(b"PLAIN")))
        await settle()
        t.frames()
        conn.data_received(authenticate(b"\x00alice\x00nope", 2))
        await asyncio.sleep(0.02)
        assert t.frames() == [] and not t.closed  # still waiting out the failed-authentication delay
        await asyncio.sleep(0.3)
        (reply,) = t.frames()
        assert authenticate_reply(reply)[1] is ErrorCode.SASL_AUTHENTICATION_FAILED
        assert t.closed and host.probe.sasl == [("PLAIN", False)]
        failure = AuthenticationEvent("alice", "PLAIN", "SASL", conn.peer, False, AuthFailure.BAD_CREDENTIALS)
        assert host.audited == [failure]  # the attempted user, never the password

    run(scenario, SaslSettings(SETTINGS.mechanisms, 0, 200))


def test_shell_speaks_raw_tokens_after_handshake_v0() -> None:
    async def scenario(conn: KafkaConnection, t: FakeTransport, host: FakeHost) -> None:
        conn.data_received(request(17, 0, 1, string(b"PLAIN")))
        await settle()
        assert struct.unpack(">ih", t.frames()[0][:6]) == (1, 0)
        token = b"\x00bob\x00bob-pw"
        conn.data_received(struct.pack(">i", len(token)) + token)
        await settle()
        assert t.frames() == [b""]  # PLAIN's empty answer, length-prefixed, no header
        assert conn.principal == "User:bob" and not t.closed

    run(scenario)


def test_shell_refuses_an_unsupported_mechanism_with_the_list_and_closes() -> None:
    async def scenario(conn: KafkaConnection, t: FakeTransport, host: FakeHost) -> None:
        conn.data_received(request(17, 1, 1, string(b"GSSAPI")))
        await settle()
        (reply,) = t.frames()
        assert struct.unpack(">ih", reply[:6]) == (1, int(ErrorCode.UNSUPPORTED_SASL_MECHANISM))
        assert b"SCRAM-SHA-256" in reply and t.closed
        refused = AuthenticationEvent("", "GSSAPI", "SASL", conn.peer, False, AuthFailure.UNSUPPORTED_MECHANISM)
        assert host.audited == [refused]

    run(scenario)


def test_apiversions_advertises_the_sasl_apis_and_other_listeners_refuse_them() -> None:
    assert (HANDLERS[17].min_version, HANDLERS[17].max_version) == (0, 1)
    assert (HANDLERS[36].min_version, HANDLERS[36].max_version) == (0, 2)
    host = FakeHost()

    async def main() -> None:
        conn = KafkaConnection(cast(Any, host), "PLAINTEXT")  # no SASL on this listener
        t = FakeTransport()
        conn.connection_made(cast(Any, t))
        conn.data_received(request(17, 1, 1, string(b"PLAIN")))
        conn.data_received(authenticate(b"\x00bob\x00bob-pw", 2))
        await settle()
        handshake, auth = t.frames()
        assert struct.unpack(">ihi", handshake) == (1, int(ErrorCode.ILLEGAL_SASL_STATE), 0)  # no mechanisms
        assert authenticate_reply(auth)[1] is ErrorCode.ILLEGAL_SASL_STATE
        assert conn.principal == "User:ANONYMOUS"

    asyncio.run(main())


# ---- config ----------------------------------------------------------------------------------------------------


def test_sasl_listeners_and_settings_load() -> None:
    config = load_config(
        {
            "listeners": "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9192,SASL_SSL://127.0.0.1:9292",
            "shards": "1",
            "sasl_enabled_mechanisms": "plain, SCRAM-SHA-512",
            "connections_max_reauth_ms": "60000",
        },
        environ={},
    )
    assert [s.protocol.sasl for s in config.listener_specs()] == [False, True, True]
    assert config.sasl_mechanisms() == ("PLAIN", "SCRAM-SHA-512")
    assert (config.connections_max_reauth_ms, config.connection_failed_authentication_delay_ms) == (60000, 100)
    assert load_config({}, environ={}).sasl_mechanisms() == ("SCRAM-SHA-256", "SCRAM-SHA-512")
