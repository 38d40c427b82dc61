"""What CreateAcls, DescribeAcls and DeleteAcls share: their wire entries as ``controller.acls`` types, and the
resource grouping of DescribeAcls. Runs in a shard process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.acls import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)


def binding_of(creation: Any) -> AclBinding:
    """A CreateAcls creation. Codes Kafka does not know become UNKNOWN, which ``validate_binding`` refuses."""
    return AclBinding(
        resource_type=ResourceType.from_code(int(creation.resource_type)),
        resource_name=str(creation.resource_name),
        pattern_type=PatternType.from_code(int(creation.resource_pattern_type)),
        principal=str(creation.principal),
        host=str(creation.host),
        operation=AclOperation.from_code(int(creation.operation)),
        permission=AclPermissionType.from_code(int(creation.permission_type)),
    )


def filter_of(f: Any) -> AclBindingFilter:
    """A DescribeAcls request's or a DeleteAcls filter's fields (the same names in both)."""
    return AclBindingFilter(
        resource_type=ResourceType.from_code(int(f.resource_type_filter)),
        resource_name=None if f.resource_name_filter is None else str(f.resource_name_filter),
        pattern_type=PatternType.from_code(int(f.pattern_type_filter)),
        principal=None if f.principal_filter is None else str(f.principal_filter),
        host=None if f.host_filter is None else str(f.host_filter),
        operation=AclOperation.from_code(int(f.operation)),
        permission=AclPermissionType.from_code(int(f.permission_type)),
    )


def binding_fields(b: AclBinding) -> dict[str, Any]:
    """A binding as DeleteAcls' matching_acls entry has it."""
    return {
        "resource_type": int(b.resource_type),
        "resource_name": b.resource_name,
        "pattern_type": int(b.pattern_type),
        "principal": b.principal,
        "host": b.host,
        "operation": int(b.operation),
        "permission_type": int(b.permission),
    }


def resources(bindings: Iterable[AclBinding]) -> list[dict[str, Any]]:
    """DescribeAcls' answer: the bindings grouped by resource pattern, in first-seen order."""
    grouped: dict[tuple[ResourceType, str, PatternType], list[dict[str, Any]]] = {}
    for b in bindings:
        grouped.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            {
                "principal": b.principal,
                "host": b.host,
                "operation": int(b.operation),
                "permission_type": int(b.permission),
            }
        )
    return [
        {"resource_type": int(rt), "resource_name": name, "pattern_type": int(pt), "acls": acls}
        for (rt, name, pt), acls in grouped.items()
    ]
