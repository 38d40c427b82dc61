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

``config.load_config`` has checked that the settings this needs are there (``_check_inter_broker``); the files are
read here, once per process: a rotated client certificate or CA takes a restart of the process to be used for
outgoing connections (the listeners reload theirs).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rafka_shards.config import SSL_PREFIX, BrokerConfig, SecurityProtocol
from rafka_shards.security.sasl_client import SaslClientSettings
from rafka_shards.security.tls import ClientAuth, TlsConfigError, client_context, parse_tls_settings


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """The security of one outgoing Kafka connection: TLS (``ssl_context``) for SSL and SASL_SSL, a SASL login
    (``sasl``) for SASL_PLAINTEXT and SASL_SSL, neither for PLAINTEXT."""

    protocol: SecurityProtocol
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    sasl: SaslClientSettings | None = None

    def __post_init__(self) -> None:
        assert (self.ssl_context is not None) == self.protocol.tls, self.protocol
        assert (self.sasl is not None) == self.protocol.sasl, self.protocol


PLAINTEXT: Final = ClientSecurity(SecurityProtocol.PLAINTEXT)


def inter_broker_security(config: BrokerConfig) -> ClientSecurity:
    """The security of this broker's connections to other brokers' inter-broker listeners. Raises ``ConfigError``
    (naming the setting) when a file cannot be used."""
    protocol = config.listener_specs()[0].protocol
    context: ssl.SSLContext | None = None
    if protocol.tls:
        context = _tls_context(config)
    sasl: SaslClientSettings | None = None
    if protocol.sasl:
        sasl = SaslClientSettings(
            config.inter_broker_sasl_mechanism.strip().upper(),
            config.inter_broker_sasl_username,
            config.inter_broker_sasl_password,
        )
    return ClientSecurity(protocol, context, sasl)


def _tls_context(config: BrokerConfig) -> ssl.SSLContext:
    settings = parse_tls_settings(config.ssl_settings(), prefix=SSL_PREFIX)  # the listeners' own: checked the same way
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
