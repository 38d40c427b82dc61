"""Request bodies of the admin API: strict JSON parsing into typed requests, with the offending field named.

Runs in the controller process; pure (no aiohttp): the HTTP layer (``admin.http``) turns ``BadRequest`` into a 400
and nothing is proposed. Topic bodies parse into the topics frontend's requests (``controller.topics``). Unknown
fields are refused (a typo such as ``"partition"`` must not silently create a topic with the default), numbers are
integers within the state machine's bounds, and config values are strings (integers are accepted and written as
Kafka writes them). A user's password is never repeated in an error message, and stays out of ``repr``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from controller.acls import (
    ACL_CHANGES_PER_REQUEST_MAX,
    ACL_STRING_LENGTH_MAX,
    WILDCARD_HOST,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
    validate_binding,
    validate_filter,
)
from controller.names import topic_name_error
from controller.scram import SCRAM_MECHANISMS, scram_username_error
from controller.state_machine import PARTITIONS_PER_TOPIC_MAX, REPLICATION_FACTOR_MAX
from controller.topics import NewTopic, TopicChanges

CONFIG_ENTRIES_MAX = 1000
PASSWORD_BYTES_MAX = 1024  # UTF-8; a PLAIN token (user, password and two NULs) is at most 4096 bytes


class BadRequest(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_object(raw: bytes, allowed: frozenset[str], required: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A JSON object with only ``allowed`` fields and every ``required`` one."""
    if not raw.strip():
        if required:
            raise BadRequest(None, f"a JSON object body is required (fields: {', '.join(sorted(required))})")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(None, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(None, f"the body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(unknown[0], f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(body))
    if missing:
        raise BadRequest(missing[0], f"missing required field(s) {missing}")
    return body


def integer(body: Mapping[str, Any], field: str, lo: int, hi: int) -> int:
    v = body[field]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(field, f"{field}: expected an integer, got {orjson.dumps(v).decode()[:50]}")
    if not lo <= v <= hi:
        raise BadRequest(field, f"{field}: {v} is outside {lo}..{hi}")
    return v


def _configs(body: Mapping[str, Any], field: str, allow_null: bool) -> dict[str, str | None]:
    v = body[field]
    if not isinstance(v, dict):
        raise BadRequest(field, f"{field}: expected an object of config names to values")
    if len(v) > CONFIG_ENTRIES_MAX:
        raise BadRequest(field, f"{field}: more than {CONFIG_ENTRIES_MAX} entries")
    out: dict[str, str | None] = {}
    for key, value in v.items():
        if value is None and allow_null:
            out[key] = None
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
        else:
            kind = "a string, an integer or null (to delete it)" if allow_null else "a string or an integer"
            raise BadRequest(f"{field}.{key}", f"{field}.{key}: expected {kind}")
    return out


def parse_create_topic(raw: bytes, default_partitions: int, default_replication_factor: int) -> NewTopic:
    body = parse_object(
        raw, frozenset({"name", "partitions", "replication_factor", "configs"}), required=frozenset({"name"})
    )
    name = body["name"]
    if not isinstance(name, str):
        raise BadRequest("name", "name: expected a string")
    problem = topic_name_error(name)
    if problem is not None:
        raise BadRequest("name", f"name: {problem}")
    partitions = default_partitions
    if "partitions" in body:
        partitions = integer(body, "partitions", 1, PARTITIONS_PER_TOPIC_MAX)
    rf = (
        integer(body, "replication_factor", 1, REPLICATION_FACTOR_MAX)
        if "replication_factor" in body
        else default_replication_factor
    )
    configs = _configs(body, "configs", allow_null=False) if "configs" in body else {}
    return NewTopic(name, partitions, rf, {k: v for k, v in configs.items() if v is not None})


def parse_patch_topic(raw: bytes) -> TopicChanges:
    body = parse_object(raw, frozenset({"partitions", "replication_factor", "configs"}))
    if not body:
        raise BadRequest(None, "nothing to change: give partitions, replication_factor and/or configs")
    partitions = integer(body, "partitions", 1, PARTITIONS_PER_TOPIC_MAX) if "partitions" in body else None
    rf = integer(body, "replication_factor", 1, REPLICATION_FACTOR_MAX) if "replication_factor" in body else None
    configs = _configs(body, "configs", allow_null=True) if "configs" in body else {}
    return TopicChanges(
        partitions,
        rf,
        {k: v for k, v in configs.items() if v is not None},
        tuple(sorted(k for k, v in configs.items() if v is None)),
    )


def parse_broker_id(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise BadRequest(field, f"{field}: expected a broker id (an integer 0..2147483647)")
    return value


def parse_transfer(raw: bytes) -> int:
    body = parse_object(raw, frozenset({"target"}), required=frozenset({"target"}))
    return parse_broker_id("target", body["target"])


def parse_replicas(raw: bytes) -> tuple[int, ...]:
    body = parse_object(raw, frozenset({"replicas"}), required=frozenset({"replicas"}))
    replicas = body["replicas"]
    if not isinstance(replicas, list) or not 1 <= len(replicas) <= REPLICATION_FACTOR_MAX:
        raise BadRequest("replicas", f"replicas: expected a list of 1..{REPLICATION_FACTOR_MAX} broker ids")
    out = tuple(parse_broker_id("replicas", r) for r in replicas)
    if len(set(out)) != len(out):
        raise BadRequest("replicas", f"replicas: {list(out)} lists a broker twice")
    return out


@dataclass(frozen=True, slots=True)
class UserPassword:
    """A SCRAM user's new password and the mechanism (``algorithm``, Redpanda's word) its credential is for."""

    username: str
    password: bytes = field(repr=False)  # UTF-8, as SASL clients send it (no SASLprep, as in Kafka)
    algorithm: str


def parse_username(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(field, f"{field}: expected a string")
    problem = scram_username_error(value)
    if problem is not None:
        raise BadRequest(field, f"{field}: {problem}")
    return value


def _password_and_algorithm(body: Mapping[str, Any]) -> tuple[bytes, str]:
    password = body["password"]
    if not isinstance(password, str) or not password:
        raise BadRequest("password", "password: expected a non-empty string")
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("password", "password: not valid Unicode") from None
    if len(encoded) > PASSWORD_BYTES_MAX:
        raise BadRequest("password", f"password: longer than {PASSWORD_BYTES_MAX} bytes of UTF-8")
    algorithm = body["algorithm"]
    if not isinstance(algorithm, str) or algorithm not in SCRAM_MECHANISMS:
        raise BadRequest("algorithm", f"algorithm: expected one of {', '.join(SCRAM_MECHANISMS)}")
    return encoded, algorithm


def parse_new_user(raw: bytes) -> UserPassword:
    fields = frozenset({"username", "password", "algorithm"})
    body = parse_object(raw, fields, required=fields)
    username = parse_username("username", body["username"])
    return UserPassword(username, *_password_and_algorithm(body))


def parse_user_update(raw: bytes, username: str) -> UserPassword:
    fields = frozenset({"password", "algorithm"})
    body = parse_object(raw, fields, required=fields)
    return UserPassword(username, *_password_and_algorithm(body))


# ---- ACLs (/v1/security/acls) ------------------------------------------------------------------------------------

ACL_BINDING_FIELDS = frozenset(
    {"resource_type", "resource_name", "pattern_type", "principal", "host", "operation", "permission"}
)
ACL_BINDING_REQUIRED = frozenset({"resource_type", "resource_name", "principal", "operation", "permission"})
_ACL_ENUMS: dict[str, type[enum.IntEnum]] = {
    "resource_type": ResourceType,
    "pattern_type": PatternType,
    "operation": AclOperation,
    "permission": AclPermissionType,
}
# What a binding may name (UNKNOWN never; ANY and MATCH only in filters).
_BINDING_ONLY_NOT = frozenset({"UNKNOWN", "ANY", "MATCH"})


def _acl_enum(field: str, value: Any, *, in_filter: bool) -> Any:
    """An enum member by its name, case-insensitively (``topic``, ``TOPIC``; ``-`` for ``_``)."""
    cls = _ACL_ENUMS[field.rpartition(".")[2]]
    allowed = sorted(
        name for name in cls.__members__ if name != "UNKNOWN" and (in_filter or name not in _BINDING_ONLY_NOT)
    )
    name = value.strip().upper().replace("-", "_") if isinstance(value, str) else None
    if name not in allowed:
        shown = orjson.dumps(value).decode()[:60]
        raise BadRequest(field, f"{field}: expected one of {', '.join(allowed)}, got {shown}")
    return cls.__members__[name]


def _acl_string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(field, f"{field}: expected a string")
    if len(value) > ACL_STRING_LENGTH_MAX:
        raise BadRequest(field, f"{field}: longer than {ACL_STRING_LENGTH_MAX} characters")
    return value


def _acl_binding(obj: Any, where: str) -> AclBinding:
    if not isinstance(obj, dict):
        raise BadRequest(where or None, f"{where or 'the body'}: an ACL is a JSON object")
    prefix = f"{where}." if where else ""
    unknown = sorted(set(obj) - ACL_BINDING_FIELDS)
    if unknown:
        field = prefix + unknown[0]
        raise BadRequest(field, f"{field}: unknown field; allowed: {sorted(ACL_BINDING_FIELDS)}")
    missing = sorted(ACL_BINDING_REQUIRED - set(obj))
    if missing:
        field = prefix + missing[0]
        raise BadRequest(field, f"{field}: missing (required: {sorted(ACL_BINDING_REQUIRED)})")
    binding = AclBinding(
        resource_type=_acl_enum(prefix + "resource_type", obj["resource_type"], in_filter=False),
        resource_name=_acl_string(prefix + "resource_name", obj["resource_name"]),
        pattern_type=_acl_enum(prefix + "pattern_type", obj.get("pattern_type", "LITERAL"), in_filter=False),
        principal=_acl_string(prefix + "principal", obj["principal"]),
        host=_acl_string(prefix + "host", obj.get("host", WILDCARD_HOST)),
        operation=_acl_enum(prefix + "operation", obj["operation"], in_filter=False),
        permission=_acl_enum(prefix + "permission", obj["permission"], in_filter=False),
    )
    problem = validate_binding(binding)
    if problem is not None:
        raise BadRequest(where or None, f"{where}: {problem.message}" if where else problem.message)
    return binding


def parse_acl_bindings(raw: bytes) -> tuple[AclBinding, ...]:
    """One ACL (a JSON object) or several (a JSON array of them), each complete and valid (``validate_binding``);
    ``pattern_type`` defaults to LITERAL and ``host`` to ``*``. Duplicates are kept once."""
    if not raw.strip():
        fields = sorted(ACL_BINDING_FIELDS)
        raise BadRequest(None, f"a JSON body is required: an ACL object (fields {fields}) or an array of them")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(None, f"the body is not valid JSON: {e}") from None
    if isinstance(body, list):
        if not 1 <= len(body) <= ACL_CHANGES_PER_REQUEST_MAX:
            raise BadRequest(None, f"expected 1..{ACL_CHANGES_PER_REQUEST_MAX} ACLs, got {len(body)}")
        bindings = [_acl_binding(item, f"[{i}]") for i, item in enumerate(body)]
    elif isinstance(body, dict):
        bindings = [_acl_binding(body, "")]
    else:
        raise BadRequest(None, f"the body must be an ACL object or an array of them, not {type(body).__name__}")
    return tuple(dict.fromkeys(bindings))


def parse_acl_filter(fields: Mapping[str, Any]) -> AclBindingFilter:
    """A filter from query parameters or a JSON object: every field optional (absent: any), enum names
    case-insensitive and ANY allowed (MATCH too, for the pattern type), checked by ``validate_filter``."""
    unknown = sorted(set(fields) - ACL_BINDING_FIELDS)
    if unknown:
        raise BadRequest(unknown[0], f"{unknown[0]}: unknown filter field; allowed: {sorted(ACL_BINDING_FIELDS)}")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _ACL_ENUMS:
            values[name] = _acl_enum(name, value, in_filter=True)
        else:
            values[name] = _acl_string(name, value)
    acl_filter = AclBindingFilter(**values)
    problem = validate_filter(acl_filter)
    if problem is not None:
        raise BadRequest(None, problem.message)
    return acl_filter


def parse_acl_filter_body(raw: bytes) -> dict[str, Any] | None:
    """The filter fields of a DELETE body (a JSON object), or None when there is no body."""
    if not raw.strip():
        return None
    return parse_object(raw, ACL_BINDING_FIELDS)
