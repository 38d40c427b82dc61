"""TLS for the Kafka listeners and the admin port: settings, server and client contexts, reloading, principals.

Runs in every process that listens: each shard's Kafka listener, and the controller process's admin port. It also
runs in a shard's outgoing connections to other brokers (replica fetchers). No asyncio and no sockets here. The shell
passes ``ReloadingContext.context`` to ``asyncio.start_server(ssl=..., ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)``.
It calls ``maybe_reload(now_ms)`` on its own clock and logs what that returns. Each connection's peer certificate
goes through ``principal_from_certificate``.

Settings (``TlsSettings``) are Kafka's broker settings, with a PEM keystore (Kafka's ``ssl.keystore.type=PEM``,
KIP-651):

    cert_file                 ssl.keystore.location (certificate chain, leaf first; may hold the key too)
    key_file                  ssl.keystore.key: the private key, PEM (empty: it is in cert_file)
    key_password              ssl.key.password
    ca_file                   ssl.truststore.location: the CAs that sign client certificates
    client_auth               ssl.client.auth: none / requested / required
    ciphers                   ssl.cipher.suites, in OpenSSL's syntax: the TLS 1.2 suites (empty: Python's default)
    min_version               ssl.enabled.protocols, as a floor: TLSv1.2 (default) or TLSv1.3, never lower
    principal_mapping_rules   ssl.principal.mapping.rules (KIP-371)

``ciphers`` restricts TLS 1.2 only: Python's ``ssl`` cannot restrict TLS 1.3's suites. All of them are AEAD, so
``ciphers`` together with ``min_version=TLSv1.3`` is refused rather than silently ignored.

Reloading (Kafka's dynamic keystore update, KIP-226, triggered by the files instead of AlterConfigs): the shell
gives asyncio one context for good, ``ReloadingContext.context``. When the (mtime, size, inode) of a file changes,
a whole new context is built from the files. New handshakes then use it: the listening context's SNI callback,
which OpenSSL runs for every ClientHello (with or without SNI), moves the connection onto the newest context.
Connections already open keep theirs. Calling ``load_cert_chain`` again on the live context would also
work, but it is unsafe in two ways: a load that fails half-way (a certificate whose key has not been written yet)
leaves the live context with no usable key, and a CA can only ever be added to a live context's trust store,
never removed. ``test_tls.py`` checks both facts, and that the swap reaches client-certificate checks too. A reload
that fails leaves the old context in use and returns the error. It is tried again at every check, but the same
error on the same files is reported only once.

Principals: Kafka's ``DefaultKafkaPrincipalBuilder`` for SSL: "User:" + the mapping rules applied to the subject
as Java's ``X500Principal.getName()`` writes it (RFC 2253; the last RDN of the encoding comes first, so a certificate
made as C=US, O=acme, OU=eng, CN=alice is "CN=alice,OU=eng,O=acme,C=US"). The rules parser and the rules are
ports of Kafka's ``SslPrincipalMapper``. Rule patterns are compiled by Python's ``re`` with ``re.ASCII``. That
agrees with Java's ``java.util.regex`` on the syntax the rules use (classes, groups, anchors, lazy and possessive
quantifiers, ``\\w``/``\\d``/``\\s``), and ``(?<name>...)`` is accepted as Java writes it. Java-only syntax
(``\\p{...}``, ``\\Q...\\E``) does not compile and is a configuration error naming the rule. Replacements follow
Java's ``Matcher.replaceAll`` (``$1``, ``${name}``, ``\\$``) with Kafka's escaping of back references past the
last group. A replacement that Kafka would accept but that throws for every certificate it matches (``$1`` in a
pattern without groups, a trailing ``\\``) is refused when the rules are parsed. So are rules that map nothing
at all (an empty string).

Not done here: checking that a reloaded certificate keeps its subject and SANs (Kafka's ``ssl.allow.dn.changes``
and ``ssl.allow.san.changes``), its validity dates, CRLs and OCSP.
"""

from __future__ import annotations

import enum
import os
import re
import ssl
import stat
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final

from rafka_shards.config import MIB, ConfigError

TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0  # the shell's start_server/open_connection(ssl_handshake_timeout=...)
TLS_RELOAD_CHECK_INTERVAL_MS: Final = 10_000  # how often ReloadingContext looks at the files' stat()
TLS_FILE_BYTES_MAX: Final = 1 * MIB  # a PEM file (certificate chain, key, CA bundle) larger than this is refused

ANONYMOUS: Final = "User:ANONYMOUS"  # the principal of a connection without a client certificate
USER_PREFIX: Final = "User:"

_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_TOO_OLD: Final = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"})
_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY: Final = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_ENCRYPTED: Final = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


class TlsConfigError(ConfigError):
    """A TLS setting is malformed, or a file it names is missing, unreadable or does not fit the others."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting
        self.detail = detail

    def with_prefix(self, prefix: str) -> TlsConfigError:
        return TlsConfigError(prefix + self.setting, self.detail)


class ClientAuth(enum.Enum):
    """Kafka's ``ssl.client.auth``."""

    NONE = "none"  # no client certificate is asked for; every connection is User:ANONYMOUS
    REQUESTED = "requested"  # asked for; a client without one is User:ANONYMOUS, a bad one is refused
    REQUIRED = "required"  # a client without a valid certificate is refused in the handshake


_VERIFY_MODE: Final = {
    ClientAuth.NONE: ssl.CERT_NONE,
    ClientAuth.REQUESTED: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRED: ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """One listener's TLS settings (see the module docstring for Kafka's names). Files are checked by
    ``server_context``; ``parse_tls_settings`` does both."""

    cert_file: Path
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    client_auth: ClientAuth = ClientAuth.NONE
    ciphers: str = ""
    min_version: str = "TLSv1.2"
    principal_mapping_rules: str = "DEFAULT"

    def __post_init__(self) -> None:
        _tls_version("min_version", self.min_version)
        if self.client_auth is not ClientAuth.NONE and self.ca_file is None:
            raise TlsConfigError(
                "ca_file",
                f"required with client_auth={self.client_auth.value}: the CAs client certificates are checked against",
            )
        if self.ciphers and self.min_version == "TLSv1.3":
            raise TlsConfigError(
                "ciphers", "has no effect with min_version=TLSv1.3 (Python's ssl cannot restrict TLS 1.3 cipher suites)"
            )


def parse_tls_settings(mapping: Mapping[str, object], prefix: str = "") -> TlsSettings:
    """Settings from a flat mapping of strings (a config file, environment, flags), checked completely.

    Keys are ``prefix`` + a ``TlsSettings`` field name (``kafka_tls_cert_file`` with ``prefix="kafka_tls_"``), and
    every error names the key. Missing or empty values take the defaults. A key that starts with ``prefix`` but
    names no setting is an error, so a typo is not silently ignored. The files are loaded into a context once,
    which shows they exist and parse and that the key matches the certificate. The rules are parsed too.
    """
    names = [f.name for f in fields(TlsSettings)]
    try:
        for key in mapping:
            if key.startswith(prefix) and key[len(prefix) :] not in names:
                raise TlsConfigError(key[len(prefix) :], f"unknown TLS setting (known: {', '.join(names)})")
        values: dict[str, str] = {}
        for name in names:
            raw = mapping.get(prefix + name)
            if isinstance(raw, Path):
                raw = str(raw)
            if raw is None or raw == "":
                continue
            if not isinstance(raw, str):
                raise TlsConfigError(name, f"expected a string, got {type(raw).__name__}")
            values[name] = raw
        settings = _settings_from_strings(values)
        server_context(settings)
        parse_principal_rules(settings.principal_mapping_rules)
    except TlsConfigError as e:
        raise e.with_prefix(prefix) from None
    return settings


def _settings_from_strings(values: Mapping[str, str]) -> TlsSettings:
    if "cert_file" not in values:
        raise TlsConfigError("cert_file", "required: the PEM certificate chain the listener presents")
    client_auth = ClientAuth.NONE
    if "client_auth" in values:
        text = values["client_auth"].strip().lower()
        try:
            client_auth = ClientAuth(text)
        except ValueError:
            allowed = ", ".join(a.value for a in ClientAuth)
            raise TlsConfigError("client_auth", f"{values['client_auth']!r} is not one of {allowed}") from None
    key_file = values.get("key_file")
    ca_file = values.get("ca_file")
    return TlsSettings(
        cert_file=Path(values["cert_file"]),
        key_file=Path(key_file) if key_file else None,
        key_password=values.get("key_password"),
        ca_file=Path(ca_file) if ca_file else None,
        client_auth=client_auth,
        ciphers=values.get("ciphers", ""),
        min_version=values.get("min_version", "TLSv1.2"),
        principal_mapping_rules=values.get("principal_mapping_rules", "DEFAULT"),
    )


def _tls_version(setting: str, text: str) -> ssl.TLSVersion:
    if text in _TOO_OLD:
        raise TlsConfigError(setting, f"{text} is refused: TLS versions below TLSv1.2 are not allowed")
    version = _VERSIONS.get(text)
    if version is None:
        raise TlsConfigError(setting, f"{text!r} is not one of {', '.join(_VERSIONS)}")
    if version is ssl.TLSVersion.TLSv1_3 and not ssl.HAS_TLSv1_3:
        raise TlsConfigError(setting, f"TLSv1.3 is not supported by this OpenSSL ({ssl.OPENSSL_VERSION})")
    return version


# ---------------------------------------------------------------------------------------------------------------
# Contexts


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A listener's context: TLS 1.2+ (or 1.3+), the configured ciphers, the key and chain, the client CAs and the
    client-certificate mode; no compression, no renegotiation. Raises ``TlsConfigError`` naming the setting at
    fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _protocol(ctx, settings.min_version, settings.ciphers)
    # Python's server defaults include both; set here so the guarantee does not hang on a default.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = _VERIFY_MODE[settings.client_auth]
    if settings.ca_file is not None:
        _load_trust(ctx, "ca_file", settings.ca_file)
    _load_identity(ctx, settings.cert_file, settings.key_file, settings.key_password)
    return ctx


def client_context(
    ca_file: Path | None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    key_password: str | None = None,
    check_hostname: bool = True,
    min_version: str = "TLSv1.2",
    ciphers: str = "",
) -> ssl.SSLContext:
    """A context for the broker's own connections (replica fetchers, other brokers' listeners).

    It always verifies the server's certificate: against ``ca_file``, or the system's CAs without one. With
    ``cert_file`` it presents a client certificate (a listener with client_auth=required). ``check_hostname`` is
    Kafka's ``ssl.endpoint.identification.algorithm`` (https: on; empty: off): off, any certificate the CAs
    signed is accepted, whatever name it is for.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _protocol(ctx, min_version, ciphers)
    ctx.check_hostname = check_hostname
    if ca_file is not None:
        _load_trust(ctx, "ca_file", ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None:
        _load_identity(ctx, cert_file, key_file, key_password)
    elif key_file is not None:
        raise TlsConfigError("key_file", "set without cert_file")
    return ctx


def _protocol(ctx: ssl.SSLContext, min_version: str, ciphers: str) -> None:
    ctx.minimum_version = _tls_version("min_version", min_version)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TlsConfigError(
                "ciphers", f"{ciphers!r} selects no cipher suite {ssl.OPENSSL_VERSION} offers"
            ) from None


def _read_pem(setting: str, path: Path) -> bytes:
    """The file's bytes, or a TlsConfigError that says what is wrong with it."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise TlsConfigError(setting, f"{path}: not a regular file")
            if st.st_size > TLS_FILE_BYTES_MAX:
                raise TlsConfigError(setting, f"{path}: {st.st_size} bytes, more than {TLS_FILE_BYTES_MAX}")
            data = f.read(TLS_FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        raise TlsConfigError(setting, f"{path}: no such file") from None
    except IsADirectoryError:
        raise TlsConfigError(setting, f"{path}: is a directory") from None
    except PermissionError:
        raise TlsConfigError(setting, f"{path}: not readable by this process") from None
    except OSError as e:
        raise TlsConfigError(setting, f"{path}: {e.strerror or e}") from None
    if not data:
        raise TlsConfigError(setting, f"{path}: empty")
    return data


def _load_trust(ctx: ssl.SSLContext, setting: str, ca_file: Path) -> None:
    pem = _read_pem(setting, ca_file)
    if _PEM_CERTIFICATE not in pem:
        raise TlsConfigError(setting, f"{ca_file}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as e:
        raise TlsConfigError(setting, f"{ca_file}: its certificates do not parse ({e.reason or e})") from None
    except OSError as e:  # replaced or made unreadable since it was read
        raise TlsConfigError(setting, f"{ca_file}: {e.strerror or e}") from None


class _KeyNeedsPassword(Exception):
    pass


def _load_identity(ctx: ssl.SSLContext, cert_file: Path, key_file: Path | None, key_password: str | None) -> None:
    """The certificate chain and its key, each checked on its own first, so an error names the file at fault."""
    cert_pem = _read_pem("cert_file", cert_file)
    if _PEM_CERTIFICATE not in cert_pem:
        raise TlsConfigError("cert_file", f"{cert_file}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        # PEM blocks other than certificates (a key kept in the same file) are skipped.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem.decode("latin-1"))
    except ssl.SSLError as e:
        raise TlsConfigError(
            "cert_file", f"{cert_file}: a certificate in it does not parse ({e.reason or e})"
        ) from None
    key_setting, key_path = ("key_file", key_file) if key_file is not None else ("cert_file", cert_file)
    key_pem = _read_pem(key_setting, key_path) if key_file is not None else cert_pem
    if _PEM_PRIVATE_KEY.search(key_pem) is None:
        where = "in it" if key_file is not None else "in it, and key_file is not set"
        raise TlsConfigError(key_setting, f"{key_path}: no PEM private key (-----BEGIN ... PRIVATE KEY-----) {where}")
    encrypted = any(marker in key_pem for marker in _PEM_ENCRYPTED)

    def password() -> str:
        # Without a callable, OpenSSL would prompt on the terminal for the password of an encrypted key.
        if key_password is None:
            raise _KeyNeedsPassword
        return key_password

    try:
        ctx.load_cert_chain(cert_file, key_file, password=password)
    except _KeyNeedsPassword:
        raise TlsConfigError("key_password", f"required: the private key in {key_path} is encrypted") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(
                key_setting, f"{key_path}: the private key does not match the certificate in {cert_file}"
            ) from None
        if encrypted and key_password is not None:
            raise TlsConfigError("key_password", f"does not decrypt the private key in {key_path}") from None
        raise TlsConfigError(key_setting, f"{key_path}: the private key does not load ({e.reason or e})") from None
    except OSError as e:  # replaced or made unreadable since it was read
        raise TlsConfigError(key_setting, f"{key_path}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Reloading


_FileStamp = tuple[str, int, int, int]  # setting, mtime_ns, size, inode


@dataclass(frozen=True, slots=True)
class Reloaded:
    """New handshakes use the files as they are now; open connections keep the certificates they started with."""

    changed: tuple[str, ...]  # the settings whose files changed: cert_file, key_file, ca_file
    reloads: int  # successful reloads since start


@dataclass(frozen=True, slots=True)
class ReloadFailed:
    """The files changed but do not make a context; the previous one stays in use (reported once per change)."""

    error: str


class ReloadingContext:
    """The listener's context, reloaded from its files when they change.

    ``context`` is what the shell gives ``asyncio.start_server(ssl=...)``, once. ``active`` is the context new
    handshakes use; ``context``'s SNI callback moves each new connection onto it. ``maybe_reload`` stats the
    files at most every ``check_interval_ms`` of the injected clock and builds a whole new context when
    something changed. Construction raises ``TlsConfigError`` if the files do not make a context; a failed reload
    never raises.
    """

    def __init__(
        self, settings: TlsSettings, now_ms: int, check_interval_ms: int = TLS_RELOAD_CHECK_INTERVAL_MS
    ) -> None:
        assert check_interval_ms > 0, check_interval_ms
        self.settings = settings
        self.check_interval_ms = check_interval_ms
        # Stamps before the build: files replaced while it runs look changed at the next check and are read again.
        self._stamps = _stamp_files(settings)
        self._context = server_context(settings)
        self._active = self._context
        self._failed: tuple[tuple[_FileStamp, ...] | None, str] | None = None
        self._next_check_ms = now_ms + check_interval_ms
        self.reloads = 0
        self._context.sni_callback = self._select

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @property
    def active(self) -> ssl.SSLContext:
        return self._active

    @property
    def next_check_ms(self) -> int:
        return self._next_check_ms

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, context: ssl.SSLContext) -> None:
        # OpenSSL's servername callback: runs for every ClientHello, before the certificate is chosen. Moving the
        # connection onto the active context (SSL_set_SSL_CTX) gives it that context's certificate chain, key and
        # trust store. Verify mode, versions and ciphers stay the listening context's, and they are the same.
        active = self._active
        if active is not context:
            conn.context = active

    def maybe_reload(self, now_ms: int) -> Reloaded | ReloadFailed | None:
        """Check the files if the interval has passed. None when nothing changed, or when a reload failed again the
        same way on the same files (reported once)."""
        if now_ms < self._next_check_ms:
            return None
        self._next_check_ms = now_ms + self.check_interval_ms
        try:
            stamps = _stamp_files(self.settings)
        except TlsConfigError as e:
            return self._fail(None, str(e))
        if stamps == self._stamps:
            self._failed = None
            return None
        try:
            # Tried again at every check while it fails (the cause may not be the files: EMFILE, say).
            ctx = server_context(self.settings)
        except TlsConfigError as e:
            return self._fail(stamps, str(e))
        changed = tuple(new[0] for new, old in zip(stamps, self._stamps, strict=True) if new != old)
        self._active = ctx
        self._stamps = stamps
        self._failed = None
        self.reloads += 1
        return Reloaded(changed, self.reloads)

    def _fail(self, stamps: tuple[_FileStamp, ...] | None, error: str) -> ReloadFailed | None:
        if self._failed == (stamps, error):  # reported already
            return None
        self._failed = (stamps, error)
        return ReloadFailed(error)


def _stamp_files(settings: TlsSettings) -> tuple[_FileStamp, ...]:
    stamps = []
    for setting, path in (
        ("cert_file", settings.cert_file),
        ("key_file", settings.key_file),
        ("ca_file", settings.ca_file),
    ):
        if path is None:
            continue
        try:
            st = os.stat(path)  # follows symlinks: a Kubernetes secret's ..data switch changes the inode
        except OSError as e:
            raise TlsConfigError(setting, f"{path}: {e.strerror or e}") from None
        stamps.append((setting, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


# ---------------------------------------------------------------------------------------------------------------
# The subject's distinguished name, as Java's X500Principal.getName() (RFC 2253) writes it


class PrincipalError(ValueError):
    """A client certificate gives no principal; the connection is refused, as Kafka fails its authentication."""


class PeerCertificateError(PrincipalError):
    """The peer certificate's subject cannot be read."""


class NoMatchingRule(PrincipalError):
    """No principal mapping rule matches the subject (Kafka's ``SslPrincipalMapper.NoMatchingRule``)."""


# The keywords Java's RFC 2253 form uses (AVAKeyword's rfc2253Compliant entries); every other type is its OID.
_RFC2253_KEYWORDS: Final = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
# The same attribute types under the names Python's getpeercert() dictionary gives them (OpenSSL's long names).
_LONG_NAMES: Final = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
# Value types Java writes as text (AVA.isDerString): UTF8String, PrintableString, T61String, IA5String,
# GeneralString, BMPString. Every other type (and every attribute without a keyword) is "#" + its DER in hex.
_DER_STRING_TAGS: Final = frozenset({0x0C, 0x13, 0x14, 0x16, 0x1B, 0x1E})
_RFC2253_ESCAPED: Final = frozenset(',=+<>#;"\\')
_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06


def _element(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``, which must end by ``end``."""
    if pos + 2 > end:
        raise PeerCertificateError("truncated DER")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise PeerCertificateError("DER tag in high-tag-number form")
    first = der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise PeerCertificateError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise PeerCertificateError("DER element runs past its container")
    return tag, pos, pos + length


def _expect(der: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _element(der, pos, end)
    if got != tag:
        raise PeerCertificateError(f"{what}: expected DER tag {tag:#04x}, got {got:#04x}")
    return start, stop


def _oid_text(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise PeerCertificateError("bad OID")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    head = arcs[0]
    first = [0, head] if head < 40 else [1, head - 40] if head < 80 else [2, head - 80]
    return ".".join(str(arc) for arc in first + arcs[1:])


def _escape_value(text: str) -> str:
    """AVA.toRFC2253String's escaping: \\ before , = + < > # ; " \\ anywhere, NUL as \\00, and \\ before each
    leading or trailing space or carriage return."""
    escaped = "".join("\\" + c if c in _RFC2253_ESCAPED else "\\00" if c == "\x00" else c for c in text)
    start = len(escaped) - len(escaped.lstrip(" \r"))
    stop = len(escaped.rstrip(" \r"))
    if start >= stop:  # nothing but spaces: every one is escaped
        return "".join("\\" + c for c in escaped)
    head = "".join("\\" + c for c in escaped[:start])
    tail = "".join("\\" + c for c in escaped[stop:])
    return head + escaped[start:stop] + tail


def _subject_der_rfc2253(der: bytes) -> str:
    end = len(der)
    cert_start, cert_end = _expect(der, 0, end, _SEQUENCE, "Certificate")
    tbs_start, tbs_end = _expect(der, cert_start, cert_end, _SEQUENCE, "TBSCertificate")
    pos = tbs_start
    tag, _, stop = _element(der, pos, tbs_end)
    if tag == 0xA0:  # [0] EXPLICIT version
        pos = stop
    for _ in range(4):  # serialNumber, signature, issuer, validity
        _, _, pos = _element(der, pos, tbs_end)
    name_start, name_end = _expect(der, pos, tbs_end, _SEQUENCE, "subject")
    rdns: list[str] = []
    pos = name_start
    while pos < name_end:  # each step consumes at least one element: bounded by the certificate's length
        set_start, set_end = _expect(der, pos, name_end, _SET, "RelativeDistinguishedName")
        avas: list[str] = []
        inner = set_start
        while inner < set_end:
            ava_start, ava_end = _expect(der, inner, set_end, _SEQUENCE, "AttributeTypeAndValue")
            oid_start, oid_end = _expect(der, ava_start, ava_end, _OID, "AttributeType")
            oid = _oid_text(der[oid_start:oid_end])
            value_tag, value_start, value_end = _element(der, oid_end, ava_end)
            if value_end != ava_end:
                raise PeerCertificateError("AttributeTypeAndValue has trailing data")
            keyword = _RFC2253_KEYWORDS.get(oid)
            if keyword is not None and value_tag in _DER_STRING_TAGS:
                # As Java: the content bytes read as UTF-8 whatever the string type (a BMPString comes out garbled
                # there too), malformed sequences replaced by U+FFFD.
                text = der[value_start:value_end].decode("utf-8", "replace")
                avas.append(f"{keyword}={_escape_value(text)}")
            else:
                avas.append(f"{keyword or oid}=#{der[oid_end:value_end].hex()}")
            inner = ava_end
        rdns.append("+".join(avas))
        pos = set_end
    return ",".join(reversed(rdns))


def _subject_dict_rfc2253(cert: Mapping[str, object]) -> str:
    subject = cert.get("subject", ())
    if not isinstance(subject, tuple):
        raise PeerCertificateError("getpeercert() dictionary without a subject tuple")
    rdns: list[str] = []
    for rdn in subject:
        avas: list[str] = []
        for attribute in rdn:
            name, value = attribute
            if not isinstance(name, str) or not isinstance(value, str):
                raise PeerCertificateError(f"subject attribute {attribute!r} is not a (name, value) pair of strings")
            keyword = _LONG_NAMES.get(name)
            if keyword is None:
                # Java writes these as the OID and the value's DER, which the dictionary does not keep.
                raise PeerCertificateError(
                    f"subject attribute {name!r} needs the DER certificate: getpeercert(binary_form=True)"
                )
            avas.append(f"{keyword}={_escape_value(value)}")
        rdns.append("+".join(avas))
    return ",".join(reversed(rdns))


def distinguished_name(cert: bytes | Mapping[str, object]) -> str:
    """The certificate's subject as Java's ``X500Principal.getName()`` writes it, the string Kafka's rules see.

    ``cert`` is the DER certificate (``ssl_object.getpeercert(binary_form=True)``), which gives the exact string
    for every subject. A ``getpeercert()`` dictionary works for subjects made only of the RFC 2253 keyword types
    (CN, C, L, ST, O, OU, STREET, DC, UID), which is the common case.
    """
    if isinstance(cert, bytes | bytearray | memoryview):
        return _subject_der_rfc2253(bytes(cert))
    return _subject_dict_rfc2253(cert)


def principal_from_certificate(cert: bytes | Mapping[str, object] | None, mapper: PrincipalMapper) -> str:
    """Kafka's principal for a TLS connection: ``ANONYMOUS`` without a client certificate, else "User:" + the
    mapped subject. Raises ``PrincipalError`` (``NoMatchingRule``, ``PeerCertificateError``) when there is none:
    the shell then closes the connection, as Kafka fails the authentication."""
    if cert is None or (not isinstance(cert, bytes | bytearray | memoryview) and not cert):
        return ANONYMOUS
    return USER_PREFIX + mapper.name(distinguished_name(cert))


# ---------------------------------------------------------------------------------------------------------------
# ssl.principal.mapping.rules: a port of Kafka's SslPrincipalMapper

# Java's "." and "$" (without DOTALL and MULTILINE): "." stops at every line terminator, "$" matches at the end or
# before a final one. The two regular expressions below are Kafka's, with these spelled out for Python's re.
_JAVA_DOT: Final = r"[^\n\r\x85\u2028\u2029]"
_JAVA_END: Final = r"(?=(?:\r\n|[\n\r\x85\u2028\u2029])?\Z)"
# Kafka's RULE_PATTERN as written there; every "." in it is Java's "any character but a line terminator".
_RULE: Final = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)".replace(".", _JAVA_DOT)
_RULE_SPLITTER: Final = re.compile(r"\s*(" + _RULE + r")\s*(,\s*|" + _JAVA_END + ")", re.ASCII)
_RULE_PARSER: Final = re.compile(_RULE, re.ASCII)
_BACK_REFERENCE: Final = re.compile(r"\$([0-9]+)")
_JAVA_INT_MAX: Final = 2**31 - 1
_ASCII_ALNUM: Final = frozenset(string.ascii_letters + string.digits)
_JAVA_TRIMMED: Final = "".join(chr(c) for c in range(0x21))  # String.trim(): every char up to and including space


def _java_find_all(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """Java's ``while (matcher.find())``: after an empty match the next search starts one character later, after
    a non-empty one at its end (where an empty match may follow). At most len(text) + 1 matches."""
    pos = 0
    while pos <= len(text):
        m = pattern.search(text, pos)
        if m is None:
            return
        yield m
        pos = m.end() + 1 if m.end() == m.start() else m.end()


def _java_regex(pattern: str) -> str:
    """Java's named groups ``(?<name>`` as Python spells them; everything else is left to ``re``."""
    out: list[str] = []
    i, depth = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        elif depth == 0 and pattern.startswith("(?<", i) and i + 3 < len(pattern) and pattern[i + 3] in _ASCII_ALNUM:
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


class _BadReplacement(Exception):
    pass


def _escape_literal_back_references(unescaped: str, groups: int) -> str:
    """Kafka's Rule.escapeLiteralBackReferences (from Apache NiFi): ``$N`` past the last group becomes a literal
    ``\\$N``, after cutting digits off N while it is 10 or more ($12 with one group is $1 and a "2"). Positions
    come from the original string while insertions shift the copy, as in Kafka; the result is kept exact."""
    if groups == 0:
        return unescaped
    value = unescaped
    for m in _java_find_all(_BACK_REFERENCE, unescaped):
        digits = m.group(1)
        if digits.startswith("0"):
            continue
        index = int(digits)
        if index > _JAVA_INT_MAX:  # Integer.parseInt throws
            raise _BadReplacement(f"group reference ${digits} is out of range")
        while index > groups and index >= 10:
            index //= 10
        if index > groups:
            start = m.start(1)
            value = value[: start - 1] + "\\" + value[start - 1 :]
    return value


def _java_replacement(replacement: str, groups: int, names: Mapping[str, int]) -> tuple[str | int, ...]:
    """Java's ``Matcher.appendReplacement`` syntax, parsed once: literal text and group numbers. Everything Java
    throws for at match time is raised here."""
    pieces: list[str | int] = []
    literal: list[str] = []
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c == "\\":
            i += 1
            if i == n:
                raise _BadReplacement("character to be escaped is missing (a trailing \\)")
            literal.append(replacement[i])
            i += 1
            continue
        if c != "$":
            literal.append(c)
            i += 1
            continue
        i += 1
        if i == n:
            raise _BadReplacement("illegal group reference: group index is missing (a trailing $)")
        if replacement[i] == "{":
            i += 1
            start = i
            while i < n and replacement[i] in _ASCII_ALNUM:
                i += 1
            name = replacement[start:i]
            if not name:
                raise _BadReplacement("named capturing group has 0 length name")
            if i == n or replacement[i] != "}":
                raise _BadReplacement("named capturing group is missing trailing '}'")
            if name[0].isdigit():
                raise _BadReplacement(f"capturing group name {{{name}}} starts with digit character")
            if name not in names:
                raise _BadReplacement(f"no group with name {{{name}}}")
            ref = names[name]
            i += 1
        else:
            if not "0" <= replacement[i] <= "9":
                raise _BadReplacement(f"illegal group reference ${replacement[i]}")
            ref = int(replacement[i])
            i += 1
            while i < n and "0" <= replacement[i] <= "9":  # the longest number that is still a group
                longer = ref * 10 + int(replacement[i])
                if longer > groups:
                    break
                ref = longer
                i += 1
            if ref > groups:
                raise _BadReplacement(f"no group {ref}: the pattern has {groups}")
        if literal:
            pieces.append("".join(literal))
            literal.clear()
        pieces.append(ref)
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    source: str  # the pattern as written
    replacement: str  # as written
    pieces: tuple[str | int, ...]
    to_lower: bool
    to_upper: bool

    def __str__(self) -> str:  # Kafka's Rule.toString
        if self.pattern is None:
            return "DEFAULT"
        case = "/L" if self.to_lower else "/U" if self.to_upper else ""
        return f"RULE:{self.source}/{self.replacement}{case}"

    def apply(self, dn: str) -> str | None:
        if self.pattern is None:
            return dn
        if self.pattern.fullmatch(dn) is None:
            return None
        out: list[str] = []
        last = 0
        for m in _java_find_all(self.pattern, dn):  # String.replaceAll
            out.append(dn[last : m.start()])
            out.extend(p if isinstance(p, str) else m.group(p) or "" for p in self.pieces)
            last = m.end()
        out.append(dn[last:])
        result = "".join(out)
        if self.to_lower:
            return result.lower()
        if self.to_upper:
            return result.upper()
        return result


class PrincipalMapper:
    """Parsed ``ssl.principal.mapping.rules``: the first rule that matches a subject names the principal."""

    __slots__ = ("rules",)

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        assert rules
        self.rules = rules

    def name(self, dn: str) -> str:
        for rule in self.rules:
            name = rule.apply(dn)
            if name is not None:
                return name
        raise NoMatchingRule(f"No rules apply to {dn}, rules [{', '.join(map(str, self.rules))}]")

    def __str__(self) -> str:  # Kafka's SslPrincipalMapper.toString
        return f"SslPrincipalMapper(rules = [{', '.join(map(str, self.rules))}])"

    __repr__ = __str__


def parse_principal_rules(text: str, setting: str = "principal_mapping_rules") -> PrincipalMapper:
    """Kafka's ``ssl.principal.mapping.rules``: comma-separated ``DEFAULT`` (the whole DN) and
    ``RULE:pattern/replacement/`` with an optional ``L`` or ``U`` after the last slash (lower or upper case). A
    ``/`` inside the pattern or the replacement is written ``\\/``. Empty rules between commas are ignored, as Kafka
    does. Raises ``TlsConfigError`` naming ``setting`` and the rule at fault."""
    rules: list[_Rule] = []
    for split in _java_find_all(_RULE_SPLITTER, text.strip(_JAVA_TRIMMED)):
        rule = split.group(1)
        m = _RULE_PARSER.match(rule)  # Matcher.lookingAt; the last alternative matches the empty string
        assert m is not None
        if m.end() != len(rule):
            raise TlsConfigError(setting, f"invalid rule `{rule}`, unmatched substring: `{rule[m.end() :]}`")
        if m.group(1) is not None:
            rules.append(_Rule(None, "", "", (), False, False))
        elif m.group(2) is not None:
            source, replacement, case = m.group(2), m.group(4), m.group(6)
            try:
                pattern = re.compile(_java_regex(source), re.ASCII)
            except re.error as e:
                raise TlsConfigError(setting, f"rule `{rule}`: the pattern does not compile: {e}") from None
            try:
                escaped = _escape_literal_back_references(replacement, pattern.groups)
                pieces = _java_replacement(escaped, pattern.groups, pattern.groupindex)
            except _BadReplacement as e:
                raise TlsConfigError(setting, f"rule `{rule}`: replacement `{replacement}`: {e}") from None
            rules.append(_Rule(pattern, source, replacement, pieces, case == "L", case == "U"))
    if not rules:
        raise TlsConfigError(
            setting, f"no rules in {text!r}: every client certificate would be refused (DEFAULT: the whole DN)"
        )
    return PrincipalMapper(tuple(rules))
