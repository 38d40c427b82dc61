"""How this broker secures its own Kafka connections to other brokers: one typed setting, built in one place.

Runs in the shard processes (replica fetchers) and the controller process (the liveness probes, the admin API's
requests to shards); ``rafka_shards.ipc.kafka_client.KafkaClient.connect(..., security=...)`` applies it. Every such
connection goes to a broker's inter-broker listener (the address its registration carries), so the setting follows
that listener's security protocol (``BrokerConfig.listener_specs()[0]``), as Kafka's
``security.inter.broker.protocol`` does:

- SSL / SASL_SSL: TLS with ``tls.client_context``, verifying the broker's certificate against ``ssl_ca_file`` and,
  unless ``inter_broker_ssl_check_hostname`` is off, that it names the host connected to (Kafka's default
  ``ssl.endpoint.identification.algorithm=https``). When the listeners ask for client certificates
  (``ssl_client_auth`` requested or required) the broker presents its own ``ssl_cert_file`` / ``ssl_key_file``: on
  an SSL listener its principal is that certificate's.
- SASL_PLAINTEXT / SASL_SSL: a login as ``inter_broker_sasl_username`` with ``inter_broker_sasl_mechanism``
  (``sasl_client``), the principal ``User:<that name>``.

``config.load_config`` has checked that the settings this needs are there (``_check_inter_broker``). The files are
read here, and read again when they change, as the listeners' are (``tls.ReloadingContext``): ``ClientTls.context``
stats them at most every ``TLS_RELOAD_CHECK_INTERVAL_MS`` and builds a new context for the connections made after a
change, so a rotated CA or client certificate is used without a restart. A rebuild that fails keeps the previous
context (the shards' listeners, which read the same files, log why); connections already open keep theirs.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rafka_shards.config import SSL_PREFIX, BrokerConfig, SecurityProtocol
from rafka_shards.security.sasl_client import SaslClientSettings
from rafka_shards.security.tls import (
    TLS_RELOAD_CHECK_INTERVAL_MS,
    ClientAuth,
    TlsConfigError,
    TlsSettings,
    _stamp_files,  # the listeners' own change detection (mtime, size, inode of each file)
    client_context,
    parse_tls_settings,
)


class ClientTls:
    """The TLS context of outgoing connections, rebuilt by ``build`` when the files of ``watched`` change. Pure but
    for the files: the shell passes ``now_ms``."""

    __slots__ = ("_build", "_context", "_next_check_ms", "_stamps", "_watched", "check_interval_ms", "reload_error")

    def __init__(
        self,
        build: Callable[[], ssl.SSLContext],
        watched: TlsSettings | None = None,
        now_ms: int = 0,
        check_interval_ms: int = TLS_RELOAD_CHECK_INTERVAL_MS,
    ) -> None:
        assert check_interval_ms > 0, check_interval_ms
        self._build = build
        self._watched = watched
        self.check_interval_ms = check_interval_ms
        self._stamps = None if watched is None else _stamp_files(watched)  # before the build, as the listeners do
        self._context = build()
        self._next_check_ms = now_ms + check_interval_ms
        self.reload_error: str | None = None  # why the last rebuild failed (the previous context stays in use)

    @classmethod
    def fixed(cls, context: ssl.SSLContext) -> ClientTls:
        """A context that is never rebuilt (tests, contexts made in code)."""
        return cls(lambda: context)

    def context(self, now_ms: int) -> ssl.SSLContext:
        """The context for a connection made now."""
        if self._watched is None or now_ms < self._next_check_ms:
            return self._context
        self._next_check_ms = now_ms + self.check_interval_ms
        try:
            stamps = _stamp_files(self._watched)
            if stamps != self._stamps:
                self._context = self._build()
                self._stamps = stamps
            self.reload_error = None
        except TlsConfigError as e:  # a file half-written or missing: keep what works, look again next time
            self.reload_error = str(e)
        return self._context


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """The security of one outgoing Kafka connection: TLS (``tls``) for SSL and SASL_SSL, a SASL login (``sasl``)
    for SASL_PLAINTEXT and SASL_SSL, neither for PLAINTEXT."""

    protocol: SecurityProtocol
    tls: ClientTls | None = field(default=None, repr=False, compare=False)
    sasl: SaslClientSettings | None = None

    def __post_init__(self) -> None:
        assert (self.tls is not None) == self.protocol.tls, self.protocol
        assert (self.sasl is not None) == self.protocol.sasl, self.protocol


PLAINTEXT: Final = ClientSecurity(SecurityProtocol.PLAINTEXT)


def inter_broker_security(config: BrokerConfig, now_ms: int = 0) -> ClientSecurity:
    """The security of this broker's connections to other brokers' inter-broker listeners. Raises ``ConfigError``
    (naming the setting) when a file cannot be used."""
    protocol = config.listener_specs()[0].protocol
    tls: ClientTls | None = None
    if protocol.tls:
        settings = parse_tls_settings(config.ssl_settings(), prefix=SSL_PREFIX)  # the listeners': checked the same
        tls = ClientTls(lambda: _tls_context(config, settings), settings, now_ms)
    sasl: SaslClientSettings | None = None
    if protocol.sasl:
        sasl = SaslClientSettings(
            config.inter_broker_sasl_mechanism.strip().upper(),
            config.inter_broker_sasl_username,
            config.inter_broker_sasl_password,
        )
    return ClientSecurity(protocol, tls, sasl)


def _tls_context(config: BrokerConfig, settings: TlsSettings) -> ssl.SSLContext:
    if settings.ca_file is None:  # load_config refuses this; a config built by hand may not have been through it
        raise TlsConfigError("ssl_ca_file", "required to verify other brokers' certificates")
    present = settings.client_auth is not ClientAuth.NONE  # the listeners ask for client certificates: give ours
    try:
        return client_context(
            Path(settings.ca_file),
            cert_file=settings.cert_file if present else None,
            key_file=settings.key_file if present else None,
            key_password=settings.key_password if present else None,
            check_hostname=config.inter_broker_ssl_check_hostname,
            min_version=settings.min_version,
            ciphers=settings.ciphers,
        )
    except TlsConfigError as e:
        raise e.with_prefix(SSL_PREFIX) from None
