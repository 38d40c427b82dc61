"""``/v1/security/acls`` request bodies and filters (``rafka_shards.admin.requests``): strict, with the field named."""

from __future__ import annotations

import orjson
import pytest

from controller.acls import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType
from rafka_shards.admin.requests import BadRequest, parse_acl_bindings, parse_acl_filter

READ_ORDERS = {
    "resource_type": "topic",
    "resource_name": "orders",
    "principal": "User:alice",
    "operation": "read",
    "permission": "allow",
}
BINDING = AclBinding(
    ResourceType.TOPIC, "orders", PatternType.LITERAL, "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW
)


def test_one_binding_with_defaults_and_an_array() -> None:
    assert parse_acl_bindings(orjson.dumps(READ_ORDERS)) == (BINDING,)
    prefixed = {**READ_ORDERS, "pattern_type": "PREFIXED", "host": "10.0.0.1", "permission": "DENY"}
    got = parse_acl_bindings(orjson.dumps([READ_ORDERS, prefixed, READ_ORDERS]))
    assert len(got) == 2 and got[1].pattern_type is PatternType.PREFIXED and got[1].host == "10.0.0.1"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"", None, "a JSON body is required"),
        (b"{nope", None, "not valid JSON"),
        (b"42", None, "an ACL object or an array"),
        (b"[]", None, "expected 1.."),
        (orjson.dumps({**READ_ORDERS, "operation": "REED"}), "operation", "expected one of ALL, ALTER"),
        (orjson.dumps({**READ_ORDERS, "resource_type": "ANY"}), "resource_type", "expected one of CLUSTER"),
        (orjson.dumps({**READ_ORDERS, "pattern_type": "MATCH"}), "pattern_type", "LITERAL, PREFIXED"),
        (orjson.dumps({**READ_ORDERS, "permission": 3}), "permission", "got 3"),
        (orjson.dumps({k: v for k, v in READ_ORDERS.items() if k != "principal"}), "principal", "missing"),
        (orjson.dumps({**READ_ORDERS, "colour": "red"}), "colour", "unknown field"),
        (orjson.dumps({**READ_ORDERS, "principal": "alice"}), None, "Could not parse principal"),
        (orjson.dumps({**READ_ORDERS, "resource_type": "cluster"}), None, "kafka-cluster"),
        (orjson.dumps([READ_ORDERS, {**READ_ORDERS, "host": 7}]), "[1].host", "expected a string"),
    ],
)
def test_bad_bindings_are_400s_naming_the_field(body: bytes, field: str | None, reason: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_acl_bindings(body)
    assert e.value.field == field and reason in e.value.message, e.value.message


def test_filters_from_query_or_body() -> None:
    assert parse_acl_filter({}) == AclBindingFilter()
    assert parse_acl_filter({"resource_type": "any", "pattern_type": "match", "resource_name": "orders"}) == (
        AclBindingFilter(ResourceType.ANY, "orders", PatternType.MATCH)
    )
    assert parse_acl_filter({"principal": "User:alice", "operation": "READ"}) == AclBindingFilter(
        principal="User:alice", operation=AclOperation.READ
    )
    with pytest.raises(BadRequest, match="topics: unknown filter field"):
        parse_acl_filter({"topics": "x"})
    with pytest.raises(BadRequest, match=r"operation: expected one of ALL, ALTER, ALTER_CONFIGS, ANY, .* got .unknown"):
        parse_acl_filter({"operation": "unknown"})
