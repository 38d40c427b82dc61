"""One request's authorization: who sent it, from where, and what the node's ACLs let them do.

Runs in a shard process. ``ShardAuthorization`` is built once per shard from the config (``authorization_enabled``,
``super_users``, ``allow_everyone_if_no_acl_found``); ``access`` makes an ``Access`` for a request from the current
metadata image's ACLs (``MetadataImage.acls``), the connection's principal and client address. Handlers ask it
the questions of Kafka's table (``controller.acls.API_ACLS``) and answer denials with the precise
*_AUTHORIZATION_FAILED code. With authorization off, every question is answered yes and nothing is looked up.

Every denial is counted (``rafka_authorization_denials_total``) and handed to the shard's audit hook, if any.

The inter-broker listener, when it is PLAINTEXT (no one is authenticated there), is trusted: requests on it are not
checked against the ACLs, as the node's own processes (replica fetchers, the admin API) use it as User:ANONYMOUS,
the principal Kafka would need listed in ``super.users``. Bind it where only the cluster's nodes reach it, or make
it SASL: then only the inter-broker user (a super user here without being listed) acts as a broker.

Replica fetches are a separate rule (``Access.replica_fetch``): Kafka trusts a Fetch's ``replica_id`` whenever the
principal has CLUSTER_ACTION; here a replica fetch must also arrive on the inter-broker listener, and, when brokers
log in with SASL (``inter_broker_sasl_username``), from that user or a super user, so a client that can reach a
client listener cannot read as a follower, authorization on or off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from controller.acls import (
    CLUSTER_RESOURCE_NAME,
    SUPPORTED_OPERATIONS,
    AclOperation,
    Authorizer,
    ResourceType,
    kafka_host_address,
    parse_super_users,
)
from rafka_shards.config import BrokerConfig, SecurityProtocol
from rafka_shards.model import ErrorCode, KafkaError

# What a handler answers an authorization failure with, in Kafka's words.
AUTHORIZATION_FAILED_MESSAGE: Final = "Authorization failed."


@dataclass(frozen=True, slots=True)
class Denial:
    """An authorization that failed: what the audit log records."""

    principal: str
    host: str
    listener: str
    api: str
    operation: AclOperation
    resource_type: ResourceType
    resource_name: str


DenialHook = Callable[[Denial], None]


def acl_host(address: str) -> str:
    """A client's IP address as ACL hosts are written (``kafka_host_address``); what is not an IP address (a Unix
    socket, no peer) is compared as given. A connection computes it once."""
    try:
        return kafka_host_address(address)
    except ValueError:
        return address


class ShardAuthorization:
    """The node's authorization settings and the authorizer of the latest ACLs, configured with them."""

    __slots__ = (
        "_configured",
        "_hook",
        "_inter_broker_listener",
        "_inter_broker_user",
        "_source",
        "_trusted_listener",
        "allow_if_no_acl",
        "enabled",
        "super_users",
    )

    def __init__(self, config: BrokerConfig, on_denial: DenialHook | None = None) -> None:
        self.enabled = config.authorization_enabled
        inter = config.listener_specs()[0]
        self._inter_broker_listener = inter.name
        # An inter-broker listener that authenticates no one (PLAINTEXT) is trusted: the node's own processes
        # reach it as User:ANONYMOUS, which Kafka would need in super.users. Bind it where only brokers reach it,
        # or make it SASL (then the inter-broker user is the one trusted).
        self._trusted_listener = inter.name if inter.protocol is SecurityProtocol.PLAINTEXT else None
        self._inter_broker_user = (
            f"User:{config.inter_broker_sasl_username}" if config.inter_broker_sasl_username else None
        )
        supers = set(parse_super_users(config.super_users))
        if self._inter_broker_user is not None:
            # The node's own processes (replica fetchers, the admin API) log in as this user: it must be allowed
            # what they do, so it is a super user without being listed (Kafka asks for it to be listed).
            supers.add(self._inter_broker_user)
        self.super_users = frozenset(supers)
        self.allow_if_no_acl = config.allow_everyone_if_no_acl_found
        self._hook = on_denial
        self._source: Authorizer | None = None
        self._configured: Authorizer | None = None

    def _authorizer(self, acls: Authorizer) -> Authorizer:
        if acls is not self._source:  # the image's ACLs changed: configure the new ones (O(1), the index is shared)
            self._configured = acls.configured(
                super_users=self.super_users, allow_everyone_if_no_acl_found=self.allow_if_no_acl
            )
            self._source = acls
        assert self._configured is not None
        return self._configured

    def access(self, acls: Authorizer, principal: str, client_host: str, listener: str, api: str) -> Access:
        """The authorization of one request of ``principal`` from ``client_host`` (an ``acl_host``) on
        ``listener``."""
        trusted = listener == self._trusted_listener
        authorizer = self._authorizer(acls) if self.enabled and not trusted else None
        inter_broker = listener == self._inter_broker_listener and (
            self._inter_broker_user is None or principal in self.super_users
        )
        return Access(authorizer, principal, client_host, listener, api, self._hook, inter_broker=inter_broker)


class Access:
    """What one request's principal may do. ``enabled`` False: everything (authorization is off)."""

    __slots__ = ("_authorizer", "_hook", "api", "host", "inter_broker", "listener", "principal")

    def __init__(
        self,
        authorizer: Authorizer | None,
        principal: str,
        host: str,
        listener: str,
        api: str,
        hook: DenialHook | None = None,
        *,
        inter_broker: bool = True,
    ) -> None:
        self._authorizer = authorizer
        # Whether the request may act as a broker of this cluster: it came on the inter-broker listener and, when
        # brokers log in with SASL, as the inter-broker user or a super user.
        self.inter_broker = inter_broker
        self.principal = principal
        self.host = host
        self.listener = listener
        self.api = api
        self._hook = hook

    @property
    def enabled(self) -> bool:
        return self._authorizer is not None

    def allows(self, operation: AclOperation, resource_type: ResourceType, name: str, *, audit: bool = True) -> bool:
        """Whether the principal may do ``operation`` on the resource. A denial is counted and audited unless
        ``audit`` is False (a listing that leaves out what the principal may not see, as Kafka logs those only at
        debug level)."""
        authorizer = self._authorizer
        if authorizer is None:
            return True
        if authorizer.authorize(self.principal, self.host, operation, resource_type, name):
            return True
        if audit:
            self._denied(operation, resource_type, name)
        return False

    def allows_any(self, operation: AclOperation, resource_type: ResourceType) -> bool:
        """Whether the principal may do ``operation`` on at least one resource of the type (KIP-679)."""
        authorizer = self._authorizer
        if authorizer is None:
            return True
        return authorizer.authorize_any(self.principal, self.host, operation, resource_type)

    def allows_cluster_quietly(self, operation: AclOperation) -> bool:
        """``cluster`` without auditing a denial: for a check a narrower one backs up (CREATE on the cluster, else
        on each topic), as Kafka logs those at debug level only."""
        return self.allows(operation, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME, audit=False)

    def cluster(self, operation: AclOperation) -> bool:
        return self.allows(operation, ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)

    def topic(self, operation: AclOperation, name: str) -> bool:
        return self.allows(operation, ResourceType.TOPIC, name)

    def group(self, operation: AclOperation, group_id: str) -> bool:
        return self.allows(operation, ResourceType.GROUP, group_id)

    def require_cluster(self, operation: AclOperation) -> None:
        """Raise CLUSTER_AUTHORIZATION_FAILED unless the principal may do ``operation`` on the cluster."""
        if not self.cluster(operation):
            raise KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)

    def require_group(self, operation: AclOperation, group_id: str) -> None:
        """Raise GROUP_AUTHORIZATION_FAILED unless the principal may do ``operation`` on the group."""
        if not self.group(operation, group_id):
            raise KafkaError(ErrorCode.GROUP_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)

    def require_topic(self, operation: AclOperation, name: str) -> None:
        """Raise TOPIC_AUTHORIZATION_FAILED unless the principal may do ``operation`` on the topic."""
        if not self.topic(operation, name):
            raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)

    def authorized_operations(self, resource_type: ResourceType, name: str) -> int:
        """Kafka's authorized-operations bit field: bit ``code`` set for each operation of the resource type
        (``SUPPORTED_OPERATIONS``) the principal may do on the resource."""
        out = 0
        for operation in SUPPORTED_OPERATIONS[resource_type]:
            if self.allows(operation, resource_type, name, audit=False):
                out |= 1 << operation
        return out

    def replica_fetch(self) -> bool:
        """Whether a Fetch that claims to come from a replica may be served (see the module's docstring)."""
        return self.inter_broker and self.cluster(AclOperation.CLUSTER_ACTION)

    def _denied(self, operation: AclOperation, resource_type: ResourceType, name: str) -> None:
        if self._hook is not None:
            self._hook(Denial(self.principal, self.host, self.listener, self.api, operation, resource_type, name))


# An Access that allows everything: for code paths that run without a client (tests of handlers, internal calls).
UNRESTRICTED: Final = Access(None, "User:ANONYMOUS", "", "", "")
