"""SASL mechanisms, sans-IO: PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677).

Runs in every shard process: one server mechanism object per connection that authenticates, owned by the
SaslHandshake / SaslAuthenticate handlers (KIP-43, KIP-84, KIP-152). ``ScramClient`` is the other side, for the
broker's own connections to other brokers and for tests. Nothing here touches a socket, a clock or a log: the
SaslAuthenticate tokens go in, the tokens to answer come out, and a failed exchange raises a ``SaslError`` whose
message is safe to send back as the response's error_message. It never repeats what the client sent, never
contains the password, and never says whether the user exists. ``SaslAuthenticationFailed`` is for credentials
that do not verify, ``SaslProtocolError`` for a token that is malformed, oversized or out of order. Kafka answers
both with SASL_AUTHENTICATION_FAILED (58) and closes the connection. ILLEGAL_SASL_STATE (34) is for SaslAuthenticate
calls out of order with SaslHandshake, which the handlers check before any token reaches this module.

What the server checks against is a ``ScramCredential``: salt, iterations, stored key and server key, as the Raft
metadata keeps them, never the password. This is what Kafka's AlterUserScramCredentials (KIP-554) carries: the client
sends salt, iterations and salted password, and ``credential_from_salted_password`` keeps only the two keys. The
shell passes a ``CredentialLookup`` (username, mechanism) -> credential, read from the metadata image.

Unknown users: the server answers the client-first-message of a user without a credential exactly like one
with a credential. It uses a salt and keys derived from the username and a server secret, with the default
iteration count, so repeated tries give the same answer, and the exchange fails only at the proof, with the same
error as a wrong password. (This is PostgreSQL's mock authentication. Kafka and Redpanda fail at once instead,
which tells the client the user does not exist.) PLAIN likewise runs PBKDF2 against a made-up credential, so its
timing does not reveal which users exist.

Not implemented: SASLprep (RFC 4013). Usernames and passwords are compared as their UTF-8 bytes, as Kafka does.
Channel binding (``p=``, the -PLUS mechanisms) is refused, and so are delegation tokens (Kafka's ``tokenauth``
extension, KIP-48). Cost: PLAIN runs PBKDF2 (4096 to 16384 HMACs, a few milliseconds) in ``step``. SCRAM's server
side runs a few HMACs only.

Bounds: every token is at most ``SASL_TOKEN_BYTES_MAX``, usernames and authorization ids at most
``SASL_USERNAME_BYTES_MAX``, salts at most ``SCRAM_SALT_BYTES_MAX``, and iterations are between Kafka's 4096 and
16384 (both directions: a server cannot make ``ScramClient`` spin on a huge iteration count).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

SASL_TOKEN_BYTES_MAX: Final = 4096  # one SaslAuthenticate auth_bytes; a SCRAM message is ~200 bytes
SASL_USERNAME_BYTES_MAX: Final = 255  # RFC 4616's authcid bound (and Redpanda's), UTF-8 bytes after decoding
SCRAM_SALT_BYTES: Final = 32  # salts made here, and the made-up salts of unknown users (same length: no tell)
SCRAM_SALT_BYTES_MAX: Final = 256  # a salt handed in through AlterUserScramCredentials
SCRAM_DEFAULT_ITERATIONS: Final = 4096  # kafka-configs' default, and the made-up iterations of unknown users
SCRAM_NONCE_BYTES: Final = 24  # random bytes in the server's nonce (32 URL-safe characters)
MOCK_SECRET_BYTES_MIN: Final = 16

PLAIN: Final = "PLAIN"

_AUTHENTICATION_FAILED: Final = "Authentication failed: invalid username or password"
_PRINTABLE_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 "printable": ASCII visible, no comma
_SASLNAME = re.compile(r"(?:[^=,\x00]|=2C|=3D)+")  # RFC 5802 saslname: "," and "=" only as =2C / =3D
_SASLNAME_ESCAPE = re.compile(r"=2C|=3D")
_EXTENSION = re.compile(r"([A-Za-z]+)=([^,]*)")  # Kafka's SCRAM extensions (KIP-84): key=value
_SERVER_ERROR_VALUE = re.compile(r"[a-z-]{1,64}")


# ---- errors --------------------------------------------------------------------------------------------------------


class SaslError(Exception):
    """The exchange failed. ``message`` is safe to send to the client: it never contains what the client sent.

    ``scram_error`` is RFC 5802's server-error-value (``invalid-proof``, ``channel-bindings-dont-match``, ...) when
    the failure came at the client-final-message, where SCRAM has an answer for it; ``response_token`` is then
    that answer (``e=<value>``). Kafka answers a failed SaslAuthenticate with an error code and empty auth_bytes, so
    the shell may ignore it.
    """

    def __init__(self, message: str, scram_error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.scram_error = scram_error

    @property
    def response_token(self) -> bytes:
        return b"" if self.scram_error is None else b"e=" + self.scram_error.encode("ascii")


class SaslAuthenticationFailed(SaslError):
    """The credentials do not verify: wrong password, unknown user (the same message), a refused authorization id."""


class SaslProtocolError(SaslError):
    """The token is malformed, oversized, or came when the exchange expected none (out of order, after the end)."""


# ---- mechanisms and credentials ------------------------------------------------------------------------------------


class ScramMechanism(enum.Enum):
    """The SCRAM mechanisms, named as in SaslHandshake; ``kafka_type`` is the mechanism's number in
    AlterUserScramCredentials / DescribeUserScramCredentials (Kafka's ``ScramMechanism``: 0 is UNKNOWN)."""

    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"

    @property
    def hash_name(self) -> str:
        return "sha256" if self is ScramMechanism.SCRAM_SHA_256 else "sha512"

    @property
    def digest_size(self) -> int:
        return 32 if self is ScramMechanism.SCRAM_SHA_256 else 64

    @property
    def min_iterations(self) -> int:
        return 4096  # Kafka's ScramMechanism.minIterations, for both

    @property
    def max_iterations(self) -> int:
        return 16384  # the most Kafka's AlterUserScramCredentials accepts

    @property
    def kafka_type(self) -> int:
        return 1 if self is ScramMechanism.SCRAM_SHA_256 else 2

    @classmethod
    def from_kafka_type(cls, kafka_type: int) -> ScramMechanism | None:
        for mechanism in cls:
            if mechanism.kafka_type == kafka_type:
                return mechanism
        return None


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the metadata stores for one user and mechanism (RFC 5802 section 3). You cannot get the password back
    from it, and the keys are kept out of ``repr`` so they do not end up in logs. Raises ``ValueError`` when a field
    is out of range (Kafka's AlterUserScramCredentials answers that with UNACCEPTABLE_CREDENTIAL)."""

    mechanism: ScramMechanism
    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_iterations(self.mechanism, self.iterations)
        if not 0 < len(self.salt) <= SCRAM_SALT_BYTES_MAX:
            raise ValueError(f"salt must be 1 to {SCRAM_SALT_BYTES_MAX} bytes, got {len(self.salt)}")
        size = self.mechanism.digest_size
        if len(self.stored_key) != size or len(self.server_key) != size:
            raise ValueError(f"{self.mechanism.value} keys must be {size} bytes")


CredentialLookup = Callable[[str, ScramMechanism], ScramCredential | None]
"""The shell's view of the metadata: the credential of (username, mechanism), or None when there is none."""


def salt_password(mechanism: ScramMechanism, password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's SaltedPassword := Hi(password, salt, i), PBKDF2 with HMAC of the mechanism's hash."""
    _check_iterations(mechanism, iterations)
    return hashlib.pbkdf2_hmac(mechanism.hash_name, password, salt, iterations)


def credential_from_salted_password(
    mechanism: ScramMechanism, salt: bytes, iterations: int, salted_password: bytes
) -> ScramCredential:
    """The credential for an AlterUserScramCredentials upsertion (salt, iterations, salted password). The salted
    password itself is not kept."""
    stored_key, server_key = scram_keys(mechanism, salted_password)
    return ScramCredential(
        mechanism=mechanism, salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key
    )


def scram_keys(mechanism: ScramMechanism, salted_password: bytes) -> tuple[bytes, bytes]:
    """RFC 5802's (StoredKey, ServerKey) of a salted password, which is not kept."""
    if len(salted_password) != mechanism.digest_size:
        raise ValueError(f"a {mechanism.value} salted password is {mechanism.digest_size} bytes")
    stored_key = _hash(mechanism, _hmac(mechanism, salted_password, b"Client Key"))
    return stored_key, _hmac(mechanism, salted_password, b"Server Key")


def make_credential(
    mechanism: ScramMechanism,
    password: bytes,
    salt: bytes | None = None,
    iterations: int = SCRAM_DEFAULT_ITERATIONS,
) -> ScramCredential:
    """A credential for ``password``, with a random ``SCRAM_SALT_BYTES`` salt unless one is given."""
    _check_iterations(mechanism, iterations)  # before PBKDF2 runs, not after
    salt = secrets.token_bytes(SCRAM_SALT_BYTES) if salt is None else salt
    salted_password = salt_password(mechanism, password, salt, iterations)
    return credential_from_salted_password(mechanism, salt, iterations, salted_password)


def _check_iterations(mechanism: ScramMechanism, iterations: int) -> None:
    if not mechanism.min_iterations <= iterations <= mechanism.max_iterations:
        raise ValueError(
            f"{mechanism.value} iterations must be between {mechanism.min_iterations} and "
            f"{mechanism.max_iterations}, got {iterations}"
        )


def _hmac(mechanism: ScramMechanism, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, mechanism.hash_name).digest()


def _hash(mechanism: ScramMechanism, data: bytes) -> bytes:
    return hashlib.new(mechanism.hash_name, data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _mock_credential(mechanism: ScramMechanism, username: str, secret: bytes) -> ScramCredential:
    """A made-up credential for a user without one. It is the same for the same user every time, so repeating the
    client-first-message shows nothing, and no password verifies against it (callers also fail it explicitly)."""

    def derive(label: bytes, size: int) -> bytes:
        material = b"rafka-scram-mock\0" + label + b"\0" + mechanism.value.encode() + b"\0" + username.encode()
        return hmac.new(secret, material, "sha512").digest()[:size]

    return ScramCredential(
        mechanism=mechanism,
        salt=derive(b"salt", SCRAM_SALT_BYTES),
        iterations=SCRAM_DEFAULT_ITERATIONS,
        stored_key=derive(b"stored key", mechanism.digest_size),
        server_key=derive(b"server key", mechanism.digest_size),
    )


# One per process unless the shell passes a cluster-wide secret; see ``ScramServer``.
_PROCESS_MOCK_SECRET: Final = secrets.token_bytes(32)


def _mock_secret(secret: bytes | None) -> bytes:
    if secret is None:
        return _PROCESS_MOCK_SECRET
    if len(secret) < MOCK_SECRET_BYTES_MIN:
        raise ValueError(f"mock_secret must be at least {MOCK_SECRET_BYTES_MIN} bytes")
    return secret


# ---- message parsing shared by both sides --------------------------------------------------------------------------


def _check_token(token: bytes) -> None:
    if len(token) > SASL_TOKEN_BYTES_MAX:
        raise SaslProtocolError(f"SASL token of {len(token)} bytes exceeds the limit of {SASL_TOKEN_BYTES_MAX}")


def _decode_text(token: bytes, what: str, scram_error: str | None = None) -> str:
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslProtocolError(f"{what} is not valid UTF-8", scram_error) from None
    if "\x00" in text:
        raise SaslProtocolError(f"{what} contains a NUL character", scram_error)
    return text


def _decode_saslname(value: str, what: str) -> str:
    """RFC 5802 saslname: ``=2C`` is a comma and ``=3D`` an equals sign; any other ``=`` is malformed."""
    if not value:
        raise SaslProtocolError(f"empty {what}")
    if _SASLNAME.fullmatch(value) is None:
        raise SaslProtocolError(f"malformed {what}: '=' must be escaped as =3D and ',' as =2C")
    name = _SASLNAME_ESCAPE.sub(lambda m: "," if m.group() == "=2C" else "=", value)
    if len(name.encode()) > SASL_USERNAME_BYTES_MAX:
        raise SaslProtocolError(f"{what} longer than {SASL_USERNAME_BYTES_MAX} bytes")
    return name


def _encode_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _parse_extensions(attributes: list[str], what: str, scram_error: str | None = None) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for attribute in attributes:
        match = _EXTENSION.fullmatch(attribute)
        if match is None:
            raise SaslProtocolError(f"malformed attribute in the {what}", scram_error)
        extensions[match.group(1)] = match.group(2)
    return extensions


def _b64decode(value: str, what: str, scram_error: str | None = None) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SaslProtocolError(f"{what} is not valid base64", scram_error) from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _default_nonce() -> bytes:
    return secrets.token_urlsafe(SCRAM_NONCE_BYTES).encode("ascii")


def _own_nonce(nonce_source: Callable[[], bytes]) -> str:
    """A nonce this side made. A nonce source that returns something unprintable is a bug here, not the peer's."""
    nonce = nonce_source().decode("ascii")
    if _PRINTABLE_NONCE.fullmatch(nonce) is None:
        raise ValueError("the nonce source must return printable ASCII without commas")
    return nonce


# ---- servers -------------------------------------------------------------------------------------------------------


class SaslServer(Protocol):
    """What the SaslAuthenticate handler drives: ``step`` with each token until ``done``; then ``principal`` is the
    authenticated username (Kafka's ``User:<name>``). ``step`` raises ``SaslError`` when the exchange fails. After
    that the object refuses every further token."""

    @property
    def mechanism_name(self) -> str: ...

    @property
    def done(self) -> bool: ...

    @property
    def principal(self) -> str | None: ...

    @property
    def attempted_user(self) -> str:
        """The user name the client gave so far ("" before it named one): what the audit log records of a failed
        authentication. Never the password or a proof."""
        ...

    def step(self, token: bytes) -> bytes: ...


SASL_MECHANISMS: Final = (ScramMechanism.SCRAM_SHA_512.value, ScramMechanism.SCRAM_SHA_256.value, PLAIN)
"""The mechanisms a SaslHandshake response lists as enabled."""


def server_for(
    mechanism_name: str,
    lookup: CredentialLookup,
    *,
    mock_secret: bytes | None = None,
    nonce_source: Callable[[], bytes] | None = None,
) -> SaslServer | None:
    """The server side of ``mechanism_name`` (as SaslHandshake names it), or None when it is not supported (Kafka's
    UNSUPPORTED_SASL_MECHANISM)."""
    if mechanism_name == PLAIN:
        return PlainServer(lookup, mock_secret=mock_secret)
    for mechanism in ScramMechanism:
        if mechanism.value == mechanism_name:
            return ScramServer(mechanism, lookup, nonce_source, mock_secret=mock_secret)
    return None


class _Stage(enum.Enum):
    FIRST = "first"  # expecting the first message of the exchange
    FINAL = "final"  # SCRAM: expecting the client-final-message
    DONE = "done"
    FAILED = "failed"


def _refuse_after_end(stage: _Stage) -> None:
    if stage is _Stage.DONE:
        raise SaslProtocolError("the SASL exchange is already complete")
    if stage is _Stage.FAILED:
        raise SaslProtocolError("the SASL exchange already failed")


class ScramServer:
    """The server side of one SCRAM exchange (RFC 5802 section 5): ``step(client-first-message)`` returns the
    server-first-message, ``step(client-final-message)`` the server-final-message (``v=`` signature), and then
    ``done`` is true and ``principal`` is the username.

    ``lookup`` gives the user's credential for this mechanism. ``nonce_source`` gives the server's part of the nonce
    (printable ASCII, default 24 random bytes made URL-safe; tests inject it). ``mock_secret`` keys the made-up salts
    of unknown users. To keep them from telling unknown users apart, it should be the same on every broker and
    across restarts (a secret in the cluster metadata). Without it, each process makes a random one.
    """

    __slots__ = (
        "_auth_prefix",
        "_client_nonce",
        "_credential",
        "_gs2_header",
        "_known",
        "_lookup",
        "_mock_secret",
        "_nonce",
        "_nonce_source",
        "_principal",
        "_stage",
        "_username",
        "mechanism",
    )

    def __init__(
        self,
        mechanism: ScramMechanism,
        lookup: CredentialLookup,
        nonce_source: Callable[[], bytes] | None = None,
        *,
        mock_secret: bytes | None = None,
    ) -> None:
        self.mechanism = mechanism
        self._lookup = lookup
        self._nonce_source = _default_nonce if nonce_source is None else nonce_source
        self._mock_secret = _mock_secret(mock_secret)
        self._stage = _Stage.FIRST
        self._principal: str | None = None
        # Kept from the client-first-message for the final one; cleared when the exchange ends.
        self._credential: ScramCredential | None = None
        self._known = False
        self._username = ""
        self._gs2_header = ""
        self._nonce = ""
        self._client_nonce = ""
        self._auth_prefix = ""  # client-first-message-bare "," server-first-message

    @property
    def mechanism_name(self) -> str:
        return self.mechanism.value

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    @property
    def principal(self) -> str | None:
        return self._principal

    @property
    def attempted_user(self) -> str:
        return self._username

    def step(self, token: bytes) -> bytes:
        stage = self._stage
        _refuse_after_end(stage)
        self._stage = _Stage.FAILED  # until this step succeeds: any exception ends the exchange
        try:
            _check_token(token)
            if stage is _Stage.FIRST:
                reply = self._client_first(token)
                self._stage = _Stage.FINAL
            else:
                reply = self._client_final(token)
                self._stage = _Stage.DONE
                self._forget()
        except SaslError:
            self._forget()
            raise
        return reply

    def _forget(self) -> None:
        self._credential = None
        self._auth_prefix = ""

    def _client_first(self, token: bytes) -> bytes:
        text = _decode_text(token, "client-first-message")
        gs2_header, authzid, bare = _split_gs2_header(text)
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            raise SaslProtocolError("SCRAM mandatory extensions (m=) are not supported")
        if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
            raise SaslProtocolError("malformed client-first-message: expected n=<username>,r=<nonce>")
        username = _decode_saslname(attributes[0][2:], "username")
        self._username = username  # from here on a failure is this user's (the audit log's attempted_user)
        client_nonce = attributes[1][2:]
        if _PRINTABLE_NONCE.fullmatch(client_nonce) is None:
            raise SaslProtocolError("malformed client nonce: expected printable ASCII")
        extensions = _parse_extensions(attributes[2:], "client-first-message")
        if extensions.get("tokenauth", "").lower() == "true":
            raise SaslAuthenticationFailed("delegation token authentication is not supported")
        if authzid is not None and authzid != username:
            raise SaslAuthenticationFailed("the authorization id must be empty or equal to the username")

        credential = self._lookup(username, self.mechanism)
        self._known = credential is not None
        if credential is None:
            credential = _mock_credential(self.mechanism, username, self._mock_secret)
        elif credential.mechanism is not self.mechanism:
            raise ValueError(f"lookup returned a {credential.mechanism.value} credential for {self.mechanism.value}")
        nonce = client_nonce + _own_nonce(self._nonce_source)
        server_first = f"r={nonce},s={_b64encode(credential.salt)},i={credential.iterations}"
        self._credential = credential
        self._username = username
        self._gs2_header = gs2_header
        self._nonce = nonce
        self._client_nonce = client_nonce
        self._auth_prefix = bare + "," + server_first
        return server_first.encode("ascii")

    def _client_final(self, token: bytes) -> bytes:
        credential = self._credential
        assert credential is not None
        text = _decode_text(token, "client-final-message", "invalid-encoding")
        attributes = text.split(",")
        if (
            len(attributes) < 3
            or not attributes[0].startswith("c=")
            or not attributes[1].startswith("r=")
            or not attributes[-1].startswith("p=")
        ):
            raise SaslProtocolError("malformed client-final-message: expected c=...,r=...,p=...", "invalid-encoding")
        _parse_extensions(attributes[2:-1], "client-final-message", "invalid-encoding")  # none known: ignored
        channel_binding = _b64decode(attributes[0][2:], "channel binding", "invalid-encoding")
        if not hmac.compare_digest(channel_binding, self._gs2_header.encode()):
            raise SaslProtocolError("channel binding does not match the GS2 header", "channel-bindings-dont-match")
        # librdkafka before 2.6.1 sends its own nonce twice (client nonce + the server's whole nonce); Kafka 3.x
        # accepted it ("endsWith"). That exact form still proves the server's fresh nonce was seen: accept it too, as
        # kcat and confluent-kafka builds on older librdkafka are common (librdkafka#4895).
        echoed = attributes[1][2:].encode()
        if not (
            hmac.compare_digest(echoed, self._nonce.encode())
            or hmac.compare_digest(echoed, (self._client_nonce + self._nonce).encode())
        ):
            raise SaslProtocolError("nonce does not match the server-first-message", "other-error")
        proof = _b64decode(attributes[-1][2:], "client proof", "invalid-encoding")
        if len(proof) != self.mechanism.digest_size:
            raise SaslProtocolError("client proof has the wrong length", "invalid-encoding")

        auth_message = (self._auth_prefix + "," + ",".join(attributes[:-1])).encode()
        client_key = _xor(proof, _hmac(self.mechanism, credential.stored_key, auth_message))
        verified = hmac.compare_digest(_hash(self.mechanism, client_key), credential.stored_key)
        if not (verified and self._known):
            raise SaslAuthenticationFailed(_AUTHENTICATION_FAILED, "invalid-proof")
        self._principal = self._username
        return b"v=" + _b64encode(_hmac(self.mechanism, credential.server_key, auth_message)).encode("ascii")


def _split_gs2_header(text: str) -> tuple[str, str | None, str]:
    """RFC 5802's gs2-header: (the header itself, the authorization id or None, client-first-message-bare)."""
    flag, comma, rest = text.partition(",")
    if flag.startswith("p="):
        raise SaslProtocolError("channel binding is not supported")
    if not comma or flag not in ("n", "y"):
        # "y": the client supports channel binding but thinks the server does not, which is true (no -PLUS).
        raise SaslProtocolError("malformed GS2 header: expected n,, or y,, or n,a=<authzid>,")
    authz, comma, bare = rest.partition(",")
    if not comma:
        raise SaslProtocolError("malformed GS2 header: expected n,, or y,, or n,a=<authzid>,")
    if authz == "":
        authzid = None
    elif authz.startswith("a="):
        authzid = _decode_saslname(authz[2:], "authorization id")
    else:
        raise SaslProtocolError("malformed GS2 header: the authorization id must be a=<name>")
    return f"{flag},{authz},", authzid, bare


class PlainServer:
    """The server side of PLAIN (RFC 4616): one token ``authzid NUL authcid NUL password``, answered with an empty
    token. The password is checked against the user's SCRAM credential, as Redpanda does: SCRAM-SHA-512 if the user
    has one, else SCRAM-SHA-256. The salted password is computed from the stored salt and iterations and its stored
    key compared. The authorization id must be empty or the username.
    """

    __slots__ = ("_attempted_user", "_lookup", "_mock_secret", "_principal", "_stage")

    mechanism_name: Final = PLAIN

    def __init__(self, lookup: CredentialLookup, *, mock_secret: bytes | None = None) -> None:
        self._lookup = lookup
        self._mock_secret = _mock_secret(mock_secret)
        self._stage = _Stage.FIRST
        self._principal: str | None = None
        self._attempted_user = ""

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    @property
    def principal(self) -> str | None:
        return self._principal

    @property
    def attempted_user(self) -> str:
        return self._attempted_user

    def step(self, token: bytes) -> bytes:
        _refuse_after_end(self._stage)
        self._stage = _Stage.FAILED
        _check_token(token)
        fields = token.split(b"\x00")
        if len(fields) != 3:
            raise SaslProtocolError("malformed PLAIN message: expected authzid NUL username NUL password")
        authzid_bytes, username_bytes, password = fields
        authzid = _decode_text(authzid_bytes, "PLAIN authorization id")
        username = _decode_text(username_bytes, "PLAIN username")
        _decode_text(password, "PLAIN password")  # RFC 4616: UTF-8; the bytes are what PBKDF2 gets
        if not username:
            raise SaslProtocolError("empty username")
        if not password:
            raise SaslProtocolError("empty password")
        if len(username_bytes) > SASL_USERNAME_BYTES_MAX or len(authzid_bytes) > SASL_USERNAME_BYTES_MAX:
            raise SaslProtocolError(f"username longer than {SASL_USERNAME_BYTES_MAX} bytes")
        self._attempted_user = username
        if authzid and authzid != username:
            raise SaslAuthenticationFailed("the authorization id must be empty or equal to the username")

        credential = self._lookup(username, ScramMechanism.SCRAM_SHA_512) or self._lookup(
            username, ScramMechanism.SCRAM_SHA_256
        )
        known = credential is not None
        if credential is None:  # the same PBKDF2 work as for a real user, so the timing does not tell
            credential = _mock_credential(ScramMechanism.SCRAM_SHA_512, username, self._mock_secret)
        mechanism = credential.mechanism
        salted = salt_password(mechanism, password, credential.salt, credential.iterations)
        stored_key = _hash(mechanism, _hmac(mechanism, salted, b"Client Key"))
        if not (hmac.compare_digest(stored_key, credential.stored_key) and known):
            raise SaslAuthenticationFailed(_AUTHENTICATION_FAILED)
        self._stage = _Stage.DONE
        self._principal = username
        return b""


# ---- client --------------------------------------------------------------------------------------------------------


class _ClientStage(enum.Enum):
    FIRST = "client-first"  # to send the client-first-message
    SERVER_FIRST = "server-first"  # expecting the server-first-message
    SERVER_FINAL = "server-final"  # expecting the server-final-message
    DONE = "done"
    FAILED = "failed"


class ScramClient:
    """The client side of one SCRAM exchange: ``first()`` -> client-first-message, ``final(server_first)`` ->
    client-final-message, ``verify(server_final)`` checks the server's signature (mutual authentication). Refuses a
    server that asks for fewer or more iterations than the mechanism allows, a nonce that does not extend its own,
    and a wrong server signature; every failure is a ``SaslError``."""

    __slots__ = (
        "_authzid",
        "_client_first_bare",
        "_nonce",
        "_password",
        "_server_signature",
        "_stage",
        "_username",
        "mechanism",
    )

    def __init__(
        self,
        mechanism: ScramMechanism,
        username: str,
        password: bytes,
        nonce_source: Callable[[], bytes] | None = None,
        *,
        authzid: str | None = None,
    ) -> None:
        if not username or len(username.encode()) > SASL_USERNAME_BYTES_MAX:
            raise ValueError(f"username must be 1 to {SASL_USERNAME_BYTES_MAX} bytes")
        self.mechanism = mechanism
        self._username = username
        self._password = password
        self._authzid = authzid
        self._nonce = _own_nonce(_default_nonce if nonce_source is None else nonce_source)
        self._stage = _ClientStage.FIRST
        self._client_first_bare = ""
        self._server_signature = b""

    @property
    def done(self) -> bool:
        return self._stage is _ClientStage.DONE

    @property
    def awaiting_server_final(self) -> bool:
        """``final`` was called: the next server token is the server-final-message, for ``verify``."""
        return self._stage is _ClientStage.SERVER_FINAL

    def _advance(self, expected: _ClientStage, then: _ClientStage) -> None:
        if self._stage is not expected:
            raise SaslProtocolError(f"SCRAM client step out of order: at {self._stage.value}, not {expected.value}")
        self._stage = then

    def first(self) -> bytes:
        self._advance(_ClientStage.FIRST, _ClientStage.SERVER_FIRST)
        authz = "" if self._authzid is None else "a=" + _encode_saslname(self._authzid)
        self._client_first_bare = f"n={_encode_saslname(self._username)},r={self._nonce}"
        return f"n,{authz},{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        self._advance(_ClientStage.SERVER_FIRST, _ClientStage.FAILED)
        _check_token(server_first)
        text = _decode_text(server_first, "server-first-message")
        attributes = text.split(",")
        if attributes[0].startswith("m="):
            raise SaslProtocolError("SCRAM mandatory extensions (m=) are not supported")
        if (
            len(attributes) < 3
            or not attributes[0].startswith("r=")
            or not attributes[1].startswith("s=")
            or not attributes[2].startswith("i=")
        ):
            raise SaslProtocolError("malformed server-first-message: expected r=...,s=...,i=...")
        _parse_extensions(attributes[3:], "server-first-message")
        nonce = attributes[0][2:]
        if (
            not nonce.startswith(self._nonce)
            or len(nonce) == len(self._nonce)
            or _PRINTABLE_NONCE.fullmatch(nonce) is None
        ):
            raise SaslProtocolError("the server nonce does not extend the client nonce")
        salt = _b64decode(attributes[1][2:], "salt")
        if not 0 < len(salt) <= SCRAM_SALT_BYTES_MAX:
            raise SaslProtocolError("salt of an unacceptable length")
        iterations_text = attributes[2][2:]
        if not iterations_text.isdigit() or len(iterations_text) > 9:
            raise SaslProtocolError("malformed iteration count")
        iterations = int(iterations_text)
        if not self.mechanism.min_iterations <= iterations <= self.mechanism.max_iterations:
            raise SaslProtocolError(f"iteration count {iterations} outside what {self.mechanism.value} allows")

        gs2_header = "n," + ("" if self._authzid is None else "a=" + _encode_saslname(self._authzid)) + ","
        without_proof = f"c={_b64encode(gs2_header.encode())},r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        salted = salt_password(self.mechanism, self._password, salt, iterations)
        client_key = _hmac(self.mechanism, salted, b"Client Key")
        stored_key = _hash(self.mechanism, client_key)
        proof = _xor(client_key, _hmac(self.mechanism, stored_key, auth_message))
        self._server_signature = _hmac(self.mechanism, _hmac(self.mechanism, salted, b"Server Key"), auth_message)
        self._stage = _ClientStage.SERVER_FINAL
        return f"{without_proof},p={_b64encode(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        self._advance(_ClientStage.SERVER_FINAL, _ClientStage.FAILED)
        _check_token(server_final)
        text = _decode_text(server_final, "server-final-message")
        attribute = text.split(",")[0]
        if attribute.startswith("e="):
            value = attribute[2:] if _SERVER_ERROR_VALUE.fullmatch(attribute[2:]) else "other-error"
            raise SaslAuthenticationFailed(f"the server refused the authentication: {value}", value)
        if not attribute.startswith("v="):
            raise SaslProtocolError("malformed server-final-message: expected v=<signature> or e=<error>")
        if not hmac.compare_digest(_b64decode(attribute[2:], "server signature"), self._server_signature):
            raise SaslAuthenticationFailed("the server's signature does not verify: it does not know the credential")
        self._stage = _ClientStage.DONE
