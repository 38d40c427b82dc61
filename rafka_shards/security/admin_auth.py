"""The admin API's authentication and authorization core (issue 18, "Admin API"; Redpanda's model): the
``Authorization`` header, the bearer-token file, a password checked against a stored SCRAM credential, the cache of
those checks, and which requests need which caller.

Runs in the controller process, under the aiohttp middleware of ``rafka_shards.admin.auth``, which does the I/O
(runs PBKDF2 in a worker thread, delays failures, counts them). Pure but for reading the token file and
``PasswordCache``'s random key; no asyncio, no aiohttp.

- ``parse_authorization``: RFC 7617 ``Basic`` (user-id and password, base64) or RFC 6750 ``Bearer``. Errors
  never repeat the credential.
- ``verify_password``: the password is right when RFC 5802's StoredKey := H(HMAC(Hi(password, salt, i),
  "Client Key")) equals the stored one (``hmac.compare_digest``). The metadata never holds the password, so this
  is the only check there is; it costs ``iterations`` HMACs, hence ``PasswordCache``.
- ``PasswordCache``: results of ``verify_password`` keyed by an HMAC (a per-process random key) of the user, the
  credential (salt, iterations, StoredKey) and the password. Neither the password nor an unkeyed hash of it is
  kept; a credential that changes (new password, new salt) gives new keys, so earlier results no longer count.
- ``TokenFile``: lines ``TOKEN PRINCIPAL`` (``#`` comments and blank lines allowed), re-read when the file's
  (mtime, size, inode) change. Tokens are kept as SHA-256 digests only. A file that no longer parses (or is gone)
  accepts no token until it is fixed (fail closed: a revocation half-written must not leave the old tokens valid).
- ``AdminPolicy``: Redpanda's rules. With ``require_auth`` off everything is open (the behaviour before issue 18).
  With it on, ``/v1/status/*`` stays open for probes, ``/metrics`` too unless ``metrics_open`` is off, reads
  (GET, HEAD, OPTIONS) need an authenticated caller and every other method a superuser (``super_users``).
"""

from __future__ import annotations

import binascii
import collections
import enum
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from controller.scram import scram_username_error
from rafka_shards.config import KIB, MIB, ConfigError
from rafka_shards.security.sasl import ScramCredential, ScramMechanism, salt_password, scram_keys

REALM: Final = "rafka_shards"
WWW_AUTHENTICATE: Final = f'Basic realm="{REALM}"'
USER_PREFIX: Final = "User:"

AUTHORIZATION_BYTES_MAX: Final = 4 * KIB  # a longer Authorization header is refused unread
BASIC_PASSWORD_BYTES_MAX: Final = 1024  # the admin API's own bound on a password (rafka_shards.admin.requests)
TOKENS_FILE_BYTES_MAX: Final = 1 * MIB
TOKENS_MAX: Final = 10_000
TOKEN_CHARS_MIN: Final = 16  # a shorter bearer token is too easy to guess: refused in the file
TOKENS_CHECK_INTERVAL_MS: Final = 1_000  # how often TokenFile stats its file (on a request, never in the background)
PASSWORD_CACHE_ENTRIES_MAX: Final = 1_024

# RFC 6750's b64token: what a bearer token may be made of.
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PREFIX: Final = "/v1/status/"
METRICS_PATH: Final = "/metrics"


class AuthorizationError(ValueError):
    """The ``Authorization`` header is malformed; the message names what is wrong, never the credential."""


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    username: str
    password: bytes = field(repr=False)  # UTF-8, as SCRAM clients send it


@dataclass(frozen=True, slots=True)
class BearerToken:
    token: str = field(repr=False)


def parse_authorization(value: str) -> BasicCredentials | BearerToken:
    """The credentials of an ``Authorization`` header value; ``AuthorizationError`` if it is malformed or of a
    scheme other than Basic and Bearer (schemes are case-insensitive, RFC 7235)."""
    if len(value) > AUTHORIZATION_BYTES_MAX:
        raise AuthorizationError(f"the Authorization header is longer than {AUTHORIZATION_BYTES_MAX} bytes")
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "basic":
        return _basic(rest)
    if scheme.lower() == "bearer":
        if not _TOKEN68.fullmatch(rest):
            raise AuthorizationError("a Bearer token is one word of letters, digits and -._~+/")
        return BearerToken(rest)
    raise AuthorizationError("the Authorization scheme must be Basic or Bearer")


def _basic(encoded: str) -> BasicCredentials:
    if not encoded:
        raise AuthorizationError("Basic needs base64-encoded user:password")
    try:
        raw = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise AuthorizationError("Basic credentials are not valid base64") from None
    user, colon, password = raw.partition(b":")
    if not colon:
        raise AuthorizationError("Basic credentials must be user:password")
    try:
        username = user.decode("utf-8")
        password.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthorizationError("Basic credentials are not valid UTF-8") from None
    if not username or not password:
        raise AuthorizationError("Basic credentials need a user and a password")
    if len(password) > BASIC_PASSWORD_BYTES_MAX:
        raise AuthorizationError(f"the password is longer than {BASIC_PASSWORD_BYTES_MAX} bytes")
    return BasicCredentials(username, password)


def basic_header(username: str, password: str) -> str:
    """The header value a client sends (tests and tools)."""
    return "Basic " + binascii.b2a_base64(f"{username}:{password}".encode(), newline=False).decode("ascii")


# ---- passwords against SCRAM credentials ---------------------------------------------------------------------------


def verify_password(credential: ScramCredential, password: bytes) -> bool:
    """Whether ``password`` is the one ``credential`` was made from (PBKDF2 with its salt and iterations)."""
    salted = salt_password(credential.mechanism, password, credential.salt, credential.iterations)
    stored_key, _ = scram_keys(credential.mechanism, salted)
    return hmac.compare_digest(stored_key, credential.stored_key)


# Checked when the user has no credential, so an unknown user costs the same PBKDF2 as a wrong password (the
# minimum iterations: what the admin API and kafka-configs make by default).
DECOY_CREDENTIAL: Final = ScramCredential(
    ScramMechanism.SCRAM_SHA_512,
    salt=b"rafka_shards admin decoy salt...",
    iterations=ScramMechanism.SCRAM_SHA_512.min_iterations,
    stored_key=bytes(ScramMechanism.SCRAM_SHA_512.digest_size),
    server_key=bytes(ScramMechanism.SCRAM_SHA_512.digest_size),
)


class PasswordCache:
    """Recent ``verify_password`` results, at most ``entries_max`` (least recently used dropped first)."""

    def __init__(self, entries_max: int = PASSWORD_CACHE_ENTRIES_MAX, key: bytes | None = None) -> None:
        assert entries_max > 0, entries_max
        self._key = secrets.token_bytes(32) if key is None else key
        self._entries: collections.OrderedDict[bytes, bool] = collections.OrderedDict()
        self.entries_max = entries_max

    def _digest(self, username: str, credential: ScramCredential, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (
            username.encode(),
            credential.mechanism.value.encode(),
            credential.salt,
            credential.iterations.to_bytes(4, "big"),
            credential.stored_key,
            password,
        ):
            mac.update(len(part).to_bytes(4, "big"))  # length-prefixed: no two tuples give the same input
            mac.update(part)
        return mac.digest()

    def get(self, username: str, credential: ScramCredential, password: bytes) -> bool | None:
        """The cached result, or None when this (user, credential, password) has not been checked lately."""
        key = self._digest(username, credential, password)
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
        return result

    def put(self, username: str, credential: ScramCredential, password: bytes, ok: bool) -> None:
        key = self._digest(username, credential, password)
        self._entries[key] = ok
        self._entries.move_to_end(key)
        while len(self._entries) > self.entries_max:
            self._entries.popitem(last=False)
        assert len(self._entries) <= self.entries_max

    def __len__(self) -> int:
        return len(self._entries)


# ---- bearer tokens ---------------------------------------------------------------------------------------------------


class TokensFileError(ConfigError):
    """The token file is unreadable or malformed; the message names the line, never a token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def check_principal(principal: str) -> str | None:
    """Why ``principal`` is not ``Type:name`` (Kafka's principal form), or None."""
    kind, colon, name = principal.partition(":")
    if not colon or not kind or not name:
        return f"{principal!r} is not a principal (Type:name, e.g. User:ops)"
    return None


def parse_tokens(text: str) -> dict[bytes, str]:
    """The principal of each token (by its SHA-256) of a token file's text; ``TokensFileError`` naming the line."""
    out: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 2:
            raise TokensFileError(f"line {number}: expected 'TOKEN PRINCIPAL', got {len(words)} word(s)")
        token, principal = words
        if not _TOKEN68.fullmatch(token):
            raise TokensFileError(f"line {number}: a token is made of letters, digits and -._~+/ only")
        if len(token) < TOKEN_CHARS_MIN:
            raise TokensFileError(f"line {number}: a token must be at least {TOKEN_CHARS_MIN} characters long")
        problem = check_principal(principal)
        if problem is not None:
            raise TokensFileError(f"line {number}: {problem}")
        digest = _digest(token)
        if digest in out:
            raise TokensFileError(f"line {number}: this token is already on an earlier line")
        out[digest] = principal
        if len(out) > TOKENS_MAX:
            raise TokensFileError(f"more than {TOKENS_MAX} tokens")
    return out


def read_tokens_file(path: Path) -> dict[bytes, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(TOKENS_FILE_BYTES_MAX + 1)
    except OSError as e:
        raise TokensFileError(f"{path}: {e.strerror or e}") from None
    if len(raw) > TOKENS_FILE_BYTES_MAX:
        raise TokensFileError(f"{path}: larger than {TOKENS_FILE_BYTES_MAX} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokensFileError(f"{path}: not UTF-8 text") from None
    try:
        return parse_tokens(text)
    except TokensFileError as e:
        raise TokensFileError(f"{path}: {e}") from None


@dataclass(frozen=True, slots=True)
class TokensReloaded:
    tokens: int


@dataclass(frozen=True, slots=True)
class TokensReloadFailed:
    error: str  # no token in it


_Stamp = tuple[int, int, int]  # mtime_ns, size, inode


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class TokenFile:
    """The tokens of ``path``, re-read when it changes. Construction raises ``TokensFileError`` (a start-up error);
    later failures empty the table and are reported once per change of the file."""

    def __init__(self, path: Path, now_ms: int, check_interval_ms: int = TOKENS_CHECK_INTERVAL_MS) -> None:
        assert check_interval_ms > 0, check_interval_ms
        self.path = path
        self.check_interval_ms = check_interval_ms
        self._stamp = _stamp(path)  # before the read: a change while reading is seen at the next check
        self._tokens: Mapping[bytes, str] = read_tokens_file(path)
        self._next_check_ms = now_ms + check_interval_ms
        self._failed: str | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    def principal(self, token: str) -> str | None:
        """The principal of ``token``, or None (an unknown token, or none while the file does not parse)."""
        return self._tokens.get(_digest(token))

    def maybe_reload(self, now_ms: int) -> TokensReloaded | TokensReloadFailed | None:
        """Read the file again if it changed since the last read (stat at most every ``check_interval_ms``)."""
        if now_ms < self._next_check_ms:
            return None
        self._next_check_ms = now_ms + self.check_interval_ms
        stamp = _stamp(self.path)
        if stamp == self._stamp and stamp is not None:
            return None
        try:
            tokens = read_tokens_file(self.path)
        except TokensFileError as e:
            self._tokens = {}
            self._stamp = stamp
            if self._failed == str(e):
                return None
            self._failed = str(e)
            return TokensReloadFailed(str(e))
        self._tokens = tokens
        self._stamp = stamp
        self._failed = None
        return TokensReloaded(len(tokens))


# ---- the bootstrap user ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BootstrapUser:
    """``bootstrap_user``: a SCRAM user the node creates at start unless it exists (Redpanda's RP_BOOTSTRAP_USER)."""

    username: str
    password: bytes = field(repr=False)
    mechanism: ScramMechanism = ScramMechanism.SCRAM_SHA_256


def parse_bootstrap_user(text: str) -> BootstrapUser:
    """``NAME:PASSWORD`` or ``NAME:PASSWORD:MECHANISM`` (SCRAM-SHA-256, the default, or SCRAM-SHA-512), as Redpanda
    reads it; ``ConfigError`` that never repeats the password."""
    name, colon, rest = text.partition(":")
    if not colon or not name or not rest:
        raise ConfigError("bootstrap_user: expected NAME:PASSWORD[:MECHANISM]")
    password, mechanism = rest, ScramMechanism.SCRAM_SHA_256
    head, colon, last = rest.rpartition(":")
    named = {m.value: m for m in ScramMechanism}
    if colon and head and last.upper() in named:  # a password ending in ":SCRAM-SHA-256" needs the mechanism given
        password, mechanism = head, named[last.upper()]
    problem = scram_username_error(name)
    if problem is not None:
        raise ConfigError(f"bootstrap_user: {problem}")
    encoded = password.encode("utf-8", errors="surrogatepass")
    if len(encoded) > BASIC_PASSWORD_BYTES_MAX:
        raise ConfigError(f"bootstrap_user: the password is longer than {BASIC_PASSWORD_BYTES_MAX} bytes")
    return BootstrapUser(name, encoded, mechanism)


# ---- who may do what ---------------------------------------------------------------------------------------------


class Access(enum.Enum):
    OPEN = "open"  # no credentials asked for
    AUTHENTICATED = "authenticated"  # any authenticated caller
    SUPERUSER = "superuser"  # an authenticated caller whose principal is in super_users


@dataclass(frozen=True, slots=True)
class AdminPolicy:
    require_auth: bool = False
    super_users: frozenset[str] = frozenset()
    metrics_open: bool = True

    def access(self, method: str, path: str) -> Access:
        if not self.require_auth or path.startswith(OPEN_PREFIX):
            return Access.OPEN
        if path == METRICS_PATH and self.metrics_open and method.upper() in READ_METHODS:
            return Access.OPEN
        return Access.AUTHENTICATED if method.upper() in READ_METHODS else Access.SUPERUSER

    def allows(self, access: Access, principal: str) -> bool:
        """Whether an authenticated ``principal`` may make a request that needs ``access``."""
        return access is not Access.SUPERUSER or principal in self.super_users
