"""What the admin API needs of the controller process, as narrow Protocols: the admin package imports nothing of
``rafka_shards.controller_node``, which builds an ``AdminPorts`` from its own objects and hands it to ``start_admin``.

Runs in the controller process. Each Protocol is one concern: the applied metadata image with its ReadIndex barrier,
proposing commands, the node's shard processes, and the Raft quorum as this node sees it. Calls that need the quorum
and find no leader raise ``CommandRejected`` (``CONTROLLER_UNAVAILABLE``), which the HTTP layer turns into a 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.acls import parse_super_users
from controller.balancer import BalancerStatus
from controller.commands import Command
from controller.image import MetadataImage
from controller.raft.node import Status
from controller.topics import TopicProposal
from rafka_shards.config import ADMIN_SSL_PREFIX, BrokerConfig, ConfigError
from rafka_shards.ipc.channel import Stats
from rafka_shards.security.admin_auth import AdminPolicy, BootstrapUser, parse_bootstrap_user, read_tokens_file
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity
from rafka_shards.security.tls import TlsSettings, parse_tls_settings


class MetadataReader(Protocol):
    """This node's applied metadata image (the Raft controller's)."""

    @property
    def image(self) -> MetadataImage: ...

    async def read_barrier(self) -> int:
        """Returns once the image has applied everything committed when it was called (ReadIndex)."""
        ...


class MetadataProposer(Protocol):
    """Commits metadata commands through the quorum (a follower forwards them to the leader)."""

    async def propose(self, cmd: Command) -> int:
        """The command's offset once committed and applied by this node's shards; raises CommandRejected."""
        ...

    async def propose_topic(self, proposal: TopicProposal) -> int:
        """A topic request planned and committed by the Raft leader: its last command's offset once applied by this
        node's shards; raises TopicRejected or CommandRejected."""
        ...


class ShardSessionView(Protocol):
    """A shard's controller channel: how far it has applied the metadata."""

    @property
    def applied_offset(self) -> int: ...

    @property
    def metadata_lag(self) -> int: ...


class ShardView(Protocol):
    """One shard process of this node as the supervisor last reported it."""

    @property
    def index(self) -> int: ...

    @property
    def broker_id(self) -> int: ...

    @property
    def listen(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def restarts_total(self) -> int: ...

    @property
    def last_exit(self) -> str | None: ...

    @property
    def session(self) -> ShardSessionView | None: ...


class NodeView(Protocol):
    """This node's controller process and its shard processes."""

    @property
    def ready(self) -> bool:
        """Every shard is ready and the node is neither starting nor stopping."""
        ...

    @property
    def shard_count(self) -> int: ...

    @property
    def slots(self) -> Sequence[ShardView]: ...

    @property
    def pid(self) -> int: ...

    @property
    def restarts(self) -> int:
        """Times the supervisor restarted this controller process."""
        ...

    async def gather_stats(self) -> dict[int, Stats]:
        """The live state of every ready shard (log offsets and sizes, connections), by shard index."""
        ...


class Histogram(Protocol):
    @property
    def sum(self) -> float: ...

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of observations up to it) per bucket, ``+Inf`` last."""
        ...


class Quorum(Protocol):
    """The controller quorum as this node sees it, and changes to its membership."""

    def status(self) -> Status: ...

    @property
    def applied_offset(self) -> int: ...

    @property
    def leader_changes(self) -> int: ...

    @property
    def fsync_seconds(self) -> Histogram: ...

    @property
    def dropped_frames(self) -> Mapping[str, int]:
        """Controller frames dropped, by reason."""
        ...

    def links(self) -> dict[str, dict[str, object]]:
        """Each outgoing link's state and counters."""
        ...

    @property
    def judges_leases(self) -> bool:
        """This node is the active controller: it knows how long each broker's lease still runs."""
        ...

    def lease_remaining_ms(self, broker_id: int) -> int | None:
        """How long the broker's lease still runs (None: not heard from yet); only while ``judges_leases``."""
        ...

    def balancer_status(self) -> BalancerStatus:
        """The partition balancer as this node sees it (it proposes only on the active controller)."""
        ...

    async def add_voter(self, node_id: int) -> None:
        """Add a node as a learner, then promote it to voter once it has caught up."""
        ...

    async def remove_voter(self, node_id: int) -> int:
        """Remove a voter; the offset of the configuration change."""
        ...


@dataclass(frozen=True, slots=True)
class AdminSecurity:
    """The admin port's security settings (``admin_api_require_auth``, ``admin_ssl_*``...), checked."""

    require_auth: bool = False
    super_users: frozenset[str] = frozenset()
    metrics_open: bool = True
    tokens_file: Path | None = None
    failed_auth_delay_ms: int = 0  # a failed login is answered after this long
    tls: TlsSettings | None = None  # None: plain HTTP
    bootstrap_user: BootstrapUser | None = None  # created at start unless it exists

    @property
    def policy(self) -> AdminPolicy:
        return AdminPolicy(self.require_auth, self.super_users, self.metrics_open)

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    @classmethod
    def from_config(cls, config: BrokerConfig) -> AdminSecurity:
        """The settings of ``config``; ``ConfigError`` naming the setting when one is malformed, the token file does
        not parse or the certificate files do not make a TLS context."""
        try:
            super_users = parse_super_users(config.super_users)
        except ValueError as e:
            raise ConfigError("super_users: " + str(e).removeprefix("super.users: ")) from None
        tokens_file = Path(config.admin_api_tokens_file) if config.admin_api_tokens_file else None
        if tokens_file is not None:
            try:
                read_tokens_file(tokens_file)
            except ConfigError as e:
                raise ConfigError(f"admin_api_tokens_file: {e}") from None
        tls = None
        if config.admin_ssl_cert_file:
            tls = parse_tls_settings(config.admin_ssl_settings(), prefix=ADMIN_SSL_PREFIX)
        else:
            given = [k for k, v in config.admin_ssl_settings().items() if v and k in _ADMIN_SSL_NEEDING_CERT]
            if given:
                raise ConfigError(f"{', '.join(sorted(given))}: set without admin_ssl_cert_file (HTTPS is off)")
        return cls(
            require_auth=config.admin_api_require_auth,
            super_users=super_users,
            metrics_open=config.admin_metrics_open,
            tokens_file=tokens_file,
            failed_auth_delay_ms=config.connection_failed_authentication_delay_ms,
            tls=tls,
            bootstrap_user=parse_bootstrap_user(config.bootstrap_user) if config.bootstrap_user else None,
        )


_ADMIN_SSL_NEEDING_CERT = frozenset({"admin_ssl_key_file", "admin_ssl_key_password", "admin_ssl_ca_file"})


@dataclass(frozen=True, slots=True)
class AdminPorts:
    """Everything the admin API is given."""

    metadata: MetadataReader
    proposer: MetadataProposer
    node: NodeView
    quorum: Quorum
    metrics_dir: Path  # prometheus-client's multiprocess files, written by the shards
    data_dir: Path  # the node's data directory (its filesystem's size and free space are gauges)
    default_partitions: int  # of a topic created without a partition count
    default_replication_factor: int
    security: AdminSecurity = AdminSecurity()
    # How the admin API's Kafka requests to brokers (groups, offsets) reach their inter-broker listener.
    inter_broker: ClientSecurity = PLAINTEXT
