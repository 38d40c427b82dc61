"""A shard's per-request authorization (rafka_shards.shard.authz): the node's settings applied to the image's ACLs,
the trusted PLAINTEXT inter-broker listener, the inter-broker SASL user as a super user, replica fetches, denials
reported; and every API this broker serves has its row in Kafka's ACL table."""

from __future__ import annotations

from controller.acls import (
    API_ACLS,
    AclBinding,
    AclOperation,
    AclPermissionType,
    Authorizer,
    PatternType,
    ResourceType,
)
from rafka_shards.config import load_config
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.shard.authz import Denial, ShardAuthorization
from rafka_shards.shard.kafka.registry import HANDLERS

LISTENERS = {
    "listeners": "INTERNAL://127.0.0.1:19092,CLIENT://127.0.0.1:19192",
    "listener_security_protocol_map": "INTERNAL:PLAINTEXT,CLIENT:SASL_PLAINTEXT",
}
ACLS = Authorizer(
    [
        AclBinding(
            ResourceType.TOPIC,
            "orders",
            PatternType.LITERAL,
            "User:alice",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        ),
        AclBinding(
            ResourceType.TOPIC,
            "orders",
            PatternType.LITERAL,
            "User:bob",
            "10.0.0.9",
            AclOperation.ALL,
            AclPermissionType.DENY,
        ),
        AclBinding(
            ResourceType.TOPIC,
            "orders",
            PatternType.LITERAL,
            "User:bob",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        ),
    ]
)


def authorization(**settings: object) -> tuple[ShardAuthorization, list[Denial]]:
    denials: list[Denial] = []
    config = load_config({**LISTENERS, "authorization_enabled": True, **settings}, environ={})
    return ShardAuthorization(config, denials.append), denials


def test_acls_decide_on_a_client_listener_and_denials_are_reported() -> None:
    authz, denials = authorization(super_users="User:root")
    alice = authz.access(ACLS, "User:alice", "127.0.0.1", "CLIENT", "Fetch")
    assert alice.enabled
    assert alice.topic(AclOperation.READ, "orders")
    assert alice.topic(AclOperation.DESCRIBE, "orders")  # implied by READ
    assert not alice.topic(AclOperation.WRITE, "orders")
    assert denials == [
        Denial("User:alice", "127.0.0.1", "CLIENT", "Fetch", AclOperation.WRITE, ResourceType.TOPIC, "orders")
    ]
    bob_far = authz.access(ACLS, "User:bob", "10.0.0.9", "CLIENT", "Fetch")
    assert not bob_far.topic(AclOperation.READ, "orders")  # the host's DENY wins over the ALLOW
    assert authz.access(ACLS, "User:bob", "10.0.0.8", "CLIENT", "Fetch").topic(AclOperation.READ, "orders")
    assert not alice.topic(AclOperation.READ, "unnamed")  # no ACL: denied (allow_everyone_if_no_acl_found off)
    root = authz.access(ACLS, "User:root", "::1", "CLIENT", "CreateTopics")
    assert root.cluster(AclOperation.ALTER) and root.topic(AclOperation.DELETE, "anything")


def test_require_raises_the_precise_code() -> None:
    authz, _ = authorization()
    alice = authz.access(ACLS, "User:alice", "127.0.0.1", "CLIENT", "JoinGroup")
    for check, code in (
        (lambda: alice.require_group(AclOperation.READ, "g"), ErrorCode.GROUP_AUTHORIZATION_FAILED),
        (lambda: alice.require_topic(AclOperation.WRITE, "orders"), ErrorCode.TOPIC_AUTHORIZATION_FAILED),
        (lambda: alice.require_cluster(AclOperation.ALTER), ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
    ):
        try:
            check()
        except KafkaError as e:
            assert e.code is code
        else:
            raise AssertionError(f"{code.name} not raised")


def test_allow_everyone_if_no_acl_found() -> None:
    authz, _ = authorization(allow_everyone_if_no_acl_found=True)
    alice = authz.access(ACLS, "User:alice", "127.0.0.1", "CLIENT", "Produce")
    assert alice.topic(AclOperation.WRITE, "no-acl-names-me")
    assert not alice.topic(AclOperation.WRITE, "orders")  # orders has ACLs: they decide


def test_authorization_off_allows_everything_but_replica_fetches_stay_on_the_inter_broker_listener() -> None:
    config = load_config(LISTENERS, environ={})
    authz = ShardAuthorization(config)
    anyone = authz.access(ACLS, "User:ANONYMOUS", "127.0.0.1", "CLIENT", "Fetch")
    assert not anyone.enabled and anyone.topic(AclOperation.WRITE, "orders")
    assert not anyone.replica_fetch()
    assert authz.access(ACLS, "User:ANONYMOUS", "127.0.0.1", "INTERNAL", "Fetch").replica_fetch()


def test_a_plaintext_inter_broker_listener_is_trusted() -> None:
    authz, _ = authorization()
    internal = authz.access(ACLS, "User:ANONYMOUS", "127.0.0.1", "INTERNAL", "ListOffsets")
    assert not internal.enabled and internal.replica_fetch()
    client = authz.access(ACLS, "User:ANONYMOUS", "127.0.0.1", "CLIENT", "Fetch")
    assert not client.replica_fetch() and not client.topic(AclOperation.READ, "orders")


def test_a_sasl_inter_broker_user_is_a_super_user_and_the_only_replica() -> None:
    settings = {
        "listeners": "INTERNAL://127.0.0.1:19092,CLIENT://127.0.0.1:19192",
        "listener_security_protocol_map": "INTERNAL:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT",
        "inter_broker_sasl_username": "broker",
        "inter_broker_sasl_password": "broker-secret",
        "authorization_enabled": True,
    }
    config = load_config(settings, environ={})
    authz = ShardAuthorization(config)
    assert "User:broker" in authz.super_users
    broker = authz.access(ACLS, "User:broker", "127.0.0.1", "INTERNAL", "Fetch")
    assert broker.enabled and broker.replica_fetch()
    alice = authz.access(ACLS, "User:alice", "127.0.0.1", "INTERNAL", "Fetch")
    assert not alice.replica_fetch()
    assert not authz.access(ACLS, "User:broker", "127.0.0.1", "CLIENT", "Fetch").replica_fetch()


def test_authorized_operations_bit_field() -> None:
    authz, _ = authorization()
    alice = authz.access(ACLS, "User:alice", "127.0.0.1", "CLIENT", "DescribeGroups")
    read, describe = int(AclOperation.READ), int(AclOperation.DESCRIBE)
    assert alice.authorized_operations(ResourceType.TOPIC, "orders") == (1 << read) | (1 << describe)


def test_every_served_api_has_its_row_in_the_acl_table() -> None:
    missing = sorted(key for key in HANDLERS if key not in API_ACLS)
    assert missing == [], f"APIs without an ACL rule: {missing}"
