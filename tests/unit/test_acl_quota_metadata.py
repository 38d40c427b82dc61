"""ACLs and client quotas in the metadata: the CreateAcls / DeleteAcls / AlterClientQuota commands' codec, their
validation and apply, and the image codec that carries both (snapshots and shards' copies)."""

from __future__ import annotations

import orjson
import pytest

from controller.acls import (
    ACL_CHANGES_PER_REQUEST_MAX,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from controller.commands import (
    AlterClientQuota,
    CommandDecodeError,
    CreateAcls,
    DeleteAcls,
    decode_command,
    encode_command,
)
from controller.image import ImageDecodeError, MetadataImage, decode_image, encode_image
from controller.state_machine import RejectKind, apply, validate


def acl(
    name: str = "orders",
    principal: str = "User:alice",
    operation: AclOperation = AclOperation.READ,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: PatternType = PatternType.LITERAL,
) -> AclBinding:
    return AclBinding(ResourceType.TOPIC, name, pattern, principal, "*", operation, permission)


def empty() -> MetadataImage:
    return MetadataImage(offset=0, cluster_id="cluster-1")


def run(*commands: CreateAcls | DeleteAcls | AlterClientQuota) -> MetadataImage:
    image = empty()
    for i, cmd in enumerate(commands):
        rejection = validate(image, cmd)
        assert rejection is None, rejection
        image = apply(image, cmd, i + 1)
    return image


def test_acl_commands_round_trip() -> None:
    for cmd in (CreateAcls((acl(), acl("tx-", pattern=PatternType.PREFIXED))), DeleteAcls((acl(),))):
        assert decode_command(encode_command(cmd)) == cmd


def test_an_invalid_acl_in_a_command_does_not_decode() -> None:
    body = orjson.loads(encode_command(CreateAcls((acl(),))))
    body["acls"][0]["operation"] = "ANY"  # a filter's value, never a binding's
    with pytest.raises(CommandDecodeError, match="acls"):
        decode_command(orjson.dumps(body))
    body["acls"][0] = {"resource_type": "TOPIC"}
    with pytest.raises(CommandDecodeError, match="missing"):
        decode_command(orjson.dumps(body))


def test_create_and_delete_acls_change_the_authorizer() -> None:
    deny = acl(operation=AclOperation.READ, permission=AclPermissionType.DENY, principal="User:bob")
    image = run(CreateAcls((acl(), deny, acl())))
    assert set(image.acls.bindings) == {acl(), deny}  # the duplicate is stored once
    assert image.acls.authorize("User:alice", "127.0.0.1", AclOperation.READ, ResourceType.TOPIC, "orders")
    assert not image.acls.authorize("User:bob", "127.0.0.1", AclOperation.READ, ResourceType.TOPIC, "orders")
    image = apply(image, DeleteAcls((acl(), acl("never-created"))), 5)  # one not stored is skipped
    assert image.acls.bindings == (deny,)
    assert image.offset == 5


def test_acl_command_limits() -> None:
    assert validate(empty(), CreateAcls(())) is not None
    many = tuple(acl(f"t{i}") for i in range(ACL_CHANGES_PER_REQUEST_MAX + 1))
    rejection = validate(empty(), CreateAcls(many))
    assert rejection is not None and rejection.kind is RejectKind.INVALID_REQUEST
    bad = AclBinding(ResourceType.CLUSTER, "not-kafka-cluster", PatternType.LITERAL, "User:a", "*", 3, 3)  # type: ignore[arg-type]
    rejection = validate(empty(), CreateAcls((bad,)))
    assert rejection is not None and rejection.kind is RejectKind.INVALID_REQUEST


USER_ALICE = (("user", "alice"),)
USER_CLIENT = (("client-id", "app"), ("user", "alice"))
DEFAULT_USER = (("user", None),)


def test_quota_command_round_trip() -> None:
    for cmd in (
        AlterClientQuota(USER_CLIENT, "producer_byte_rate", 1024.0),
        AlterClientQuota(DEFAULT_USER, "request_percentage", 12.5),
        AlterClientQuota(USER_ALICE, "consumer_byte_rate", None),
        AlterClientQuota((("ip", "10.0.0.1"),), "connection_creation_rate", 5.0),
    ):
        assert decode_command(encode_command(cmd)) == cmd


def test_quotas_set_replace_and_remove() -> None:
    image = run(
        AlterClientQuota(USER_ALICE, "producer_byte_rate", 1024.0),
        AlterClientQuota(USER_ALICE, "consumer_byte_rate", 2048.0),
        AlterClientQuota(USER_ALICE, "producer_byte_rate", 4096.0),
        AlterClientQuota(DEFAULT_USER, "request_percentage", 50.0),
    )
    assert dict(image.client_quotas[USER_ALICE]) == {"producer_byte_rate": 4096.0, "consumer_byte_rate": 2048.0}
    image = apply(image, AlterClientQuota(USER_ALICE, "producer_byte_rate", None), 10)
    image = apply(image, AlterClientQuota(USER_ALICE, "consumer_byte_rate", None), 11)
    assert USER_ALICE not in image.client_quotas  # an entity without quotas is gone
    assert dict(image.client_quotas[DEFAULT_USER]) == {"request_percentage": 50.0}


@pytest.mark.parametrize(
    ("entity", "key", "value", "message"),
    [
        ((), "producer_byte_rate", 1.0, "empty"),
        ((("user", "a"), ("user", "b")), "producer_byte_rate", 1.0, "more than once"),
        ((("group", "a"),), "producer_byte_rate", 1.0, "Unhandled"),
        ((("ip", "10.0.0.1"), ("user", "a")), "connection_creation_rate", 1.0, "should not be combined"),
        ((("ip", "not-an-ip"),), "connection_creation_rate", 1.0, "not a valid IP"),
        (USER_ALICE, "connection_creation_rate", 1.0, "Invalid configuration key"),
        ((("ip", "10.0.0.1"),), "producer_byte_rate", 1.0, "Invalid configuration key"),
        (USER_ALICE, "producer_byte_rate", -1.0, "positive"),
        (USER_ALICE, "producer_byte_rate", 0.0, "positive"),
        (USER_ALICE, "producer_byte_rate", 1.5, "whole number"),
        (USER_ALICE, "request_percentage", float("nan"), "positive"),
        ((("user", "b"), ("client-id", "a")), "producer_byte_rate", 1.0, "sorted"),
    ],
)
def test_invalid_quotas_are_refused(
    entity: tuple[tuple[str, str | None], ...], key: str, value: float, message: str
) -> None:
    rejection = validate(empty(), AlterClientQuota(entity, key, value))
    assert rejection is not None and rejection.kind is RejectKind.INVALID_REQUEST
    assert message in rejection.message


def test_the_image_carries_acls_and_quotas() -> None:
    image = run(
        CreateAcls((acl(), acl("tx-", pattern=PatternType.PREFIXED, operation=AclOperation.WRITE))),
        AlterClientQuota(USER_CLIENT, "producer_byte_rate", 1024.0),
        AlterClientQuota(DEFAULT_USER, "request_percentage", 12.5),
    )
    again = decode_image(encode_image(image))
    assert again == image
    assert again.acls.authorize("User:alice", "::1", AclOperation.WRITE, ResourceType.TOPIC, "tx-1")
    assert dict(again.client_quotas[DEFAULT_USER]) == {"request_percentage": 12.5}


def test_an_image_written_before_acls_and_quotas_decodes() -> None:
    body = orjson.loads(encode_image(empty()))
    del body["acls"], body["client_quotas"]
    image = decode_image(orjson.dumps(body))
    assert len(image.acls) == 0 and not image.client_quotas


def test_an_image_with_a_bad_acl_is_refused() -> None:
    body = orjson.loads(encode_image(run(CreateAcls((acl(),)))))
    body["acls"][0]["permission"] = "MAYBE"
    with pytest.raises(ImageDecodeError):
        decode_image(orjson.dumps(body))
