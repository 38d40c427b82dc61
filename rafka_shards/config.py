"""The broker's one typed configuration: every setting and every limit, with its unit, default and bounds.

Runs in the serving process at start-up. Values come, in increasing precedence, from the defaults below, an
optional JSON config file (``--config``), environment variables ``RAFKA_<NAME>`` and command-line flags. Each
field's metadata carries its documentation and bounds, so ``serve --help`` and validation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SHARDS_MAX = 256
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class Durability(enum.Enum):
    """When data is fsynced relative to acknowledging it."""

    # acks=all is acknowledged only after the batch is fsynced (group commit); the high watermark is the fsynced
    # offset, so consumers never see data that a crash could take back.
    FSYNC = "fsync"
    # Kafka's interval mode: fsync every flush_interval_ms; acks=all is acknowledged after the write.
    FLUSH = "flush"


class PartitionBalancerMode(enum.Enum):
    """What the active controller's partition balancer does (``controller.balancer``)."""

    # Replicas of nodes gone longer than node_unavailable_timeout_ms are re-created elsewhere; replica and leader
    # counts are evened out (a node that joins gets its share).
    CONTINUOUS = "continuous"
    OFF = "off"  # partitions move only when an operator reassigns them or a broker is decommissioned


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of bounds; the message names the setting."""


class SecurityProtocol(enum.Enum):
    """A listener's security protocol (Kafka's ``listener.security.protocol.map`` values)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


# The protocols a listener may use (all of Kafka's, the inter-broker listener's too).
SUPPORTED_PROTOCOLS = frozenset(SecurityProtocol)
# What --sasl-enabled-mechanisms may list (Kafka's default, GSSAPI, and OAUTHBEARER are not implemented).
SASL_MECHANISMS_SUPPORTED = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
LISTENERS_MAX = 8
_LISTENER_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Fields of the ``ssl_*`` settings, in rafka_shards.security.tls.TlsSettings' names after the prefix.
SSL_PREFIX = "ssl_"
ADMIN_SSL_PREFIX = "admin_ssl_"


def _setting(default: Any, doc: str, lo: int | None = None, hi: int | None = None, *, secret: bool = False) -> Any:
    """One setting; a ``secret`` one is left out of the config's repr (a traceback or a log line never shows it)."""
    return field(default=default, repr=not secret, metadata={"doc": doc, "min": lo, "max": hi})


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, what: str) -> Endpoint:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{what}: port {port} is outside 0..65535")
        return cls(host.strip("[]"), port)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    data_dir: Path = _setting(Path("rafka-data"), "directory holding the metadata log and partition logs")
    shards: str = _setting("auto", f"shard processes on this node: 1..{SHARDS_MAX}, or auto (one per usable CPU core)")
    listen: str = _setting("127.0.0.1:9092", "HOST:PORT of shard 0's Kafka listener; shard i listens on PORT+i")
    advertise: str = _setting("", "HOST:PORT given to clients for shard 0 (shard i: PORT+i); default: the listener")
    # Named listeners, Kafka's syntax. Each shard serves each listener on the listener's port + its index.
    listeners: str = _setting(
        "",
        "NAME://HOST:PORT,... named listeners of shard 0 (shard i: PORT+i); the inter-broker one replaces --listen "
        "(default: one PLAINTEXT listener on --listen)",
    )
    advertised_listeners: str = _setting(
        "", "NAME://HOST:PORT,... what clients of each listener are told (default: its address, or --advertise)"
    )
    listener_security_protocol_map: str = _setting(
        "",
        "NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL); default: listeners named after one of these "
        "protocols use it",
    )
    inter_broker_listener_name: str = _setting(
        "", "the listener replicas, the controller's probes and the admin API use (default: the first listener)"
    )
    ssl_cert_file: str = _setting("", "SSL listeners: PEM certificate chain the shards present")
    ssl_key_file: str = _setting("", "SSL listeners: PEM private key (default: in ssl_cert_file)")
    ssl_key_password: str = _setting("", "SSL listeners: password of an encrypted ssl_key_file", secret=True)
    ssl_ca_file: str = _setting("", "SSL listeners: PEM CA certificates client certificates must chain to")
    ssl_client_auth: str = _setting("none", "SSL listeners: client certificates: none, requested or required")
    ssl_ciphers: str = _setting("", "SSL listeners: OpenSSL cipher list for TLS 1.2 (default: Python's)")
    ssl_min_version: str = _setting("TLSv1.2", "SSL listeners: TLSv1.2 or TLSv1.3")
    ssl_principal_mapping_rules: str = _setting(
        "DEFAULT", "SSL listeners: Kafka's ssl.principal.mapping.rules from a client certificate's subject"
    )
    sasl_enabled_mechanisms: str = _setting(
        "SCRAM-SHA-256,SCRAM-SHA-512",
        "SASL listeners: the mechanisms SaslHandshake offers, of SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (PLAIN sends "
        "the password: use it on SASL_SSL)",
    )
    connections_max_reauth_ms: int = _setting(
        0,
        "SASL listeners: a session lasts this long, then the client must re-authenticate (KIP-368) or its "
        "connection is closed; 0: sessions never expire",
        0,
        2**31 - 1,
    )
    connection_failed_authentication_delay_ms: int = _setting(
        100,
        "SASL listeners: a failed authentication is answered, and the connection closed, after this delay",
        0,
        60_000,
    )
    # Inter-broker clients (replica fetchers, the controller's probes, the admin API's requests to shards) on a
    # SASL inter-broker listener authenticate with these; on an SSL one they verify the shards' certificates with
    # ssl_ca_file and present ssl_cert_file when client certificates are asked for.
    inter_broker_sasl_mechanism: str = _setting(
        "SCRAM-SHA-512", "SASL inter-broker listener: the mechanism brokers log in to each other with"
    )
    inter_broker_sasl_username: str = _setting("", "SASL inter-broker listener: the user brokers log in as")
    inter_broker_sasl_password: str = _setting("", "SASL inter-broker listener: that user's password", secret=True)
    inter_broker_ssl_check_hostname: bool = _setting(
        True,
        "SSL inter-broker listener: a broker's certificate must name the host it is reached at (Kafka's "
        "ssl.endpoint.identification.algorithm=https); off: any certificate ssl_ca_file signed will do",
    )
    # Authorization (controller.acls): ACLs stored in the metadata log, enforced by every shard.
    authorization_enabled: bool = _setting(
        False, "enforce ACLs on every Kafka API (Kafka's StandardAuthorizer); off: every principal may do anything"
    )
    super_users: str = _setting(
        "", "principals allowed everything, ;-separated (User:admin;User:broker); also the admin API's superusers"
    )
    allow_everyone_if_no_acl_found: bool = _setting(
        False, "with authorization on: a resource no ACL names is open to every principal"
    )
    # The admin API's own security (Redpanda's model: authenticated users read, superusers change).
    admin_api_require_auth: bool = _setting(
        False,
        "admin API: every request but /v1/status/* (and /metrics, see admin_metrics_open) needs HTTP Basic with a "
        "SCRAM user or a bearer token; changes need a superuser",
    )
    admin_api_tokens_file: str = _setting(
        "", "admin API: a file of 'TOKEN PRINCIPAL' lines accepted as 'Authorization: Bearer TOKEN' (re-read on change)"
    )
    admin_metrics_open: bool = _setting(True, "admin API: /metrics needs no authentication (for Prometheus)")
    bootstrap_user: str = _setting(
        "",
        "NAME:PASSWORD[:MECHANISM] of a SCRAM user created at start unless it exists (Redpanda's RP_BOOTSTRAP_USER; "
        "give it as RAFKA_BOOTSTRAP_USER, never as a flag: ps shows flags)",
    )
    admin_ssl_cert_file: str = _setting("", "admin API over HTTPS: PEM certificate chain ('' plain HTTP)")
    admin_ssl_key_file: str = _setting("", "admin API over HTTPS: PEM private key (default: in admin_ssl_cert_file)")
    admin_ssl_key_password: str = _setting(
        "", "admin API over HTTPS: password of an encrypted admin_ssl_key_file", secret=True
    )
    admin_ssl_ca_file: str = _setting("", "admin API over HTTPS: CA certificates client certificates must chain to")
    admin_ssl_client_auth: str = _setting(
        "none", "admin API over HTTPS: client certificates: none, requested or required"
    )
    admin_ssl_ciphers: str = _setting("", "admin API over HTTPS: OpenSSL cipher list for TLS 1.2")
    admin_ssl_min_version: str = _setting("TLSv1.2", "admin API over HTTPS: TLSv1.2 or TLSv1.3")
    # Client quotas (KIP-13, KIP-124, KIP-219): rates measured over quota_windows windows of quota_window_ms.
    quota_window_ms: int = _setting(1000, "client quotas: the length of one measurement window", 100, 60_000)
    quota_windows: int = _setting(11, "client quotas: windows a rate is measured over", 2, 100)
    # The audit log (rafka_shards.security.audit).
    audit_enabled: bool = _setting(
        False, "write authentication results, authorization denials and every change as JSON lines"
    )
    audit_log_dir: str = _setting("", "where the audit log's files are (default: DATA_DIR/audit)")
    audit_log_max_bytes: int = _setting(100 * MIB, "an audit log file is rotated at this size", 4 * KIB, 64 * GIB)
    audit_log_backups: int = _setting(10, "rotated audit log files kept", 0, 10_000)
    audit_log_to_topic: bool = _setting(
        False, "also append every audit event to the internal topic _rafka.audit_log (as Redpanda does)"
    )
    admin_listen: str = _setting("127.0.0.1:9644", "HOST:PORT of the node's HTTP admin and /metrics endpoint ('' off)")
    broker_id: int = _setting(0, "Kafka broker id of shard 0; shard i is broker_id+i", 0, 2**31 - 1 - SHARDS_MAX)
    rack: str = _setting("", "rack reported for this node's brokers in Metadata (default: the host name)")
    log_level: str = _setting("INFO", "logging level: DEBUG, INFO, WARNING, ERROR")

    # The metadata controller (a Raft quorum; one voter, on this node, unless controller_voters says otherwise).
    node_id: int = _setting(1, "this node's id in the controller quorum", 1, 2**31 - 1)
    controller_voters: str = _setting(
        "", "the first voters: ID@HOST:PORT,... (empty: this node alone); only read when the quorum is created"
    )
    controller_listen: str = _setting("", "HOST:PORT for Raft traffic from other nodes (default: its voter entry)")
    controller_peers: str = _setting("", "ID@HOST:PORT,... of nodes that are not first voters (learners added later)")
    controller_secret: str = _setting(
        "", "shared secret: every controller-to-controller frame carries its HMAC", secret=True
    )
    cluster_id: str = _setting("", "cluster id for a new quorum (default: random for one node, derived from voters)")
    raft_election_timeout_ms: int = _setting(1000, "Raft election timeout (randomized up to twice this)", 50, 60_000)
    raft_heartbeat_interval_ms: int = _setting(100, "Raft heartbeat interval", 10, 10_000)
    broker_heartbeat_interval_ms: int = _setting(
        1000, "how often each broker (shard) renews its lease with the controller", 10, 60_000
    )
    broker_session_timeout_ms: int = _setting(
        6000, "a broker not heard from for this long is fenced: its partitions get new leaders", 100, 600_000
    )
    broker_probe_interval_ms: int = _setting(
        250,
        "the active controller asks every unfenced broker's listener for ApiVersions this often; a broker whose "
        "connection closes and whose port then refuses connections (its node is gone) is fenced at once; 0: off",
        0,
        60_000,
    )
    broker_probe_timeout_ms: int = _setting(
        1000,
        "a liveness probe unanswered for this long is retried (never fences: that is the session's job)",
        10,
        60_000,
    )
    controller_snapshot_entries: int = _setting(
        10_000, "metadata entries applied since the last snapshot that trigger a new one", 10, 10_000_000
    )

    # Supervision of shard processes (and of the controller process, by the same rule).
    shard_restart_backoff_ms: int = _setting(
        500, "first delay before restarting a dead shard or controller process (doubles)", 0, 600_000
    )
    shard_restart_backoff_max_ms: int = _setting(
        30_000, "longest delay before restarting a dead shard or controller process", 0, 3_600_000
    )
    shard_restarts_max: int = _setting(
        10, "restarts of one child within shard_restart_window_ms before the node gives up (exit 1)", 1, 10_000
    )
    shard_restart_window_ms: int = _setting(300_000, "window of shard_restarts_max", 1000, 86_400_000)
    metadata_propagation_timeout_ms: int = _setting(
        10_000, "how long a metadata change waits for every shard to apply it before answering anyway", 100, 600_000
    )

    # Topics.
    auto_create_topics: bool = _setting(True, "create unknown topics on Metadata/Produce, as Kafka does")
    default_partitions: int = _setting(1, "partitions of an auto-created topic (Kafka's num.partitions)", 1, 10_000)
    default_replication_factor: int = _setting(1, "replication factor when a request says -1", 1, 16)

    # Partition replication (followers fetch from the leader, as in Kafka).
    replica_lag_time_max_ms: int = _setting(
        10_000,
        "a follower that has not caught up for this long leaves the ISR (Kafka's replica.lag.time.max.ms)",
        100,
        3_600_000,
    )
    replica_fetch_wait_max_ms: int = _setting(
        500, "how long a follower's fetch waits at the leader for data", 1, 60_000
    )
    replica_fetch_max_bytes: int = _setting(8 * MIB, "upper bound on one follower fetch response", 1024, GIB)
    reassignment_max_bytes_per_second: int = _setting(
        100 * MIB,
        "how fast each shard copies logs into its new replicas of reassignments (in-sync followers are not throttled)",
        1024,
        2**40,
    )

    # Durability.
    durability: Durability = _setting(Durability.FSYNC, "fsync: acks=all after fsync; flush: interval fsync")
    flush_interval_ms: int = _setting(1000, "in flush mode, the longest time written data stays unsynced", 1, 3_600_000)
    fsync_threads: int = _setting(4, "worker threads that run fsync for group commit", 1, 64)
    storage_min_free_bytes: int = _setting(
        256 * MIB, "produce gets KAFKA_STORAGE_ERROR while the data dir's filesystem has less free", 0, 2**62
    )

    # Log defaults (topic configs override them per topic).
    log_segment_bytes: int = _setting(GIB, "segment.bytes default", 14, GIB)
    log_segment_ms: int = _setting(7 * 24 * 3600 * 1000, "segment.ms default", 1, 2**62)
    log_retention_ms: int = _setting(7 * 24 * 3600 * 1000, "retention.ms default (-1 unlimited)", -1, 2**62)
    log_retention_bytes: int = _setting(-1, "retention.bytes default (-1 unlimited)", -1, 2**62)
    log_retention_check_interval_ms: int = _setting(300_000, "how often retention runs", 100, 86_400_000)
    log_cleaner_threads: int = _setting(1, "log cleaner passes run at once on this node (0: no compaction)", 0, 64)
    log_cleaner_dedupe_buffer_size: int = _setting(
        128 * MIB, "memory for one pass's key map (24 bytes a key, as Kafka counts)", 24 * 1024, 64 * GIB
    )
    log_cleaner_io_max_bytes_per_second: int = _setting(
        0, "cleaner reads and writes per second on this node (0: unthrottled)", 0, 2**62
    )
    log_cleaner_backoff_ms: int = _setting(15_000, "how often each shard looks for a log to clean", 10, 3_600_000)
    log_delete_max_bytes_per_second: int = _setting(
        128 * MIB, "how fast removed segments are freed, per shard (0: unlinked at once)", 0, 2**62
    )
    message_max_bytes: int = _setting(1_048_588, "largest record batch accepted (max.message.bytes)", 64, 256 * MIB)

    # Limits: every buffer and queue has a bound.
    socket_request_max_bytes: int = _setting(100 * MIB, "largest request frame; bigger closes the connection", 64, GIB)
    connections_max: int = _setting(10_000, "open client connections per shard", 1, 1_000_000)
    inflight_requests_per_connection_max: int = _setting(
        64, "requests read from one connection before its responses are written (then reading pauses)", 1, 10_000
    )
    fetch_max_bytes: int = _setting(55 * MIB, "upper bound on one Fetch response (Kafka's fetch.max.bytes)", 1024, GIB)
    fetch_max_wait_ms: int = _setting(30_000, "upper bound on a Fetch's max_wait_ms (long poll)", 0, 300_000)
    produce_timeout_max_ms: int = _setting(300_000, "upper bound on a Produce's timeout_ms", 0, 3_600_000)
    producers_per_partition_max: int = _setting(
        10_000, "idempotent producers remembered per partition (least recently used dropped)", 1, 1_000_000
    )
    # Consumer groups (the group coordinator of the shard leading a group's ``__consumer_offsets`` partition).
    offsets_topic_partitions: int = _setting(50, "partitions of __consumer_offsets, fixed at its creation", 1, 1000)
    offsets_topic_replication_factor: int = _setting(
        3, "replicas of each __consumer_offsets partition (at most one per node: min(this, nodes))", 1, 16
    )
    offsets_topic_segment_bytes: int = _setting(100 * MIB, "segment.bytes of __consumer_offsets", 1 * MIB, GIB)
    offsets_commit_timeout_ms: int = _setting(
        5000, "how long a commit or group write waits for the in-sync replicas", 1, 300_000
    )
    offsets_retention_minutes: int = _setting(
        7 * 24 * 60, "committed offsets of a group that stayed empty this long expire", 1, 2**31 - 1
    )
    offsets_retention_check_interval_ms: int = _setting(600_000, "how often offsets expire", 100, 86_400_000)
    offset_metadata_max_bytes: int = _setting(4096, "longest metadata string of a commit", 0, 1 * MIB)
    group_min_session_timeout_ms: int = _setting(6000, "smallest session timeout a member may ask", 1, 2**31 - 1)
    group_max_session_timeout_ms: int = _setting(1_800_000, "largest session timeout a member may ask", 1, 2**31 - 1)
    group_max_size: int = _setting(
        10_000, "members of one group (with those given an id, not joined yet)", 1, 1_000_000
    )
    group_initial_rebalance_delay_ms: int = _setting(
        3000, "an empty group's first rebalance waits this long for more members", 0, 300_000
    )
    group_consumer_session_timeout_ms: int = _setting(
        45_000, "KIP-848 consumer groups: a member silent this long is removed", 1, 2**31 - 1
    )
    group_consumer_heartbeat_interval_ms: int = _setting(
        5_000, "KIP-848 consumer groups: how often members are told to heartbeat", 1, 2**31 - 1
    )
    group_member_metadata_max_bytes: int = _setting(
        1 * MIB, "protocol metadata of one member (its subscription), summed over its protocols", 64, 64 * MIB
    )
    # The partition balancer (controller.balancer), run by the active controller.
    partition_balancer: PartitionBalancerMode = _setting(
        PartitionBalancerMode.CONTINUOUS,
        "continuous: re-create the replicas of nodes gone too long and even out replica and leader counts; off",
    )
    node_unavailable_timeout_ms: int = _setting(
        900_000,
        "a node whose brokers have all been fenced this long is gone: its replicas are re-created on other nodes",
        1000,
        30 * 86_400_000,
    )
    partition_balancer_moves_max: int = _setting(
        8, "the balancer's moves in flight at once (a reassignment counts until its new replicas caught up)", 1, 1024
    )
    partition_balancer_tick_ms: int = _setting(1000, "how often the balancer looks at the cluster", 100, 3_600_000)
    shutdown_timeout_ms: int = _setting(30_000, "graceful shutdown deadline", 100, 600_000)
    controlled_shutdown_timeout_ms: int = _setting(
        10_000,
        "on SIGTERM, how long a node of a multi-node cluster waits for its partition and Raft leadership to move "
        "to other nodes (maintenance on its brokers, ended when it is back) before stopping anyway; 0: off",
        0,
        600_000,
    )

    @property
    def shard_count(self) -> int:
        """The number of shards: ``shards``, or the CPUs this process may run on when it is ``auto``."""
        if self.shards == "auto":
            return max(1, min(SHARDS_MAX, usable_cpus()))
        return int(self.shards)

    @property
    def metrics_dir(self) -> Path:
        """Where the node's processes keep their metric values (prometheus-client multiprocess files): in memory
        (``/dev/shm``) when there is one, not in the data directory. Those files are grown and written through
        mmap; on a full data disk that write faults and the process dies of SIGBUS. They are of this run only
        (cleared at start), one directory per data directory (a name from its path)."""
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
        digest = hashlib.sha256(str(Path(self.data_dir).resolve()).encode()).hexdigest()[:16]
        return base / f"rafka_shards-metrics-{digest}"

    @property
    def listen_endpoint(self) -> Endpoint:
        return Endpoint.parse(self.listen, "listen")

    @property
    def advertise_endpoint(self) -> Endpoint:
        if self.advertise:
            return Endpoint.parse(self.advertise, "advertise")
        ep = self.listen_endpoint
        if _is_wildcard(ep.host):
            raise ConfigError(f"listen is {ep}: set --advertise to an address clients can reach")
        return ep

    def controller_addresses(self) -> tuple[dict[int, Endpoint], dict[int, Endpoint]]:
        """(first voters, all known controller nodes) from controller_voters and controller_peers."""
        voters = _parse_nodes(self.controller_voters, "controller_voters")
        peers = _parse_nodes(self.controller_peers, "controller_peers")
        both = set(voters) & set(peers)
        if both:
            raise ConfigError(f"controller_peers: nodes {sorted(both)} are already in controller_voters")
        return voters, {**voters, **peers}

    def controller_listen_endpoint(self) -> Endpoint | None:
        if self.controller_listen:
            return Endpoint.parse(self.controller_listen, "controller_listen")
        return self.controller_addresses()[1].get(self.node_id)

    def listener_specs(self) -> tuple[Listener, ...]:
        """Every listener of shard 0, the inter-broker one first (its addresses are ``listen`` and ``advertise``)."""
        if not self.listeners:
            return (Listener("PLAINTEXT", SecurityProtocol.PLAINTEXT, self.listen_endpoint, self.advertise_endpoint),)
        return _parse_listeners(self)

    def sasl_mechanisms(self) -> tuple[str, ...]:
        """``sasl_enabled_mechanisms`` as a tuple, in the order given."""
        names = tuple(dict.fromkeys(filter(None, (n.strip().upper() for n in self.sasl_enabled_mechanisms.split(",")))))
        unknown = [n for n in names if n not in SASL_MECHANISMS_SUPPORTED]
        if unknown:
            raise ConfigError(
                f"sasl_enabled_mechanisms: {', '.join(unknown)} not supported (supported: "
                f"{', '.join(SASL_MECHANISMS_SUPPORTED)})"
            )
        if not names:
            raise ConfigError("sasl_enabled_mechanisms: no mechanism given")
        return names

    def ssl_settings(self) -> dict[str, str]:
        """The ``ssl_*`` settings, for ``rafka_shards.security.tls.parse_tls_settings(..., prefix=SSL_PREFIX)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith(SSL_PREFIX)}

    def admin_ssl_settings(self) -> dict[str, str]:
        """The ``admin_ssl_*`` settings, for ``parse_tls_settings(..., prefix=ADMIN_SSL_PREFIX)``."""
        fields = dataclasses.fields(self)
        return {f.name: getattr(self, f.name) for f in fields if f.name.startswith(ADMIN_SSL_PREFIX)}

    @property
    def admin_endpoint(self) -> Endpoint | None:
        return Endpoint.parse(self.admin_listen, "admin_listen") if self.admin_listen else None


@dataclass(frozen=True, slots=True)
class Listener:
    """One named listener of a shard: where it binds, what its clients are told, and its security protocol."""

    name: str
    protocol: SecurityProtocol
    bind: Endpoint
    advertised: Endpoint

    def for_shard(self, index: int, bound_port: int) -> Listener:
        """Shard ``index``'s copy: bound on ``bound_port``, advertised on the advertised port + ``index``."""
        adv = self.advertised
        advertised = Endpoint(adv.host, adv.port + index if adv.port else bound_port)
        return Listener(self.name, self.protocol, Endpoint(self.bind.host, bound_port), advertised)

    def spec(self) -> str:
        return f"{self.name}://{_host_port(self.bind)}"

    def advertised_spec(self) -> str:
        return f"{self.name}://{_host_port(self.advertised)}"


def _host_port(ep: Endpoint) -> str:
    return f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}"


_DEFAULT_PROTOCOLS = {p.value: p for p in SecurityProtocol}


def _named_endpoints(text: str, what: str) -> dict[str, Endpoint]:
    """``NAME://HOST:PORT,...`` (an empty host binds every interface, as in Kafka)."""
    out: dict[str, Endpoint] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("://")
        if not sep or not _LISTENER_NAME.fullmatch(name):
            raise ConfigError(
                f"{what}: expected NAME://HOST:PORT with NAME in capitals, digits and _ (INTERNAL://127.0.0.1:9092), "
                f"got {item!r}"
            )
        if name in out:
            raise ConfigError(f"{what}: listener {name} is named twice")
        if address.startswith(":"):
            address = "0.0.0.0" + address
        out[name] = Endpoint.parse(address, f"{what} {name}")
    if len(out) > LISTENERS_MAX:
        raise ConfigError(f"{what}: {len(out)} listeners, at most {LISTENERS_MAX}")
    return out


def _protocol_map(text: str) -> dict[str, SecurityProtocol]:
    if not text:
        return dict(_DEFAULT_PROTOCOLS)
    out: dict[str, SecurityProtocol] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, proto = item.partition(":")
        if not sep or not _LISTENER_NAME.fullmatch(name) or proto not in _DEFAULT_PROTOCOLS:
            raise ConfigError(
                "listener_security_protocol_map: expected NAME:PROTOCOL with PROTOCOL one of "
                f"{', '.join(_DEFAULT_PROTOCOLS)}, got {item!r}"
            )
        if name in out:
            raise ConfigError(f"listener_security_protocol_map: listener {name} is mapped twice")
        out[name] = _DEFAULT_PROTOCOLS[proto]
    return out


def _parse_listeners(config: BrokerConfig) -> tuple[Listener, ...]:
    binds = _named_endpoints(config.listeners, "listeners")
    if not binds:
        raise ConfigError("listeners: no listener given")
    advertised = _named_endpoints(config.advertised_listeners, "advertised_listeners")
    unknown = sorted(set(advertised) - set(binds))
    if unknown:
        raise ConfigError(f"advertised_listeners: {', '.join(unknown)} not in listeners")
    protocols = _protocol_map(config.listener_security_protocol_map)
    ports = [ep.port for ep in binds.values() if ep.port]
    if len(set(ports)) != len(ports):
        raise ConfigError("listeners: two listeners on one port")
    out = []
    for name, bind in binds.items():
        protocol = protocols.get(name)
        if protocol is None:
            raise ConfigError(
                f"listener_security_protocol_map: no security protocol for listener {name} (add {name}:PLAINTEXT "
                "or name the listener after its protocol)"
            )
        if protocol not in SUPPORTED_PROTOCOLS:
            raise ConfigError(f"listeners: {name} uses {protocol.value}, not supported yet")
        adv = advertised.get(name, bind)
        if _is_wildcard(adv.host):
            raise ConfigError(
                f"listeners: {name} binds {bind}: give advertised_listeners an address clients can reach for it"
            )
        out.append(Listener(name, protocol, bind, adv))
    inter = config.inter_broker_listener_name or out[0].name
    first = next((li for li in out if li.name == inter), None)
    if first is None:
        raise ConfigError(f"inter_broker_listener_name: {inter} is not in listeners")
    return (first, *(li for li in out if li is not first))


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on: its affinity mask, bounded by a cgroup v2 CPU quota (a container's CPU limit,
    which the affinity mask does not show)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _check_shards(config: BrokerConfig) -> None:
    text = config.shards.strip()
    if text != "auto" and (not text.isdigit() or not 1 <= int(text) <= SHARDS_MAX):
        raise ConfigError(f"shards: expected auto or a number of shards in 1..{SHARDS_MAX}, got {config.shards!r}")
    count = config.shard_count
    for what, ep in (("listen", config.listen_endpoint), ("advertise", config.advertise_endpoint)):
        if ep.port != 0 and ep.port + count - 1 > 65535:
            raise ConfigError(
                f"{what}: {count} shards need ports {ep.port}..{ep.port + count - 1}, beyond 65535; "
                "use a lower port or fewer shards"
            )
    if config.broker_id + count - 1 > 2**31 - 1:
        raise ConfigError(f"broker_id: {count} shards need broker ids up to {config.broker_id + count - 1}")
    if config.listeners:
        taken: dict[int, str] = {}
        for li in _parse_listeners(config):
            for what, ep in ((li.name, li.bind), (f"{li.name} (advertised)", li.advertised)):
                if ep.port and ep.port + count - 1 > 65535:
                    raise ConfigError(f"listeners: {what} needs ports {ep.port}..{ep.port + count - 1}, beyond 65535")
            for port in range(li.bind.port, li.bind.port + count) if li.bind.port else ():
                if port in taken:
                    raise ConfigError(
                        f"listeners: {li.name} and {taken[port]} both need port {port} ({count} shards each take "
                        "the listener's port + their index)"
                    )
                taken[port] = li.name


def _parse_nodes(text: str, what: str) -> dict[int, Endpoint]:
    out: dict[int, Endpoint] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, address = item.partition("@")
        if not sep or not node.isdigit() or not 0 < int(node) < 2**31:
            raise ConfigError(f"{what}: expected ID@HOST:PORT with ID in 1..2147483647, got {item!r}")
        if int(node) in out:
            raise ConfigError(f"{what}: node {node} is listed twice")
        out[int(node)] = Endpoint.parse(address, what)
    return out


def _check_controller(config: BrokerConfig) -> None:
    voters, known = config.controller_addresses()
    if voters and config.node_id not in known:
        raise ConfigError(f"node_id {config.node_id} is in neither controller_voters nor controller_peers")
    if config.raft_heartbeat_interval_ms * 3 > config.raft_election_timeout_ms:
        raise ConfigError("raft_heartbeat_interval_ms: must be at most a third of raft_election_timeout_ms")
    if config.broker_heartbeat_interval_ms * 3 > config.broker_session_timeout_ms:
        raise ConfigError("broker_heartbeat_interval_ms: must be at most a third of broker_session_timeout_ms")
    config.controller_listen_endpoint()


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def settings() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(BrokerConfig))


def _convert(f: dataclasses.Field[Any], raw: object, source: str) -> Any:
    """Turn a raw value (string from env/flags, JSON value from a file) into the field's type, checking bounds."""
    kind: type[Any] = type(f.default)
    name = f.name
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value: Any = raw
            elif str(raw).lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError(f"expected true/false, got {raw!r}")
        elif kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError(f"expected an integer, got {raw!r}")
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"expected an integer, got {raw!r}") from None
        elif issubclass(kind, enum.Enum):
            value = kind(str(raw))
        elif issubclass(kind, Path):
            value = Path(str(raw))
        else:
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {raw!r}")
            value = raw
    except ValueError as e:
        raise ConfigError(f"{name} (from {source}): {e}") from None
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if isinstance(value, int) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{name} (from {source}): {value} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{name} (from {source}): {value} is above the maximum {hi}")
    return value


def load_config(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> BrokerConfig:
    """Merge defaults < config file < environment < flags into one validated BrokerConfig."""
    fields = {f.name: f for f in settings()}
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = orjson.loads(config_file.read_bytes())
        except OSError as e:
            raise ConfigError(f"config file {config_file}: {e.strerror}") from None
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"config file {config_file}: not valid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: expected a JSON object of settings")
        for key, raw in loaded.items():
            name = str(key).replace("-", "_").replace(".", "_")
            if name not in fields:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _convert(fields[name], raw, f"config file {config_file}")
    env = os.environ if environ is None else environ
    for name, f in fields.items():
        key = "RAFKA_" + name.upper()
        if key in env:
            values[name] = _convert(f, env[key], f"environment {key}")
    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _convert(fields[name], raw, f"--{name.replace('_', '-')}")
    config = BrokerConfig(**values)
    if config.listeners:
        # The inter-broker listener is the one --listen and --advertise describe everywhere else.
        inter = _parse_listeners(config)[0]
        config = dataclasses.replace(config, listen=_host_port(inter.bind), advertise=_host_port(inter.advertised))
    elif config.advertised_listeners or config.listener_security_protocol_map or config.inter_broker_listener_name:
        raise ConfigError(
            "advertised_listeners, listener_security_protocol_map, inter_broker_listener_name: "
            "these need listeners to be set"
        )
    # Parse the endpoints now so a typo fails at start-up with the setting's name.
    config.listen_endpoint  # noqa: B018
    config.advertise_endpoint  # noqa: B018
    config.admin_endpoint  # noqa: B018
    _check_shards(config)
    _check_controller(config)
    if any(spec.protocol.sasl for spec in config.listener_specs()):
        config.sasl_mechanisms()
    _check_inter_broker(config)
    return config


def _check_inter_broker(config: BrokerConfig) -> None:
    """What the brokers' own connections to the inter-broker listener need (``security.client_security`` builds
    them): a SASL login the listener accepts, a CA to verify the brokers' certificates with."""
    protocol = config.listener_specs()[0].protocol
    if protocol.sasl:
        for name in ("inter_broker_sasl_username", "inter_broker_sasl_password"):
            if not getattr(config, name):
                raise ConfigError(
                    f"{name}: required, the inter-broker listener uses {protocol.value} (brokers log in to each other)"
                )
        mechanism = config.inter_broker_sasl_mechanism.strip().upper()
        if mechanism not in SASL_MECHANISMS_SUPPORTED:
            raise ConfigError(
                f"inter_broker_sasl_mechanism: {config.inter_broker_sasl_mechanism} not supported (supported: "
                f"{', '.join(SASL_MECHANISMS_SUPPORTED)})"
            )
        if mechanism not in config.sasl_mechanisms():
            raise ConfigError(
                f"inter_broker_sasl_mechanism: {mechanism} is not in sasl_enabled_mechanisms "
                f"({', '.join(config.sasl_mechanisms())}): the inter-broker listener would refuse it"
            )
        if len(config.inter_broker_sasl_username.encode()) > 255:
            raise ConfigError("inter_broker_sasl_username: longer than 255 bytes")
    if protocol.tls and not config.ssl_ca_file:
        raise ConfigError(
            f"ssl_ca_file: required, the inter-broker listener uses {protocol.value}: brokers verify each other's "
            "certificates against it"
        )
