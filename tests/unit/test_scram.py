"""The SASL mechanisms (rafka_shards.security.sasl) driven token by token, no I/O.

Each test names the rule it checks: RFC 5802 (SCRAM), RFC 7677 (SCRAM-SHA-256 and its test vector), RFC 4616
(PLAIN), and Kafka's own rules (iteration bounds of AlterUserScramCredentials, KIP-554; the tokenauth extension,
KIP-48). Interoperability is checked against kafka-python's SCRAM and PLAIN clients when it is installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rafka_shards.security import sasl
from rafka_shards.security.sasl import (
    PLAIN,
    SASL_MECHANISMS,
    SASL_TOKEN_BYTES_MAX,
    SASL_USERNAME_BYTES_MAX,
    PlainServer,
    SaslAuthenticationFailed,
    SaslError,
    SaslProtocolError,
    ScramClient,
    ScramCredential,
    ScramMechanism,
    ScramServer,
    credential_from_salted_password,
    make_credential,
    salt_password,
    server_for,
)

SHA256 = ScramMechanism.SCRAM_SHA_256
SHA512 = ScramMechanism.SCRAM_SHA_512
PASSWORD = b"correct horse battery staple"
SECRET = b"cluster-wide mock secret, 32 b.."

# RFC 7677 section 3, the SCRAM-SHA-256 example exchange.
RFC_USER = "user"
RFC_PASSWORD = b"pencil"
RFC_CLIENT_NONCE = b"rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


class Users:
    """A stand-in for the metadata image: credentials by (username, mechanism), and the lookups it answered."""

    def __init__(self) -> None:
        self.credentials: dict[tuple[str, ScramMechanism], ScramCredential] = {}
        self.lookups: list[tuple[str, ScramMechanism]] = []

    def add(self, username: str, password: bytes, *mechanisms: ScramMechanism) -> None:
        for mechanism in mechanisms or (SHA256, SHA512):
            self.credentials[username, mechanism] = make_credential(mechanism, password)

    def __call__(self, username: str, mechanism: ScramMechanism) -> ScramCredential | None:
        self.lookups.append((username, mechanism))
        return self.credentials.get((username, mechanism))


@pytest.fixture
def users() -> Users:
    u = Users()
    u.add("alice", PASSWORD)
    return u


def fixed(nonce: bytes) -> Callable[[], bytes]:
    return lambda: nonce


def server(users: Users, mechanism: ScramMechanism = SHA256, **kwargs: Any) -> ScramServer:
    return ScramServer(mechanism, users, fixed(b"servernonce"), mock_secret=SECRET, **kwargs)


def client(mechanism: ScramMechanism = SHA256, username: str = "alice", password: bytes = PASSWORD) -> ScramClient:
    return ScramClient(mechanism, username, password, fixed(b"clientnonce"))


def first_two(srv: ScramServer, cli: ScramClient) -> bytes:
    """Runs the exchange up to the client-final-message, which it returns unsent."""
    return cli.final(srv.step(cli.first()))


def failure(fn: Callable[[], object]) -> SaslError:
    with pytest.raises(SaslError) as info:
        fn()
    return info.value


# ---- credentials ---------------------------------------------------------------------------------------------------


def test_mechanisms_carry_kafka_numbers_hashes_and_iteration_bounds() -> None:
    assert [(m.value, m.hash_name, m.digest_size, m.kafka_type) for m in ScramMechanism] == [
        ("SCRAM-SHA-256", "sha256", 32, 1),
        ("SCRAM-SHA-512", "sha512", 64, 2),
    ]
    assert all((m.min_iterations, m.max_iterations) == (4096, 16384) for m in ScramMechanism)
    assert ScramMechanism.from_kafka_type(2) is SHA512
    assert ScramMechanism.from_kafka_type(0) is None  # Kafka's UNKNOWN
    assert SASL_MECHANISMS == ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def test_rfc7677_credential_matches_the_example_keys() -> None:
    """RFC 5802 section 3: StoredKey := H(HMAC(SaltedPassword, "Client Key")), ServerKey := HMAC(..., "Server Key").
    The RFC 7677 exchange verifies only with the right keys, so deriving them here and replaying it checks them."""
    credential = make_credential(SHA256, RFC_PASSWORD, RFC_SALT, 4096)
    srv = ScramServer(SHA256, lambda _u, _m: credential, fixed(RFC_SERVER_NONCE))
    assert srv.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert srv.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_credential_from_salted_password_equals_make_credential() -> None:
    """Kafka's AlterUserScramCredentials carries salt, iterations and the salted password, not the password."""
    salt = b"0123456789abcdef"
    for mechanism in ScramMechanism:
        salted = salt_password(mechanism, PASSWORD, salt, 8192)
        assert credential_from_salted_password(mechanism, salt, 8192, salted) == make_credential(
            mechanism, PASSWORD, salt, 8192
        )
    with pytest.raises(ValueError, match="salted password"):
        credential_from_salted_password(SHA512, salt, 4096, b"\x00" * 32)


def test_make_credential_uses_a_fresh_salt_and_keeps_no_password() -> None:
    a, b = make_credential(SHA256, PASSWORD), make_credential(SHA256, PASSWORD)
    assert a.salt != b.salt and a.stored_key != b.stored_key
    assert len(a.salt) == 32 and a.iterations == 4096
    assert PASSWORD not in repr(a).encode() and repr(a.stored_key) not in repr(a)  # keys stay out of logs
    assert not hasattr(a, "__dict__")  # slotted: nothing else can be hung on it


@pytest.mark.parametrize("iterations", [0, 1, 4095, 16385, 1_000_000])
def test_iterations_outside_kafkas_bounds_are_refused(iterations: int) -> None:
    """Kafka: at least ScramMechanism.minIterations (4096), at most 16384 in AlterUserScramCredentials."""
    with pytest.raises(ValueError, match="iterations must be between 4096 and 16384"):
        make_credential(SHA256, PASSWORD, b"salt", iterations)
    with pytest.raises(ValueError, match="iterations"):
        credential_from_salted_password(SHA512, b"salt", iterations, b"\x00" * 64)


def test_credential_fields_are_validated() -> None:
    good = make_credential(SHA256, PASSWORD)
    with pytest.raises(ValueError, match="salt"):
        ScramCredential(SHA256, b"", 4096, good.stored_key, good.server_key)
    with pytest.raises(ValueError, match="salt"):
        ScramCredential(SHA256, b"s" * 257, 4096, good.stored_key, good.server_key)
    with pytest.raises(ValueError, match="keys must be 64 bytes"):
        ScramCredential(SHA512, good.salt, 4096, good.stored_key, good.server_key)


# ---- SCRAM exchanges that succeed ----------------------------------------------------------------------------------


def test_rfc7677_exchange_with_the_module_client() -> None:
    """RFC 7677 section 3, both sides: the client's messages and the server's are the RFC's, byte for byte."""
    credential = make_credential(SHA256, RFC_PASSWORD, RFC_SALT, 4096)
    srv = ScramServer(SHA256, lambda _u, _m: credential, fixed(RFC_SERVER_NONCE))
    cli = ScramClient(SHA256, RFC_USER, RFC_PASSWORD, fixed(RFC_CLIENT_NONCE))
    assert cli.first() == RFC_CLIENT_FIRST
    assert srv.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert cli.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not srv.done and srv.principal is None
    assert srv.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    cli.verify(RFC_SERVER_FINAL)
    assert srv.done and cli.done and srv.principal == "user"


@pytest.mark.parametrize("mechanism", list(ScramMechanism))
def test_round_trip_each_mechanism_with_the_default_nonces(users: Users, mechanism: ScramMechanism) -> None:
    srv = ScramServer(mechanism, users, mock_secret=SECRET)
    cli = ScramClient(mechanism, "alice", PASSWORD)
    server_first = srv.step(cli.first())
    assert server_first.startswith(b"r=") and len(server_first.split(b",")[0]) > 2 + 32  # client + server nonce
    cli.verify(srv.step(cli.final(server_first)))
    assert srv.done and srv.principal == "alice"
    assert users.lookups == [("alice", mechanism)]
    assert srv.mechanism_name == mechanism.value


def test_usernames_with_comma_and_equals_are_saslname_encoded(users: Users) -> None:
    """RFC 5802 section 5.1: ',' and '=' in a username travel as =2C and =3D."""
    users.add("a,b=c", PASSWORD, SHA256)
    cli = client(username="a,b=c")
    first = cli.first()
    assert first == b"n,,n=a=2Cb=3Dc,r=clientnonce"
    srv = server(users)
    cli.verify(srv.step(cli.final(srv.step(first))))
    assert srv.principal == "a,b=c"


def test_non_ascii_username(users: Users) -> None:
    users.add("zoë", PASSWORD, SHA512)
    srv, cli = server(users, SHA512), client(SHA512, "zoë")
    cli.verify(srv.step(first_two(srv, cli)))
    assert srv.principal == "zoë"


def test_authzid_equal_to_the_username_is_accepted(users: Users) -> None:
    """RFC 5802 gs2-header "n,a=<authzid>,": the channel binding check then covers the whole header."""
    srv = server(users)
    cli = ScramClient(SHA256, "alice", PASSWORD, fixed(b"clientnonce"), authzid="alice")
    first = cli.first()
    assert first.startswith(b"n,a=alice,n=alice,")
    final = cli.final(srv.step(first))
    assert final.startswith(b"c=" + base64.b64encode(b"n,a=alice,"))
    cli.verify(srv.step(final))
    assert srv.principal == "alice"


def hand_made_exchange(users: Users, gs2: bytes, bare: bytes) -> bytes:
    """An exchange for alice with gs2 header ``gs2`` and client-first-message-bare ``bare``, the client's side
    computed here from RFC 5802 section 3 (not with ScramClient); returns the server-final-message."""
    srv = server(users)
    server_first = srv.step(gs2 + bare)
    fields = dict(f.split(b"=", 1) for f in server_first.split(b","))
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD, base64.b64decode(fields[b"s"]), int(fields[b"i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without_proof = b"c=" + base64.b64encode(gs2) + b",r=" + fields[b"r"]
    auth_message = bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
    proof = bytes(x ^ y for x, y in zip(client_key, signature, strict=True))
    reply = srv.step(without_proof + b",p=" + base64.b64encode(proof))
    assert srv.done and srv.principal == "alice"
    return reply


def test_y_flag_is_accepted_and_bound_into_the_channel_binding(users: Users) -> None:
    """RFC 5802 section 6: "y" means the client could bind but thinks the server cannot, which is true here (no
    -PLUS mechanisms). The c= attribute must then be base64("y,,"), so a downgrade of "y" to "n" is detected."""
    assert hand_made_exchange(users, b"y,,", b"n=alice,r=clientnonce").startswith(b"v=")
    srv, cli = server(users), client()
    final = cli.final(srv.step(b"y,," + cli.first()[3:]))  # c=biws: base64("n,,")
    err = failure(lambda: srv.step(final))
    assert isinstance(err, SaslProtocolError) and err.scram_error == "channel-bindings-dont-match"


def test_unknown_extensions_are_ignored_but_tokenauth_is_refused(users: Users) -> None:
    """RFC 5802: unknown extensions are ignored. Kafka's tokenauth=true (KIP-48) asks for delegation tokens."""
    reply = hand_made_exchange(users, b"n,,", b"n=alice,r=clientnonce,foo=bar")
    assert reply.startswith(b"v=")
    err = failure(lambda: server(users).step(b"n,,n=alice,r=clientnonce,tokenauth=true"))
    assert isinstance(err, SaslAuthenticationFailed) and "delegation token" in err.message


# ---- SCRAM failures ------------------------------------------------------------------------------------------------


def test_wrong_password_fails_at_the_proof_with_invalid_proof(users: Users) -> None:
    srv, cli = server(users), client(password=b"wrong password")
    final = first_two(srv, cli)
    err = failure(lambda: srv.step(final))
    assert isinstance(err, SaslAuthenticationFailed)
    assert err.scram_error == "invalid-proof" and err.response_token == b"e=invalid-proof"
    assert not srv.done and srv.principal is None


def test_unknown_user_looks_like_a_known_one_until_the_proof(users: Users) -> None:
    """An unknown user gets a well-formed server-first-message with the same salt length and default iterations
    as a real one. It is the same on every try and on every server with the same secret, so the answer does not
    change from one try to the next. The exchange then fails with the same error as a wrong password."""
    known = server(users).step(b"n,,n=alice,r=clientnonce")
    unknown = server(users).step(b"n,,n=mallory,r=clientnonce")
    k, u = (dict(f.split(b"=", 1) for f in m.split(b",")) for m in (known, unknown))
    assert k.keys() == u.keys() == {b"r", b"s", b"i"}
    assert len(base64.b64decode(u[b"s"])) == len(base64.b64decode(k[b"s"])) and u[b"i"] == k[b"i"] == b"4096"
    assert server(users).step(b"n,,n=mallory,r=clientnonce") == unknown  # stable across tries
    other = ScramServer(SHA256, users, fixed(b"servernonce"), mock_secret=b"another secret, 16+ bytes")
    assert other.step(b"n,,n=mallory,r=clientnonce") != unknown  # keyed by the secret: not computable outside
    assert server(users).step(b"n,,n=mallory2,r=clientnonce") != unknown  # and per user

    srv = server(users)
    final = first_two(srv, client(password=b"not the password"))
    wrong_password = failure(lambda: srv.step(final))
    srv = server(users)
    final = first_two(srv, client(username="mallory"))
    no_user = failure(lambda: srv.step(final))
    assert type(no_user) is type(wrong_password) is SaslAuthenticationFailed
    assert no_user.message == wrong_password.message and no_user.scram_error == wrong_password.scram_error


def test_unknown_user_fails_even_if_a_proof_matched_the_made_up_keys(
    users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No password is known to match the made-up credential, but the servers do not rely on that: an unknown
    user fails even when the proof verifies (here the made-up credential is swapped for one made from PASSWORD)."""

    def guessable(mechanism: ScramMechanism, username: str, secret: bytes) -> ScramCredential:
        return make_credential(mechanism, PASSWORD, b"guessable salt")

    monkeypatch.setattr(sasl, "_mock_credential", guessable)
    srv = server(users)
    final = first_two(srv, client(username="mallory"))
    assert isinstance(failure(lambda: srv.step(final)), SaslAuthenticationFailed)
    assert isinstance(failure(lambda: plain(users).step(b"\x00mallory\x00" + PASSWORD)), SaslAuthenticationFailed)


def test_out_of_order_steps_are_protocol_errors(users: Users) -> None:
    # a client-final-message first: no gs2 header
    err = failure(lambda: server(users).step(b"c=biws,r=abc,p=AAAA"))
    assert isinstance(err, SaslProtocolError)
    # the client-first-message twice: the second is not a client-final-message
    srv = server(users)
    srv.step(b"n,,n=alice,r=clientnonce")
    assert isinstance(failure(lambda: srv.step(b"n,,n=alice,r=clientnonce")), SaslProtocolError)
    # a token after success
    srv, cli = server(users), client()
    srv.step(first_two(srv, cli))
    err = failure(lambda: srv.step(b"n,,n=alice,r=clientnonce"))
    assert isinstance(err, SaslProtocolError) and "already complete" in err.message
    # a token after failure: the exchange is over, even with a correct message
    srv = server(users)
    failure(lambda: srv.step(b"garbage"))
    err = failure(lambda: srv.step(b"n,,n=alice,r=clientnonce"))
    assert isinstance(err, SaslProtocolError) and "already failed" in err.message


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (b"", "GS2 header"),
        (b"n=alice,r=x", "GS2 header"),
        (b"x,,n=alice,r=x", "GS2 header"),
        (b"n,n=alice,r=x", "GS2 header"),
        (b"n,b=alice,n=alice,r=x", "authorization id must be a="),
        (b"p=tls-unique,,n=alice,r=x", "channel binding is not supported"),
        (b"n,,m=ext,n=alice,r=x", "mandatory extensions"),
        (b"n,,n=alice", "expected n=<username>,r=<nonce>"),
        (b"n,,r=x,n=alice", "expected n=<username>,r=<nonce>"),
        (b"n,,n=,r=x", "empty username"),
        (b"n,,n=alice,r=", "nonce"),
        (b"n,,n=alice,r=a b", "nonce"),
        (b"n,,n=al=ce,r=x", "malformed username"),
        (b"n,,n=al=2c,r=x", "malformed username"),  # the escapes are upper case
        (b"n,a=,n=alice,r=x", "empty authorization id"),
        (b"n,,n=alice,r=x,1=2", "malformed attribute"),
        (b"n,,n=alice,r=x,noequals", "malformed attribute"),
        (b"n,,n=\xffalice,r=x", "not valid UTF-8"),
        (b"n,,n=al\x00ice,r=x", "NUL"),
    ],
)
def test_malformed_client_first_messages(users: Users, token: bytes, why: str) -> None:
    err = failure(lambda: server(users).step(token))
    assert isinstance(err, SaslProtocolError) and why in err.message
    assert err.scram_error is None  # SCRAM has no error answer before the server-final-message


@pytest.mark.parametrize(
    ("mutate", "why", "scram_error"),
    [
        (lambda f: f.replace(b"c=biws", b"c=bi*s"), "channel binding is not valid base64", "invalid-encoding"),
        (lambda f: f.replace(b"c=biws", b"c=eSws"), "channel binding does not match", "channel-bindings-dont-match"),
        (lambda f: f.replace(b"c=biws", b"c=bixhPWFsaWNlLA=="), "does not match", "channel-bindings-dont-match"),
        (lambda f: f.replace(b"servernonce", b"servernoncf"), "nonce does not match", "other-error"),
        (lambda f: f.replace(b"r=clientnonceservernonce", b"r=clientnonce"), "nonce does not match", "other-error"),
        (lambda f: f.split(b",p=")[0] + b",p=%%%%", "client proof is not valid base64", "invalid-encoding"),
        (lambda f: f.split(b",p=")[0] + b",p=AAAA", "wrong length", "invalid-encoding"),
        (lambda f: f.split(b",p=")[0], "expected c=...,r=...,p=...", "invalid-encoding"),
        (lambda f: f.replace(b"c=biws,", b""), "expected c=...,r=...,p=...", "invalid-encoding"),
        (lambda f: b"r=x," + f, "expected c=...,r=...,p=...", "invalid-encoding"),
        (lambda f: f.replace(b",p=", b",!=x,p="), "malformed attribute", "invalid-encoding"),
        (lambda f: f + b"\xff", "not valid UTF-8", "invalid-encoding"),
    ],
)
def test_malformed_client_final_messages(
    users: Users, mutate: Callable[[bytes], bytes], why: str, scram_error: str
) -> None:
    srv = server(users)
    final = first_two(srv, client())
    err = failure(lambda: srv.step(mutate(final)))
    assert isinstance(err, SaslProtocolError) and why in err.message
    assert err.scram_error == scram_error and err.response_token == b"e=" + scram_error.encode()
    assert not srv.done and srv._credential is None  # forgotten once the exchange failed


def test_authzid_other_than_the_username_is_refused(users: Users) -> None:
    users.add("bob", b"bob's password")
    err = failure(lambda: server(users).step(b"n,a=bob,n=alice,r=clientnonce"))
    assert isinstance(err, SaslAuthenticationFailed) and "authorization id" in err.message


def test_oversized_tokens_and_usernames_are_refused(users: Users) -> None:
    err = failure(lambda: server(users).step(b"n,,n=alice,r=" + b"x" * SASL_TOKEN_BYTES_MAX))
    assert isinstance(err, SaslProtocolError) and str(SASL_TOKEN_BYTES_MAX) in err.message
    srv = server(users)
    final = first_two(srv, client())
    err = failure(lambda: srv.step(final + b"A" * SASL_TOKEN_BYTES_MAX))
    assert isinstance(err, SaslProtocolError) and "exceeds the limit" in err.message

    longest = "u" * SASL_USERNAME_BYTES_MAX
    server(users).step(f"n,,n={longest},r=x".encode())  # at the bound: fine (an unknown user)
    err = failure(lambda: server(users).step(f"n,,n={longest}u,r=x".encode()))
    assert isinstance(err, SaslProtocolError) and "longer than 255 bytes" in err.message
    # the bound is on the decoded name: 85 escaped commas are 255 bytes on the wire but 85 in the name
    server(users).step(b"n,,n=" + b"=2C" * 85 + b",r=x")


def test_lookup_of_the_wrong_mechanism_is_a_bug_not_a_client_error() -> None:
    wrong = make_credential(SHA512, PASSWORD)
    with pytest.raises(ValueError, match="SCRAM-SHA-512 credential for SCRAM-SHA-256"):
        ScramServer(SHA256, lambda _u, _m: wrong, mock_secret=SECRET).step(b"n,,n=alice,r=x")


def test_short_mock_secret_and_bad_nonce_source_are_refused(users: Users) -> None:
    with pytest.raises(ValueError, match="mock_secret"):
        ScramServer(SHA256, users, mock_secret=b"short")
    with pytest.raises(ValueError, match="mock_secret"):
        PlainServer(users, mock_secret=b"short")
    with pytest.raises(ValueError, match="nonce source"):
        ScramServer(SHA256, users, fixed(b"has,comma"), mock_secret=SECRET).step(b"n,,n=alice,r=x")


# ---- the client's own checks ---------------------------------------------------------------------------------------


def test_client_refuses_what_a_hostile_server_sends() -> None:
    def server_first(text: bytes) -> SaslError:
        cli = client()
        cli.first()
        return failure(lambda: cli.final(text))

    assert "does not extend" in server_first(b"r=othernonce,s=c2FsdA==,i=4096").message
    assert "does not extend" in server_first(b"r=clientnonce,s=c2FsdA==,i=4096").message  # nothing added
    assert "iteration count 1000000" in server_first(b"r=clientnonceX,s=c2FsdA==,i=1000000").message
    assert "iteration count 1" in server_first(b"r=clientnonceX,s=c2FsdA==,i=1").message
    assert "malformed iteration" in server_first(b"r=clientnonceX,s=c2FsdA==,i=-5").message
    assert "salt is not valid base64" in server_first(b"r=clientnonceX,s=***,i=4096").message
    assert "expected r=...,s=...,i=..." in server_first(b"r=clientnonceX,i=4096").message
    assert "mandatory" in server_first(b"m=x,r=clientnonceX,s=c2FsdA==,i=4096").message


def test_client_checks_the_server_signature_and_reports_server_errors(users: Users) -> None:
    srv, cli = server(users), client()
    first_two(srv, cli)
    err = failure(lambda: cli.verify(b"v=" + base64.b64encode(b"\x00" * 32)))
    assert isinstance(err, SaslAuthenticationFailed) and "signature" in err.message

    cli = client()
    cli.final(server(users).step(cli.first()))
    err = failure(lambda: cli.verify(b"e=invalid-proof"))
    assert isinstance(err, SaslAuthenticationFailed) and err.scram_error == "invalid-proof"


def test_client_steps_out_of_order() -> None:
    cli = client()
    assert isinstance(failure(lambda: cli.final(b"r=clientnonceX,s=c2FsdA==,i=4096")), SaslProtocolError)
    cli = client()
    cli.first()
    assert isinstance(failure(cli.first), SaslProtocolError)
    assert isinstance(failure(lambda: cli.verify(b"v=AAAA")), SaslProtocolError)


# ---- PLAIN ---------------------------------------------------------------------------------------------------------


def plain(users: Users) -> PlainServer:
    return PlainServer(users, mock_secret=SECRET)


@pytest.mark.parametrize(
    ("mechanisms", "checked"),
    [((SHA256,), SHA256), ((SHA512,), SHA512), ((SHA256, SHA512), SHA512)],
)
def test_plain_verifies_against_the_scram_credential(
    mechanisms: tuple[ScramMechanism, ...], checked: ScramMechanism
) -> None:
    """Redpanda's PLAIN: the password is salted with the stored salt and iterations, the stored key compared;
    SCRAM-SHA-512 first, then SCRAM-SHA-256."""
    users = Users()
    users.add("carol", PASSWORD, *mechanisms)
    srv = plain(users)
    assert srv.mechanism_name == PLAIN and not srv.done
    assert srv.step(b"\x00carol\x00" + PASSWORD) == b""
    assert srv.done and srv.principal == "carol"
    assert users.lookups[-1] == ("carol", checked)


def test_plain_with_an_authzid_equal_to_the_username(users: Users) -> None:
    srv = plain(users)
    srv.step(b"alice\x00alice\x00" + PASSWORD)
    assert srv.principal == "alice"


def test_plain_wrong_password_and_unknown_user_fail_alike(users: Users) -> None:
    wrong = failure(lambda: plain(users).step(b"\x00alice\x00wrong"))
    users.lookups.clear()
    unknown = failure(lambda: plain(users).step(b"\x00mallory\x00" + PASSWORD))
    assert type(wrong) is type(unknown) is SaslAuthenticationFailed
    assert wrong.message == unknown.message and wrong.scram_error is unknown.scram_error is None
    assert users.lookups == [("mallory", SHA512), ("mallory", SHA256)]


def test_plain_authzid_mismatch_is_refused(users: Users) -> None:
    err = failure(lambda: plain(users).step(b"admin\x00alice\x00" + PASSWORD))
    assert isinstance(err, SaslAuthenticationFailed) and "authorization id" in err.message


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (b"alice" + PASSWORD, "expected authzid NUL username NUL password"),
        (b"\x00alice" + PASSWORD, "expected authzid NUL username NUL password"),
        (b"\x00alice\x00pass\x00word", "expected authzid NUL username NUL password"),
        (b"\x00\x00" + PASSWORD, "empty username"),
        (b"\x00alice\x00", "empty password"),
        (b"\x00al\xffice\x00" + PASSWORD, "not valid UTF-8"),
        (b"\x00alice\x00pass\xff", "not valid UTF-8"),
        (b"\x00" + b"u" * 256 + b"\x00" + PASSWORD, "longer than 255 bytes"),
        (b"\x00alice\x00" + b"p" * SASL_TOKEN_BYTES_MAX, "exceeds the limit"),
    ],
)
def test_plain_malformed_messages(users: Users, token: bytes, why: str) -> None:
    err = failure(lambda: plain(users).step(token))
    assert isinstance(err, SaslProtocolError) and why in err.message


def test_plain_is_one_step(users: Users) -> None:
    srv = plain(users)
    srv.step(b"\x00alice\x00" + PASSWORD)
    assert isinstance(failure(lambda: srv.step(b"\x00alice\x00" + PASSWORD)), SaslProtocolError)
    srv = plain(users)
    failure(lambda: srv.step(b"\x00alice\x00wrong"))
    err = failure(lambda: srv.step(b"\x00alice\x00" + PASSWORD))
    assert isinstance(err, SaslProtocolError) and "already failed" in err.message


# ---- what errors never say -----------------------------------------------------------------------------------------


def every_failure(users: Users) -> Iterator[SaslError]:
    """Failures where the password (or a password-like string) is in the token the server refuses."""
    secret = PASSWORD.decode()
    yield failure(lambda: plain(users).step(b"\x00alice\x00" + PASSWORD + b"x"))
    yield failure(lambda: plain(users).step(b"\x00mallory\x00" + PASSWORD))
    yield failure(lambda: plain(users).step(b"x\x00alice\x00" + PASSWORD))
    yield failure(lambda: plain(users).step(b"\x00alice\x00" + PASSWORD + b"\xff"))
    yield failure(lambda: plain(users).step(b"\x00alice\x00" + PASSWORD + b"\x00more"))
    yield failure(lambda: plain(users).step(b"\x00alice\x00" + PASSWORD * 200))
    srv = server(users)
    final = first_two(srv, client(username=secret))  # a password typed as the username: fails at the proof
    yield failure(lambda: srv.step(final))
    yield failure(lambda: server(users).step(f"n,,n=alice,r={secret}".encode()))
    yield failure(lambda: server(users).step(f"n,,n=alice,r=x,{secret}".encode()))
    yield failure(lambda: server(users).step(f"n,a={secret},n=alice,r=x".encode()))
    srv = server(users)
    final = first_two(srv, client(password=PASSWORD + b"!"))
    yield failure(lambda: srv.step(final))
    srv = server(users)
    final = first_two(srv, client())
    yield failure(lambda: srv.step(final.replace(b"c=biws", b"c=" + base64.b64encode(PASSWORD))))
    srv = server(users)
    final = first_two(srv, client())
    yield failure(lambda: srv.step(final.split(b",p=")[0] + b",p=" + PASSWORD))


def test_no_error_repeats_the_password_or_the_username(users: Users) -> None:
    errors = list(every_failure(users))
    assert len(errors) == 13
    for err in errors:
        text = f"{err} {err!r} {err.message} {err.response_token!r} {err.args}"
        assert "correct horse" not in text and "alice" not in text and "mallory" not in text, text
        assert err.__suppress_context__ or err.__context__ is None  # no chained decode error holding the token


# ---- the handshake's view ------------------------------------------------------------------------------------------


def test_server_for_names_the_supported_mechanisms(users: Users) -> None:
    assert isinstance(server_for("PLAIN", users), PlainServer)
    scram = server_for("SCRAM-SHA-512", users, mock_secret=SECRET)
    assert isinstance(scram, ScramServer) and scram.mechanism is SHA512
    assert server_for("GSSAPI", users) is None
    assert server_for("scram-sha-256", users) is None  # mechanism names are case-sensitive, as in Kafka
    assert all(server_for(name, users) is not None for name in SASL_MECHANISMS)


# ---- kafka-python's clients against these servers ------------------------------------------------------------------


def kafka_python(name: str) -> Any:
    """kafka-python moved its SASL modules between versions: kafka.net.sasl (3.x), kafka.sasl (2.1), kafka.scram."""
    pytest.importorskip("kafka")
    for module in (f"kafka.net.sasl.{name}", f"kafka.sasl.{name}", f"kafka.{name}"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    pytest.skip(f"kafka-python has no {name} SASL module")


@pytest.mark.parametrize("mechanism", list(ScramMechanism))
def test_kafka_python_scram_client_authenticates(users: Users, mechanism: ScramMechanism) -> None:
    """Interoperability with a real client's SCRAM: kafka-python's ScramClient, its own nonce and proof."""
    scram = kafka_python("scram")
    cli = scram.ScramClient("alice", PASSWORD.decode(), mechanism.value)
    srv = ScramServer(mechanism, users, mock_secret=SECRET)
    cli.process_server_first_message(srv.step(cli.first_message()))
    cli.process_server_final_message(srv.step(cli.final_message()))  # raises if our signature is wrong
    assert srv.done and srv.principal == "alice"


def test_kafka_python_scram_client_with_a_wrong_password(users: Users) -> None:
    scram = kafka_python("scram")
    cli = scram.ScramClient("alice", "not the password", SHA256.value)
    srv = ScramServer(SHA256, users, mock_secret=SECRET)
    cli.process_server_first_message(srv.step(cli.first_message()))
    err = failure(lambda: srv.step(cli.final_message()))
    assert isinstance(err, SaslAuthenticationFailed) and err.scram_error == "invalid-proof"


def test_kafka_python_plain_client_authenticates(users: Users) -> None:
    module = kafka_python("plain")
    cli = module.SaslMechanismPlain(sasl_plain_username="alice", sasl_plain_password=PASSWORD.decode())
    srv = plain(users)
    cli.receive(srv.step(cli.auth_bytes()))
    assert cli.is_authenticated() and srv.principal == "alice"


def test_librdkafka_before_2_6_1_doubled_client_nonce_is_accepted(users: Users) -> None:
    """librdkafka < 2.6.1 (librdkafka#4895) echoes ``r=<client nonce><client nonce><server nonce>``; Kafka 3.x
    accepted it, and kcat builds still send it. Exactly that form is accepted, with a proof over what was sent."""
    srv = server(users)
    bare = b"n=alice,r=clientnonce"
    server_first = srv.step(b"n,," + bare)
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    salted = sasl.salt_password(SHA256, PASSWORD, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = b"c=biws,r=clientnonce" + attrs["r"].encode()
    auth = bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    srv.step(without_proof + b",p=" + base64.b64encode(proof))
    assert srv.done and srv.principal == "alice"
