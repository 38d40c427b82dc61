"""The broker's side of a SASL login (``security.sasl_client``), run against the server's own sans-IO cores
(``SaslSession`` over ``sasl.ScramServer`` / ``PlainServer``), with no socket: every request the client makes is
answered as a shard's connection would answer it, as a kio response. Also the inter-broker user as a local
credential (``scram_users.with_local_user``) and the client security built from the config."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
from kio.schema.sasl_authenticate.v1.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from kio.static.primitive import i64Timedelta

from rafka_shards.cli import main
from rafka_shards.config import SecurityProtocol, load_config
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity, inter_broker_security
from rafka_shards.security.sasl import SaslError, ScramCredential, ScramMechanism, make_credential
from rafka_shards.security.sasl_client import SaslClientError, SaslClientExchange, SaslClientSettings
from rafka_shards.security.sasl_session import SaslSession, SaslSettings, StepReply
from rafka_shards.security.scram_users import SaslCredentials, local_user, with_local_user
from tests.certs import make_pki

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
PASSWORD = "broker-secret-pw"
CREDENTIALS = {
    ("broker", SHA512): make_credential(SHA512, PASSWORD.encode()),
    ("broker", SHA256): make_credential(SHA256, PASSWORD.encode()),
}
ALL = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


def lookup(username: str, mechanism: ScramMechanism) -> ScramCredential | None:
    return CREDENTIALS.get((username, mechanism))


def server(
    mechanisms: tuple[str, ...] = ALL, reauth_ms: int = 0, credentials: SaslCredentials | None = None
) -> SaslSession:
    creds = credentials or SaslCredentials(lookup, b"m" * 32)
    return SaslSession(SaslSettings(mechanisms, reauth_ms, 0), lambda: creds)


def answer(
    session: SaslSession, request: SaslHandshakeRequest | SaslAuthenticateRequest, now_ms: int = 0
) -> SaslHandshakeResponse | SaslAuthenticateResponse:
    """What a shard's connection answers (``shard/connection.py`` drives the same calls)."""
    if isinstance(request, SaslHandshakeRequest):
        hs = session.handshake(1, request.mechanism)
        return SaslHandshakeResponse(error_code=KioErrorCode(int(hs.error_code)), mechanisms=hs.mechanisms)
    mechanism = session.begin_step(len(request.auth_bytes))
    if isinstance(mechanism, StepReply):
        reply = mechanism
    else:
        try:
            outcome: bytes | SaslError = mechanism.step(request.auth_bytes)
        except SaslError as e:  # step_done turns it into the refusal
            outcome = e
        reply = session.step_done(outcome, now_ms)
    return SaslAuthenticateResponse(
        error_code=KioErrorCode(int(reply.error_code)),
        error_message=reply.error_message,
        auth_bytes=reply.auth_bytes,
        session_lifetime=i64Timedelta.parse(datetime.timedelta(milliseconds=reply.session_lifetime_ms)),
    )


def login(exchange: SaslClientExchange, session: SaslSession) -> int:
    """Run the whole exchange; the number of SaslAuthenticate round trips."""
    response = answer(session, exchange.handshake())
    assert isinstance(response, SaslHandshakeResponse)
    request: SaslAuthenticateRequest | None = exchange.on_handshake(response)
    trips = 0
    while request is not None:
        trips += 1
        reply = answer(session, request)
        assert isinstance(reply, SaslAuthenticateResponse)
        request = exchange.on_authenticate(reply)
    return trips


@pytest.mark.parametrize(("mechanism", "trips"), [("SCRAM-SHA-512", 2), ("SCRAM-SHA-256", 2), ("PLAIN", 1)])
def test_the_client_logs_in_with_every_mechanism(mechanism: str, trips: int) -> None:
    session = server()
    exchange = SaslClientExchange(SaslClientSettings(mechanism, "broker", PASSWORD))
    assert login(exchange, session) == trips
    assert exchange.done
    assert session.principal == "User:broker"


def test_the_session_lifetime_is_handed_to_the_client_and_a_login_again_keeps_the_principal() -> None:
    session = server(reauth_ms=60_000)
    settings = SaslClientSettings("SCRAM-SHA-512", "broker", PASSWORD)
    first = SaslClientExchange(settings)
    login(first, session)
    assert first.session_lifetime_ms == 60_000
    again = SaslClientExchange(settings)  # KIP-368: a handshake v1 on the authenticated connection
    login(again, session)
    assert again.done and session.principal == "User:broker"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
@pytest.mark.parametrize("user", ["broker", "nobody"])
def test_a_wrong_password_or_unknown_user_fails_clearly_without_the_password(mechanism: str, user: str) -> None:
    wrong = "not-the-password-123"
    exchange = SaslClientExchange(SaslClientSettings(mechanism, user, wrong))
    with pytest.raises(SaslClientError) as e:
        login(exchange, server())
    message = str(e.value)
    assert "SASL_AUTHENTICATION_FAILED" in message and mechanism in message and repr(user) in message
    assert wrong not in message and PASSWORD not in message
    with pytest.raises(SaslClientError, match="out of order"):  # a failed exchange is over
        exchange.handshake()


def test_a_mechanism_the_listener_does_not_enable_names_what_it_offers() -> None:
    exchange = SaslClientExchange(SaslClientSettings("PLAIN", "broker", PASSWORD))
    with pytest.raises(SaslClientError, match=r"UNSUPPORTED_SASL_MECHANISM \(the server offers: SCRAM-SHA-512\)"):
        login(exchange, server(("SCRAM-SHA-512",)))


def test_a_server_that_does_not_know_the_credential_is_refused() -> None:
    """SCRAM is mutual: a server answering with another credential's signature (an impostor) fails the login."""
    impostor_credentials = {("broker", SHA512): make_credential(SHA512, b"what-the-impostor-thinks")}
    impostor = server(credentials=SaslCredentials(lambda u, m: impostor_credentials.get((u, m)), b"m" * 32))
    session = server()
    exchange = SaslClientExchange(SaslClientSettings("SCRAM-SHA-512", "broker", PASSWORD))
    hs = answer(session, exchange.handshake())
    assert isinstance(hs, SaslHandshakeResponse)
    first = exchange.on_handshake(hs)
    # The impostor's server-first message (its salt), then a proof the impostor cannot check: it fails there, and
    # a forged server-final message is refused by the client.
    impostor.handshake(1, "SCRAM-SHA-512")
    server_first = answer(impostor, first)
    assert isinstance(server_first, SaslAuthenticateResponse)
    final = exchange.on_authenticate(server_first)
    assert final is not None
    forged = SaslAuthenticateResponse(
        error_code=KioErrorCode.none,
        error_message=None,
        auth_bytes=b"v=" + b"A" * 88,
        session_lifetime=i64Timedelta.parse(datetime.timedelta(0)),
    )
    with pytest.raises(SaslClientError, match="signature does not verify"):
        exchange.on_authenticate(forged)


def test_a_server_message_holding_the_password_is_not_repeated() -> None:
    exchange = SaslClientExchange(SaslClientSettings("PLAIN", "broker", PASSWORD))
    exchange.handshake()
    exchange.on_handshake(SaslHandshakeResponse(error_code=KioErrorCode.none, mechanisms=("PLAIN",)))
    echo = SaslAuthenticateResponse(
        error_code=KioErrorCode.sasl_authentication_failed,
        error_message=f"bad password {PASSWORD}",
        auth_bytes=b"",
        session_lifetime=i64Timedelta.parse(datetime.timedelta(0)),
    )
    with pytest.raises(SaslClientError) as e:
        exchange.on_authenticate(echo)
    assert PASSWORD not in str(e.value) and "withheld" in str(e.value)


def test_steps_out_of_order_are_refused() -> None:
    exchange = SaslClientExchange(SaslClientSettings("SCRAM-SHA-512", "broker", PASSWORD))
    with pytest.raises(SaslClientError, match="out of order"):
        exchange.on_handshake(SaslHandshakeResponse(error_code=KioErrorCode.none, mechanisms=()))


def test_settings_are_checked_and_never_show_the_password() -> None:
    settings = SaslClientSettings("SCRAM-SHA-512", "broker", PASSWORD)
    assert PASSWORD not in repr(settings)
    with pytest.raises(ValueError, match="GSSAPI"):
        SaslClientSettings("GSSAPI", "broker", PASSWORD)
    with pytest.raises(ValueError, match="password"):
        SaslClientSettings("PLAIN", "broker", "")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_the_local_inter_broker_user_logs_in_before_the_metadata_knows_it(mechanism: str) -> None:
    """The shard's lookup puts the configured inter-broker user in front of the image's (empty here) credentials."""
    empty = SaslCredentials(lambda u, m: None, None)
    local = local_user("inter", "inter-pw")
    session = server(credentials=with_local_user(empty, local))
    login(SaslClientExchange(SaslClientSettings(mechanism, "inter", "inter-pw")), session)
    assert session.principal == "User:inter"
    with pytest.raises(SaslClientError):  # other users still come from the image
        login(
            SaslClientExchange(SaslClientSettings(mechanism, "broker", PASSWORD)),
            server(credentials=with_local_user(empty, local)),
        )


def test_the_local_user_shadows_a_metadata_credential_of_the_same_name() -> None:
    local = local_user("broker", "the-configured-one")
    session = server(credentials=with_local_user(SaslCredentials(lookup, b"m" * 32), local))
    with pytest.raises(SaslClientError):
        login(SaslClientExchange(SaslClientSettings("SCRAM-SHA-512", "broker", PASSWORD)), session)
    session = server(credentials=with_local_user(SaslCredentials(lookup, b"m" * 32), local))
    login(SaslClientExchange(SaslClientSettings("SCRAM-SHA-512", "broker", "the-configured-one")), session)


def test_the_inter_broker_security_follows_the_inter_broker_listener(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    assert inter_broker_security(load_config({}, environ={})) == PLAINTEXT
    flags = {
        "listeners": "INTERNAL://127.0.0.1:9092,CLIENT://127.0.0.1:9192",
        "listener_security_protocol_map": "INTERNAL:SASL_SSL,CLIENT:SSL",
        "inter_broker_sasl_username": "inter",
        "inter_broker_sasl_password": "inter-pw",
        "ssl_cert_file": str(pki.server.cert_file),
        "ssl_key_file": str(pki.server.key_file),
        "ssl_ca_file": str(pki.ca.cert_file),
        "shards": "1",
    }
    security = inter_broker_security(load_config(flags, environ={}))
    assert security.protocol is SecurityProtocol.SASL_SSL
    assert security.sasl == SaslClientSettings("SCRAM-SHA-512", "inter", "inter-pw")
    assert security.tls is not None and security.tls.context(0).check_hostname
    assert "inter-pw" not in repr(security)
    mtls = inter_broker_security(
        load_config(
            {**flags, "listener_security_protocol_map": "INTERNAL:SSL,CLIENT:SSL", "ssl_client_auth": "required"},
            environ={},
        )
    )
    assert mtls.sasl is None and mtls.tls is not None
    with pytest.raises(AssertionError):
        ClientSecurity(SecurityProtocol.SSL)  # TLS without a context is a bug, not a setting


def test_the_client_tls_context_is_rebuilt_when_its_files_change(tmp_path: Path) -> None:
    """As the listeners' contexts: a rotated CA (or client certificate) is used by the connections made after the next
    check, a file that does not make a context keeps the previous one, and nothing is read between checks."""
    pki = make_pki(tmp_path)
    ca = tmp_path / "trusted-ca.pem"
    ca.write_bytes(pki.ca.cert_file.read_bytes())
    flags = {
        "listeners": "INTERNAL://127.0.0.1:9092",
        "listener_security_protocol_map": "INTERNAL:SSL",
        "ssl_cert_file": str(pki.server.cert_file),
        "ssl_key_file": str(pki.server.key_file),
        "ssl_ca_file": str(ca),
        "shards": "1",
    }
    tls = inter_broker_security(load_config(flags, environ={}), now_ms=0).tls
    assert tls is not None
    first = tls.context(0)
    ca.write_bytes(pki.other_ca.cert_file.read_bytes() + b"\n")  # another CA (and another size)
    assert tls.context(tls.check_interval_ms - 1) is first  # not looked at before the interval
    second = tls.context(tls.check_interval_ms)
    assert second is not first and tls.reload_error is None
    subjects = [dict(rdn[0] for rdn in c["subject"])["commonName"] for c in second.get_ca_certs()]
    assert subjects == ["some other CA"]
    ca.write_bytes(b"not a certificate")
    assert tls.context(2 * tls.check_interval_ms) is second
    assert tls.reload_error is not None and "ssl_ca_file" in tls.reload_error


def test_a_start_with_an_unusable_inter_broker_tls_file_stops_with_the_setting_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path)
    args = ["serve", "--shards", "1", "--listeners", "SSL://127.0.0.1:9092", "--data-dir", str(tmp_path / "d")]
    args += ["--ssl-cert-file", str(pki.server.cert_file), "--ssl-key-file", str(pki.server.key_file)]
    assert main([*args, "--ssl-ca-file", str(tmp_path / "missing.pem")]) == 2
    assert "ssl_ca_file" in capsys.readouterr().err
