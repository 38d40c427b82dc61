"""ACLs: Kafka's authorizer as a pure core (issue 18, "Security"): bindings, filters, the decision, the API table.

Runs in every shard (``Authorizer.authorize`` on the request path, per request and per topic) and in the controller
process (``validate_binding`` and ``validate_filter`` for CreateAcls / DescribeAcls / DeleteAcls, ``matches`` to pick
what DeleteAcls removes, ``binding_to_json`` / ``binding_from_json`` for the metadata log). No I/O, no clock, no
asyncio, no Kafka framing; part of the pure ``controller`` package, whose metadata image keeps the cluster's ACLs as
an ``Authorizer`` (``MetadataImage.acls``; ``CreateAcls`` and ``DeleteAcls`` commands change it).

What it follows, and where:

- the enums and their wire codes: Kafka's ``ResourceType``, ``PatternType``, ``AclOperation``, ``AclPermissionType``
  (``fromCode`` maps a code it does not know to UNKNOWN);
- ``matches``: ``AclBindingFilter.matches`` (``ResourcePatternFilter.matches``, ``AccessControlEntryFilter.matches``);
- ``validate_binding``: what a KRaft cluster answers a CreateAcls entry with: the broker's checks in ``AclApis``
  (the CLUSTER resource's name, an empty name) and the controller's ``AclControlManager.validateNewAcl`` (concrete
  types, a principal with a colon), all INVALID_REQUEST with Kafka's reason; ``validate_filter``:
  ``AclControlManager.validateFilter``;
- ``Authorizer.authorize``: KRaft's ``StandardAuthorizerData.authorize`` / ``findResult``: super users first; then
  every ACL whose resource matches (literal equal, literal ``*``, prefixed prefix) and whose principal (equal or
  ``User:*``) and host (equal or ``*``) match; a DENY for the operation (or ALL) wins; else an ALLOW for it, for ALL,
  or one implying it (READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS; only ALLOWs
  imply) allows; a resource with no ACL at all gets ``allow.everyone.if.no.acl.found``; anything else is denied;
- ``Authorizer.authorize_any``: ``Authorizer.authorizeByResourceType`` (KIP-679), Kafka's default implementation,
  which the StandardAuthorizer keeps;
- ``API_ACLS``: the checks ``KafkaApis`` / ``ControllerApis`` make per API, with the error each answers (see there).

Where this answers differently from Kafka, on purpose: an ACL request with an UNKNOWN code in it makes Kafka fail
while parsing the request (the connection is closed), and one with ANY as a binding's type makes its constructors
throw (UNKNOWN_SERVER_ERROR); here both are INVALID_REQUEST with the reason (issue 18: "clear errors"). Strings are
bounded (``ACL_STRING_LENGTH_MAX``), and so is the number of ACLs (``ACL_COUNT_MAX``), which Kafka does not bound.

Hosts are compared as strings, as in Kafka, where the client's side is Java's ``InetAddress.getHostAddress()``: give
``authorize`` the output of ``kafka_host_address`` so an ACL written for a Kafka cluster (``0:0:0:0:0:0:0:1``)
matches here too.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Self

CLUSTER_RESOURCE_NAME: Final = "kafka-cluster"  # the only name of the CLUSTER resource (Kafka's Resource.CLUSTER_NAME)
WILDCARD_RESOURCE: Final = "*"  # a LITERAL pattern of this name matches every resource of its type
WILDCARD_HOST: Final = "*"
WILDCARD_PRINCIPAL: Final = "User:*"  # the only principal wildcard, as in Kafka ("Group:*" is a plain principal)

# Limits (Kafka bounds neither). An ACL's strings: Kafka's non-flexible string limit, which the flexible versions of
# the ACL APIs drop. The number of ACLs a cluster holds: the authorizer's index and every shard's copy of it grow
# with it; the controller refuses a CreateAcls that would pass it. The ACLs one request may create or delete: Kafka's
# QuorumController.MAX_RECORDS_PER_USER_OP.
ACL_STRING_LENGTH_MAX: Final = 32_767  # characters, of a resource name, a principal, a host
ACL_COUNT_MAX: Final = 100_000
ACL_CHANGES_PER_REQUEST_MAX: Final = 10_000


class _WireEnum(enum.IntEnum):
    """A Kafka enum of wire codes whose code 0 is UNKNOWN."""

    @classmethod
    def from_code(cls, code: int) -> Self:
        """The member with this wire code; UNKNOWN for a code Kafka does not know either (its ``fromCode``)."""
        try:
            return cls(code)
        except ValueError:
            return cls(0)


class ResourceType(_WireEnum):
    """Kafka's ``ResourceType`` and its wire codes."""

    UNKNOWN = 0
    ANY = 1  # filters only
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_WireEnum):
    """Kafka's ``PatternType`` (KIP-290) and its wire codes."""

    UNKNOWN = 0
    ANY = 1  # filters only: any pattern type, the name compared exactly
    MATCH = 2  # filters only: the patterns that would match the name (exact, ``*``, prefixes of it)
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_WireEnum):
    """Kafka's ``AclOperation`` and its wire codes."""

    UNKNOWN = 0
    ANY = 1  # filters only
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(_WireEnum):
    """Kafka's ``AclPermissionType`` and its wire codes."""

    UNKNOWN = 0
    ANY = 1  # filters only
    DENY = 2
    ALLOW = 3


class AclErrorCode(enum.IntEnum):
    """The Kafka error codes this module answers with; the numbers are Kafka's (``Errors.java``), the same as
    ``rafka_shards.model.ErrorCode``'s: ``ErrorCode(int(code))`` converts."""

    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    UNSUPPORTED_VERSION = 35
    INVALID_REQUEST = 42
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    SECURITY_DISABLED = 54  # an ACL API on a broker without an authorizer ("No Authorizer is configured.")


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ACL: a resource pattern and an access control entry (Kafka's ``AclBinding``), as CreateAcls carries it."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str  # "Type:name", e.g. "User:alice"; "User:*" is every principal
    host: str  # "*" or a client address as ``kafka_host_address`` writes it
    operation: AclOperation
    permission: AclPermissionType


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """What DescribeAcls and DeleteAcls select (Kafka's ``AclBindingFilter``). The defaults select every ACL.

    ANY in a type field and None in a string field match anything; MATCH as the pattern type selects the patterns
    that would match ``resource_name``; principal and host are compared exactly (``User:*`` selects only the ACLs
    written for ``User:*``)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission: AclPermissionType = AclPermissionType.ANY


ANY_BINDING_FILTER: Final = AclBindingFilter()


@dataclass(frozen=True, slots=True)
class AclProblem:
    """Why an ACL request entry is refused, and the error code to answer it with."""

    error: AclErrorCode
    message: str


# The first version of CreateAcls / DescribeAcls / DeleteAcls with a pattern type on the wire (KIP-290). Version 0
# has none: its decoder gives LITERAL, and a v0 request that means anything else is UNSUPPORTED_VERSION.
PATTERN_TYPE_MIN_VERSION: Final = 1

_CONCRETE_RESOURCE_TYPES: Final = frozenset(ResourceType) - {ResourceType.UNKNOWN, ResourceType.ANY}
_CONCRETE_PATTERN_TYPES: Final = frozenset({PatternType.LITERAL, PatternType.PREFIXED})
_CONCRETE_OPERATIONS: Final = frozenset(AclOperation) - {AclOperation.UNKNOWN, AclOperation.ANY}
_CONCRETE_PERMISSIONS: Final = frozenset({AclPermissionType.DENY, AclPermissionType.ALLOW})


def _invalid(message: str) -> AclProblem:
    return AclProblem(AclErrorCode.INVALID_REQUEST, message)


def _too_long(field: str, value: str) -> AclProblem | None:
    if len(value) > ACL_STRING_LENGTH_MAX:
        return _invalid(f"The {field} is {len(value)} characters long, more than {ACL_STRING_LENGTH_MAX}")
    return None


def validate_binding(binding: AclBinding, *, api_version: int | None = None) -> AclProblem | None:
    """Why CreateAcls must refuse this entry (each entry is answered on its own), or None if it may be stored.

    Kafka's checks and messages, in Kafka's order after the type checks; ``api_version`` (CreateAcls' request
    version) adds the version-0 rule. Kafka does not check the host (any string is stored; it matches only a client
    whose address is that string), nor the principal's type or name beyond the colon; neither does this."""
    if binding.resource_type not in _CONCRETE_RESOURCE_TYPES:
        return _invalid(
            f"Invalid resourceType {binding.resource_type.name}: an ACL needs a concrete resource type "
            "(TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER)"
        )
    if binding.pattern_type not in _CONCRETE_PATTERN_TYPES:
        return _invalid(f"Invalid patternType {binding.pattern_type.name}: an ACL's pattern is LITERAL or PREFIXED")
    if (
        api_version is not None
        and api_version < PATTERN_TYPE_MIN_VERSION
        and binding.pattern_type != PatternType.LITERAL
    ):
        return AclProblem(AclErrorCode.UNSUPPORTED_VERSION, "Version 0 only supports literal resource pattern types")
    if binding.operation not in _CONCRETE_OPERATIONS:
        return _invalid(f"Invalid operation {binding.operation.name}: an ACL needs a concrete operation")
    if binding.permission not in _CONCRETE_PERMISSIONS:
        return _invalid(f"Invalid permissionType {binding.permission.name}: an ACL is ALLOW or DENY")
    if binding.resource_type == ResourceType.CLUSTER and binding.resource_name != CLUSTER_RESOURCE_NAME:
        return _invalid(f"The only valid name for the CLUSTER resource is {CLUSTER_RESOURCE_NAME}")
    if not binding.resource_name:
        return _invalid("Invalid empty resource name")
    if ":" not in binding.principal:
        return _invalid(
            f"Could not parse principal from `{binding.principal}` "
            "(no colon is present separating the principal type from the principal name)"
        )
    return (
        _too_long("resource name", binding.resource_name)
        or _too_long("principal", binding.principal)
        or _too_long("host", binding.host)
    )


def validate_filter(acl_filter: AclBindingFilter, *, api_version: int | None = None) -> AclProblem | None:
    """Why DescribeAcls (the whole request) or DeleteAcls (this filter's result) must refuse the filter, or None.

    Kafka's ``AclControlManager.validateFilter``: a filter with an UNKNOWN part could match nothing sensible."""
    if acl_filter.resource_type == ResourceType.UNKNOWN:
        return _invalid("Unknown patternFilter: the resource type is UNKNOWN")
    if acl_filter.pattern_type == PatternType.UNKNOWN:
        return _invalid("Unknown patternFilter: the pattern type is UNKNOWN")
    if (
        api_version is not None
        and api_version < PATTERN_TYPE_MIN_VERSION
        and acl_filter.pattern_type != PatternType.LITERAL
    ):
        return AclProblem(AclErrorCode.UNSUPPORTED_VERSION, "Version 0 only supports literal resource pattern types")
    if acl_filter.operation == AclOperation.UNKNOWN:
        return _invalid("Unknown entryFilter: the operation is UNKNOWN")
    if acl_filter.permission == AclPermissionType.UNKNOWN:
        return _invalid("Unknown entryFilter: the permission type is UNKNOWN")
    for field, value in (
        ("resource name", acl_filter.resource_name),
        ("principal", acl_filter.principal),
        ("host", acl_filter.host),
    ):
        if value is not None and (problem := _too_long(field, value)) is not None:
            return problem
    return None


def matches(acl_filter: AclBindingFilter, binding: AclBinding) -> bool:
    """Whether the filter selects the binding: Kafka's ``AclBindingFilter.matches``, used by DescribeAcls and
    DeleteAcls."""
    if acl_filter.resource_type != ResourceType.ANY and acl_filter.resource_type != binding.resource_type:
        return False
    pattern_type = acl_filter.pattern_type
    if pattern_type not in (PatternType.ANY, PatternType.MATCH) and pattern_type != binding.pattern_type:
        return False
    name = acl_filter.resource_name
    if name is not None:
        if pattern_type in (PatternType.ANY, binding.pattern_type):
            if name != binding.resource_name:
                return False
        elif binding.pattern_type == PatternType.LITERAL:  # MATCH
            if name != binding.resource_name and binding.resource_name != WILDCARD_RESOURCE:
                return False
        elif not name.startswith(binding.resource_name):  # MATCH, a PREFIXED binding
            return False
    if acl_filter.principal is not None and acl_filter.principal != binding.principal:
        return False
    if acl_filter.host is not None and acl_filter.host != binding.host:
        return False
    if acl_filter.operation != AclOperation.ANY and acl_filter.operation != binding.operation:
        return False
    return acl_filter.permission in (AclPermissionType.ANY, binding.permission)


# What an ALLOW for an operation grants: the operation itself and those it implies (StandardAuthorizerData's
# IMPLIES_DESCRIBE and IMPLIES_DESCRIBE_CONFIGS). ALL grants everything. A DENY denies only its own operation (or
# everything, for ALL): a DENY for READ leaves DESCRIBE allowed.
_IMPLIED: Final[Mapping[AclOperation, frozenset[AclOperation]]] = MappingProxyType(
    {
        AclOperation.READ: frozenset({AclOperation.DESCRIBE}),
        AclOperation.WRITE: frozenset({AclOperation.DESCRIBE}),
        AclOperation.DELETE: frozenset({AclOperation.DESCRIBE}),
        AclOperation.ALTER: frozenset({AclOperation.DESCRIBE}),
        AclOperation.ALTER_CONFIGS: frozenset({AclOperation.DESCRIBE_CONFIGS}),
    }
)
_GRANTS: Final[Mapping[AclOperation, frozenset[AclOperation]]] = MappingProxyType(
    {
        op: _CONCRETE_OPERATIONS if op == AclOperation.ALL else frozenset({op}) | _IMPLIED.get(op, frozenset())
        for op in _CONCRETE_OPERATIONS
    }
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """The part of an ACL the decision looks at once its resource and principal matched."""

    host: str
    operation: AclOperation
    permission: AclPermissionType


# One resource pattern's ACLs, by principal (WILDCARD_PRINCIPAL among them).
_Section = Mapping[str, tuple[_Entry, ...]]
# Kafka's "authorized operations were not requested" in Metadata, DescribeCluster and the group descriptions.
AUTHORIZED_OPERATIONS_OMITTED: Final = -(2**31)
# The operations each resource type has (Kafka's AclEntry.supportedOperations): what an authorized-operations bit
# field (bit = the operation's wire code) is made of.
SUPPORTED_OPERATIONS: Final[Mapping[ResourceType, tuple[AclOperation, ...]]] = MappingProxyType(
    {
        ResourceType.TOPIC: (
            AclOperation.READ,
            AclOperation.WRITE,
            AclOperation.CREATE,
            AclOperation.DELETE,
            AclOperation.ALTER,
            AclOperation.DESCRIBE,
            AclOperation.DESCRIBE_CONFIGS,
            AclOperation.ALTER_CONFIGS,
        ),
        ResourceType.GROUP: (AclOperation.READ, AclOperation.DELETE, AclOperation.DESCRIBE),
        ResourceType.CLUSTER: (
            AclOperation.CREATE,
            AclOperation.ALTER,
            AclOperation.DESCRIBE,
            AclOperation.CLUSTER_ACTION,
            AclOperation.DESCRIBE_CONFIGS,
            AclOperation.ALTER_CONFIGS,
            AclOperation.IDEMPOTENT_WRITE,
        ),
        ResourceType.TRANSACTIONAL_ID: (AclOperation.WRITE, AclOperation.DESCRIBE),
    }
)
_HARDCODED_RESOURCE_NAME: Final = "hardcode"  # Kafka's probe in authorizeByResourceType


def parse_super_users(value: str) -> frozenset[str]:
    """``super.users``: principals separated by ``;``, blanks around them ignored (StandardAuthorizer's parse)."""
    users = frozenset(v.strip() for v in value.split(";") if v.strip())
    for user in users:
        if ":" not in user:
            raise ValueError(f"super.users: {user!r} is not a principal (Type:name, e.g. User:admin)")
    return users


def kafka_host_address(address: str) -> str:
    """A client's address as Kafka's authorizer sees it (Java's ``InetAddress.getHostAddress()``), the form ACL
    hosts are written in: IPv4 dotted; IPv6 as eight groups of lower-case hex without leading zeros and without
    ``::`` compression (``::1`` is ``0:0:0:0:0:0:0:1``); an IPv4-mapped IPv6 address as its IPv4 address (Java makes
    it an ``Inet4Address``). A scope (``%eth0``) is kept. Raises ValueError for what is not an IP address."""
    text, percent, scope = address.partition("%")
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ":".join(format(int(group, 16), "x") for group in ip.exploded.split(":")) + percent + scope


class Authorizer:
    """Kafka's StandardAuthorizer over a fixed set of ACLs: immutable, so a shard swaps in a new one when the
    metadata log changes its ACLs (``changed``), and a request sees one consistent set.

    The index: per resource type, LITERAL patterns in a dict by name (the wildcard ``*`` is one of them) and
    PREFIXED patterns in a dict by prefix, with the distinct prefix lengths in order; each pattern's ACLs by
    principal. ``authorize`` looks up the name, ``*``, and the name's prefixes of those lengths, then only the ACLs
    of the principal and of ``User:*``: O(P * n + a) for a name of n characters, P distinct prefix lengths (at most
    n that matter) and a ACLs of that principal on the matching patterns; the number of ACLs in the cluster does not
    enter. ``authorize_any`` and ``acls`` scan: O(ACLs of the type) and O(all ACLs). Building is O(ACLs) (seconds for
    ``ACL_COUNT_MAX`` of them: build once, at start); ``changed`` copies the index's dicts (C speed: tens of ms at
    ``ACL_COUNT_MAX``) and rebuilds only the patterns it touches. At most ``ACL_COUNT_MAX`` ACLs; duplicates count
    once, as Kafka stores an ACL once."""

    __slots__ = ("_allow_if_no_acl", "_bindings", "_by_type", "_literal", "_prefix_lengths", "_prefixed", "_super")

    def __init__(
        self,
        bindings: Iterable[AclBinding] = (),
        *,
        super_users: frozenset[str] = frozenset(),
        allow_everyone_if_no_acl_found: bool = False,
    ) -> None:
        self._super = super_users
        self._allow_if_no_acl = allow_everyone_if_no_acl_found
        self._bindings: dict[AclBinding, None] = {}
        self._literal: dict[ResourceType, dict[str, _Section]] = {}
        self._prefixed: dict[ResourceType, dict[str, _Section]] = {}
        self._prefix_lengths: dict[ResourceType, tuple[int, ...]] = {}
        self._by_type: dict[ResourceType, dict[AclBinding, None]] = {}
        self._apply(list(dict.fromkeys(bindings)), [])

    def changed(self, *, added: Iterable[AclBinding] = (), removed: Iterable[AclBinding] = ()) -> Authorizer:
        """A new authorizer with these ACLs added and removed (an ACL already there, or not there, is ignored);
        this one is unchanged. Raises ValueError for an invalid ACL or one too many, as the constructor does."""
        new = Authorizer.__new__(Authorizer)
        new._super = self._super
        new._allow_if_no_acl = self._allow_if_no_acl
        new._bindings = self._bindings
        new._literal = self._literal
        new._prefixed = self._prefixed
        new._prefix_lengths = self._prefix_lengths
        new._by_type = self._by_type
        removing = [b for b in dict.fromkeys(removed) if b in self._bindings]
        gone = set(removing)
        adding = [b for b in dict.fromkeys(added) if b not in self._bindings or b in gone]
        new._apply(adding, removing)
        return new

    def _apply(self, added: list[AclBinding], removed: list[AclBinding]) -> None:
        """Index the changes, replacing (never mutating) every dict they touch: called on a fresh instance that
        still shares its dicts with the one it was made from."""
        for b in added:
            problem = validate_binding(b)
            if problem is not None:  # the controller validates before anything is stored
                raise ValueError(f"invalid ACL {b}: {problem.message}")
        bindings = dict(self._bindings)
        for b in removed:
            del bindings[b]
        bindings.update(dict.fromkeys(added))
        if len(bindings) > ACL_COUNT_MAX:
            raise ValueError(f"{len(bindings)} ACLs, more than ACL_COUNT_MAX ({ACL_COUNT_MAX})")
        # Every touched pattern's ACLs, by principal, as ordered sets of entries; then written back frozen.
        touched: dict[tuple[bool, ResourceType, str], dict[str, dict[_Entry, None]]] = {}
        by_type: dict[ResourceType, dict[AclBinding, None]] = {}
        for b, adding in [(b, False) for b in removed] + [(b, True) for b in added]:
            key = (b.pattern_type == PatternType.PREFIXED, b.resource_type, b.resource_name)
            section = touched.get(key)
            if section is None:
                old = (self._prefixed if key[0] else self._literal).get(b.resource_type, {}).get(b.resource_name, {})
                section = touched[key] = {who: dict.fromkeys(entries) for who, entries in old.items()}
            entries = section.setdefault(b.principal, {})
            of_type = by_type.get(b.resource_type)
            if of_type is None:
                of_type = by_type[b.resource_type] = dict(self._by_type.get(b.resource_type, {}))
            entry = _Entry(b.host, b.operation, b.permission)
            if adding:
                entries[entry] = None
                of_type[b] = None
            else:
                del entries[entry]
                del of_type[b]
        literal = dict(self._literal)
        prefixed = dict(self._prefixed)
        copied: set[tuple[bool, ResourceType]] = set()
        for (is_prefixed, rt, name), section in touched.items():
            patterns = prefixed if is_prefixed else literal
            if (is_prefixed, rt) not in copied:
                copied.add((is_prefixed, rt))
                patterns[rt] = dict(patterns.get(rt, {}))
            frozen = {who: tuple(entries) for who, entries in section.items() if entries}
            if frozen:
                patterns[rt][name] = frozen
            else:
                patterns[rt].pop(name, None)
        prefix_lengths = dict(self._prefix_lengths)
        for is_prefixed, rt in copied:
            patterns = prefixed if is_prefixed else literal
            if not patterns[rt]:
                del patterns[rt]
            if is_prefixed:
                prefix_lengths[rt] = tuple(sorted({len(p) for p in prefixed.get(rt, {})}))
                if not prefix_lengths[rt]:
                    del prefix_lengths[rt]
        self._bindings = bindings
        self._literal = literal
        self._prefixed = prefixed
        self._prefix_lengths = prefix_lengths
        self._by_type = {**self._by_type, **by_type}

    def configured(self, *, super_users: frozenset[str], allow_everyone_if_no_acl_found: bool) -> Authorizer:
        """The same ACLs with a node's own settings (``super.users``, ``allow.everyone.if.no.acl.found``), sharing
        the index: O(1). The metadata image's authorizer has neither; each shard applies its configuration."""
        new = Authorizer.__new__(Authorizer)
        new._super = super_users
        new._allow_if_no_acl = allow_everyone_if_no_acl_found
        new._bindings = self._bindings
        new._literal = self._literal
        new._prefixed = self._prefixed
        new._prefix_lengths = self._prefix_lengths
        new._by_type = self._by_type
        return new

    def __eq__(self, other: object) -> bool:
        """Equal when the ACLs (in any order) and the settings are (a metadata image compares its ACLs this way)."""
        if not isinstance(other, Authorizer):
            return NotImplemented
        return (
            self._super == other._super
            and self._allow_if_no_acl == other._allow_if_no_acl
            and self._bindings.keys() == other._bindings.keys()
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def bindings(self) -> tuple[AclBinding, ...]:
        """Every ACL, once each, in the order they were added."""
        return tuple(self._bindings)

    @property
    def super_users(self) -> frozenset[str]:
        return self._super

    @property
    def allow_everyone_if_no_acl_found(self) -> bool:
        return self._allow_if_no_acl

    def __len__(self) -> int:
        return len(self._bindings)

    def __contains__(self, binding: object) -> bool:
        return binding in self._bindings

    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType, resource_name: str
    ) -> bool:
        """Whether ``principal`` ("User:alice"), connected from ``host``, may do ``operation`` on the resource."""
        if principal in self._super:
            return True
        if operation not in _CONCRETE_OPERATIONS or resource_type not in _CONCRETE_RESOURCE_TYPES:
            raise ValueError(f"authorize: {operation.name} on {resource_type.name} is not a concrete action")
        sections = self._sections(resource_type, resource_name)
        if not sections:
            return self._allow_if_no_acl
        principals = (principal,) if principal == WILDCARD_PRINCIPAL else (principal, WILDCARD_PRINCIPAL)
        allowed = False
        for section in sections:
            for who in principals:
                for entry in section.get(who, ()):
                    if entry.host != host and entry.host != WILDCARD_HOST:
                        continue
                    if entry.permission == AclPermissionType.DENY:
                        if entry.operation == operation or entry.operation == AclOperation.ALL:
                            return False  # a matching DENY wins over every ALLOW
                    elif operation in _GRANTS[entry.operation]:
                        allowed = True
        return allowed  # the resource has ACLs, so no ALLOW means denied, whatever allow_everyone_if_no_acl_found

    def _sections(self, resource_type: ResourceType, name: str) -> list[_Section]:
        """The ACLs of every pattern that matches the resource: the literal name, the wildcard, the prefixes."""
        found: list[_Section] = []
        literal = self._literal.get(resource_type)
        if literal is not None:
            exact = literal.get(name)
            if exact is not None:
                found.append(exact)
            if name != WILDCARD_RESOURCE:
                wildcard = literal.get(WILDCARD_RESOURCE)
                if wildcard is not None:
                    found.append(wildcard)
        prefixed = self._prefixed.get(resource_type)
        if prefixed is not None:
            size = len(name)
            for length in self._prefix_lengths.get(resource_type, ()):
                if length > size:
                    break
                section = prefixed.get(name[:length])
                if section is not None:
                    found.append(section)
        return found

    def authorize_any(self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType) -> bool:
        """Whether the principal may do ``operation`` on at least one resource of the type: Kafka's
        ``authorizeByResourceType`` (InitProducerId of an idempotent producer: WRITE on any topic).

        Kafka's default implementation, quirks included: first the ordinary decision on a resource named
        "hardcode" (so super users, and ``allow.everyone.if.no.acl.found`` when no ACL matches that name, pass);
        then, over the ACLs of the type for this principal (or ``User:*``) and host whose operation is exactly this
        one or ALL (no implied operations here): a literal ``*`` DENY denies, a literal ``*`` ALLOW allows, and
        otherwise some ALLOW must not be dominated by a DENY (a literal ALLOW by the same literal DENY or a DENY
        prefix of its name; a prefixed ALLOW by a DENY prefix of it)."""
        if self.authorize(principal, host, operation, resource_type, _HARDCODED_RESOURCE_NAME):
            return True
        deny_literal: set[str] = set()
        deny_prefixed: set[str] = set()
        allow: list[AclBinding] = []
        wildcard_allow = False
        for b in self._by_type.get(resource_type, ()):
            if b.host != host and b.host != WILDCARD_HOST:
                continue
            if b.principal != principal and b.principal != WILDCARD_PRINCIPAL:
                continue
            if b.operation != operation and b.operation != AclOperation.ALL:
                continue
            wildcard = b.pattern_type == PatternType.LITERAL and b.resource_name == WILDCARD_RESOURCE
            if b.permission == AclPermissionType.DENY:
                if wildcard:
                    return False
                (deny_literal if b.pattern_type == PatternType.LITERAL else deny_prefixed).add(b.resource_name)
            elif wildcard:
                wildcard_allow = True  # decides only once no wildcard DENY turned up in the whole scan
            else:
                allow.append(b)
        if wildcard_allow:
            return True
        for b in allow:
            name = b.resource_name
            if b.pattern_type == PatternType.LITERAL and name in deny_literal:
                continue
            if not any(name[:i] in deny_prefixed for i in range(1, len(name) + 1)):
                return True
        return False

    def acls(self, acl_filter: AclBindingFilter = ANY_BINDING_FILTER) -> tuple[AclBinding, ...]:
        """The ACLs the filter selects, in order (DescribeAcls; DeleteAcls removes these)."""
        return tuple(b for b in self._bindings if matches(acl_filter, b))


# --- The API table ------------------------------------------------------------------------------------------------


class Scope(enum.Enum):
    """Which resources of a request a check is made on, and what a denial does."""

    REQUEST = "request"  # the one resource the request names (its group, its transactional id, the cluster):
    # a denial fails the whole request with the error
    EACH = "each"  # every resource the request names (topics, groups): a denial fails that item with the error
    EVERY = "every"  # every resource the request names: one denial fails the whole request with the error
    FILTER = "filter"  # every resource the response would list: denied ones are left out silently
    ANY_OF_TYPE = "any_of_type"  # at least one resource of the type (``Authorizer.authorize_any``)


class When(enum.Enum):
    """The condition under which a check applies (ALWAYS if none)."""

    ALWAYS = "always"
    TRANSACTIONAL = "transactional"  # Produce with transactional records, InitProducerId with a transactional id
    NOT_TRANSACTIONAL = "not_transactional"  # InitProducerId without one: an idempotent producer
    FROM_FOLLOWER = "from_follower"  # Fetch from a replica (replica_id >= 0, or v15+'s replica_state)
    FROM_CONSUMER = "from_consumer"  # Fetch from a client (replica_id < 0)
    NAMED_TOPICS = "named_topics"  # the request names its topics (by name or id)
    ALL_TOPICS = "all_topics"  # the request asks for every topic (Metadata topics null, OffsetFetch topics null)
    AUTO_CREATE = "auto_create"  # Metadata: a described topic that does not exist, allow_auto_topic_creation set
    # and auto-creation enabled
    TOPIC_IDS = "topic_ids"  # DeleteTopics naming a topic by id
    GROUP_KEY = "group_key"  # FindCoordinator for a group (key_type 0)
    TRANSACTION_KEY = "transaction_key"  # FindCoordinator for a transactional id (key_type 1)
    BROKER_CONFIGS = "broker_configs"  # a config resource of type BROKER (4) or BROKER_LOGGER (8)
    TOPIC_CONFIGS = "topic_configs"  # a config resource of type TOPIC (2)
    FROM_BROKER = "from_broker"  # AddPartitionsToTxn v4+, which only brokers send (KIP-890)
    SUBSCRIBED_TOPIC_NAMES = "subscribed_topic_names"  # ConsumerGroupHeartbeat with subscribed_topic_names
    SUBSCRIBED_TOPIC_REGEX = "subscribed_topic_regex"  # ConsumerGroupHeartbeat v1+ with subscribed_topic_regex
    ASSIGNED_TOPICS = "assigned_topics"  # ConsumerGroupDescribe: the topics in a group's members' assignments
    TRANSACTION_TOPICS = "transaction_topics"  # DescribeTransactions: the topics of a described transaction
    AUTHORIZED_OPERATIONS = "authorized_operations"  # the request asks for the authorized operations


@dataclass(frozen=True, slots=True)
class AclCheck:
    """One authorization Kafka makes: ``operation`` on resources of ``resource_type``, chosen by ``scope``."""

    operation: AclOperation
    resource_type: ResourceType
    scope: Scope


@dataclass(frozen=True, slots=True)
class AclRule:
    """A requirement: allowed if any of ``any_of`` allows (tried in order, the first allowing one settles it);
    otherwise ``error`` at the granularity of the last check's scope (None: the resources are left out silently,
    or only the response's authorized operations are affected)."""

    any_of: tuple[AclCheck, ...]
    error: AclErrorCode | None
    when: When = When.ALWAYS
    note: str = ""


@dataclass(frozen=True, slots=True)
class ApiAcl:
    """What Kafka authorizes for one API: every applicable rule must pass, in order (the first failing one answers)."""

    api_key: int
    name: str
    rules: tuple[AclRule, ...]
    note: str = ""


def _check(
    operation: AclOperation,
    resource_type: ResourceType,
    scope: Scope,
    error: AclErrorCode | None,
    when: When = When.ALWAYS,
    note: str = "",
) -> AclRule:
    return AclRule((AclCheck(operation, resource_type, scope),), error, when, note)


_op = AclOperation
_rt = ResourceType
_err = AclErrorCode
_TOPIC_DENIED = _err.TOPIC_AUTHORIZATION_FAILED
_GROUP_DENIED = _err.GROUP_AUTHORIZATION_FAILED
_CLUSTER_DENIED = _err.CLUSTER_AUTHORIZATION_FAILED
_TXN_DENIED = _err.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def _cluster(operation: AclOperation, note: str = "") -> tuple[AclRule, ...]:
    return (_check(operation, _rt.CLUSTER, Scope.REQUEST, _CLUSTER_DENIED, note=note),)


def _group(operation: AclOperation) -> tuple[AclRule, ...]:
    return (_check(operation, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED),)


def _configs(operation: AclOperation) -> tuple[AclRule, ...]:
    return (
        _check(operation, _rt.CLUSTER, Scope.EACH, _CLUSTER_DENIED, When.BROKER_CONFIGS),
        _check(operation, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED, When.TOPIC_CONFIGS),
    )


_API_ACL_LIST: Final = (
    ApiAcl(
        0,
        "Produce",
        (
            _check(
                _op.WRITE,
                _rt.TRANSACTIONAL_ID,
                Scope.REQUEST,
                _TXN_DENIED,
                When.TRANSACTIONAL,
                "also when the batches are transactional but transactional_id is null",
            ),
            _check(_op.WRITE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),
        ),
        "An idempotent producer needs nothing more here: since Kafka 3.0 (KIP-679) its IDEMPOTENT_WRITE is checked"
        " at InitProducerId only.",
    ),
    ApiAcl(
        1,
        "Fetch",
        (
            _check(
                _op.CLUSTER_ACTION,
                _rt.CLUSTER,
                Scope.REQUEST,
                _TOPIC_DENIED,
                When.FROM_FOLLOWER,
                "Kafka answers TOPIC_AUTHORIZATION_FAILED on every partition, not CLUSTER_AUTHORIZATION_FAILED",
            ),
            _check(_op.READ, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED, When.FROM_CONSUMER),
        ),
    ),
    ApiAcl(2, "ListOffsets", (_check(_op.DESCRIBE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),)),
    ApiAcl(
        3,
        "Metadata",
        (
            _check(
                _op.DESCRIBE,
                _rt.TOPIC,
                Scope.EACH,
                _TOPIC_DENIED,
                When.NAMED_TOPICS,
                "by id (v12+) the topic's name is not returned",
            ),
            _check(_op.DESCRIBE, _rt.TOPIC, Scope.FILTER, None, When.ALL_TOPICS),
            AclRule(
                (
                    AclCheck(_op.CREATE, _rt.CLUSTER, Scope.REQUEST),
                    AclCheck(_op.CREATE, _rt.TOPIC, Scope.EACH),
                ),
                _TOPIC_DENIED,
                When.AUTO_CREATE,
                "only for topics that passed DESCRIBE",
            ),
            _check(
                _op.DESCRIBE,
                _rt.CLUSTER,
                Scope.REQUEST,
                None,
                When.AUTHORIZED_OPERATIONS,
                "v8-v10 cluster_authorized_operations: 0 when denied",
            ),
        ),
    ),
    ApiAcl(
        8,
        "OffsetCommit",
        (
            _check(_op.READ, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED, note="every partition gets the error"),
            _check(_op.READ, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),
        ),
        "Group access is checked first, then topic access.",
    ),
    ApiAcl(
        9,
        "OffsetFetch",
        (
            _check(_op.DESCRIBE, _rt.GROUP, Scope.EACH, _GROUP_DENIED, note="v8+ names several groups"),
            _check(_op.DESCRIBE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED, When.NAMED_TOPICS),
            _check(_op.DESCRIBE, _rt.TOPIC, Scope.FILTER, None, When.ALL_TOPICS),
        ),
    ),
    ApiAcl(
        10,
        "FindCoordinator",
        (
            _check(_op.DESCRIBE, _rt.GROUP, Scope.EACH, _GROUP_DENIED, When.GROUP_KEY),
            _check(_op.DESCRIBE, _rt.TRANSACTIONAL_ID, Scope.EACH, _TXN_DENIED, When.TRANSACTION_KEY),
        ),
        "v4+ asks for several keys, each answered on its own.",
    ),
    ApiAcl(11, "JoinGroup", _group(_op.READ)),
    ApiAcl(12, "Heartbeat", _group(_op.READ)),
    ApiAcl(13, "LeaveGroup", _group(_op.READ)),
    ApiAcl(14, "SyncGroup", _group(_op.READ)),
    ApiAcl(15, "DescribeGroups", (_check(_op.DESCRIBE, _rt.GROUP, Scope.EACH, _GROUP_DENIED),)),
    ApiAcl(
        16,
        "ListGroups",
        (
            AclRule(
                (
                    AclCheck(_op.DESCRIBE, _rt.CLUSTER, Scope.REQUEST),
                    AclCheck(_op.DESCRIBE, _rt.GROUP, Scope.FILTER),
                ),
                None,
            ),
        ),
        "DESCRIBE on the cluster lists every group; otherwise only the groups the principal may describe. Never an"
        " error.",
    ),
    ApiAcl(17, "SaslHandshake", (), "Part of authentication: nothing to authorize."),
    ApiAcl(18, "ApiVersions", (), "Before authentication: nothing to authorize."),
    ApiAcl(
        19,
        "CreateTopics",
        (
            AclRule(
                (
                    AclCheck(_op.CREATE, _rt.CLUSTER, Scope.REQUEST),
                    AclCheck(_op.CREATE, _rt.TOPIC, Scope.EACH),
                ),
                _TOPIC_DENIED,
                note='the topic\'s error_message is "Authorization failed."',
            ),
            _check(
                _op.DESCRIBE_CONFIGS,
                _rt.TOPIC,
                Scope.EACH,
                _TOPIC_DENIED,
                note="answered in topic_config_error_code only: the topic is still created, its configs are not"
                " returned",
            ),
        ),
    ),
    ApiAcl(
        20,
        "DeleteTopics",
        (
            _check(
                _op.DESCRIBE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED, When.TOPIC_IDS, "the topic's name is not returned"
            ),
            _check(_op.DELETE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),
        ),
    ),
    ApiAcl(21, "DeleteRecords", (_check(_op.DELETE, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),)),
    ApiAcl(
        22,
        "InitProducerId",
        (
            _check(_op.WRITE, _rt.TRANSACTIONAL_ID, Scope.REQUEST, _TXN_DENIED, When.TRANSACTIONAL),
            AclRule(
                (
                    AclCheck(_op.IDEMPOTENT_WRITE, _rt.CLUSTER, Scope.REQUEST),
                    AclCheck(_op.WRITE, _rt.TOPIC, Scope.ANY_OF_TYPE),
                ),
                _CLUSTER_DENIED,
                When.NOT_TRANSACTIONAL,
                "KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic",
            ),
        ),
    ),
    ApiAcl(
        23,
        "OffsetForLeaderEpoch",
        (
            AclRule(
                (
                    AclCheck(_op.CLUSTER_ACTION, _rt.CLUSTER, Scope.REQUEST),
                    AclCheck(_op.DESCRIBE, _rt.TOPIC, Scope.EACH),
                ),
                _TOPIC_DENIED,
                note="followers have CLUSTER_ACTION; consumers (KIP-320) need DESCRIBE on the topic",
            ),
        ),
    ),
    ApiAcl(
        24,
        "AddPartitionsToTxn",
        (
            _check(_op.CLUSTER_ACTION, _rt.CLUSTER, Scope.REQUEST, _CLUSTER_DENIED, When.FROM_BROKER),
            _check(
                _op.WRITE,
                _rt.TRANSACTIONAL_ID,
                Scope.EACH,
                _TXN_DENIED,
                note="v4+ carries several transactions, each answered on its own",
            ),
            _check(
                _op.WRITE,
                _rt.TOPIC,
                Scope.EACH,
                _TOPIC_DENIED,
                note="internal topics are never authorized; any failed partition fails the transaction's others"
                " with OPERATION_NOT_ATTEMPTED",
            ),
        ),
    ),
    ApiAcl(
        25,
        "AddOffsetsToTxn",
        (
            _check(_op.WRITE, _rt.TRANSACTIONAL_ID, Scope.REQUEST, _TXN_DENIED),
            _check(_op.READ, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED),
        ),
    ),
    ApiAcl(26, "EndTxn", (_check(_op.WRITE, _rt.TRANSACTIONAL_ID, Scope.REQUEST, _TXN_DENIED),)),
    ApiAcl(
        27,
        "WriteTxnMarkers",
        _cluster(_op.CLUSTER_ACTION),
        "Sent by transaction coordinators, i.e. brokers. Kafka's documentation also lists ALTER; the code checks"
        " CLUSTER_ACTION only.",
    ),
    ApiAcl(
        28,
        "TxnOffsetCommit",
        (
            _check(_op.WRITE, _rt.TRANSACTIONAL_ID, Scope.REQUEST, _TXN_DENIED),
            _check(_op.READ, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED),
            _check(_op.READ, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),
        ),
    ),
    ApiAcl(29, "DescribeAcls", _cluster(_op.DESCRIBE)),
    ApiAcl(30, "CreateAcls", _cluster(_op.ALTER)),
    ApiAcl(31, "DeleteAcls", _cluster(_op.ALTER)),
    ApiAcl(32, "DescribeConfigs", _configs(_op.DESCRIBE_CONFIGS)),
    ApiAcl(33, "AlterConfigs", _configs(_op.ALTER_CONFIGS), "BROKER_LOGGER is not valid in AlterConfigs."),
    ApiAcl(34, "AlterReplicaLogDirs", _cluster(_op.ALTER)),
    ApiAcl(
        35,
        "DescribeLogDirs",
        _cluster(_op.DESCRIBE, "an empty result (and the error, v3+) when denied"),
    ),
    ApiAcl(36, "SaslAuthenticate", (), "Part of authentication: nothing to authorize."),
    ApiAcl(37, "CreatePartitions", (_check(_op.ALTER, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),)),
    ApiAcl(42, "DeleteGroups", (_check(_op.DELETE, _rt.GROUP, Scope.EACH, _GROUP_DENIED),)),
    ApiAcl(43, "ElectLeaders", _cluster(_op.ALTER, "every partition gets the error too")),
    ApiAcl(44, "IncrementalAlterConfigs", _configs(_op.ALTER_CONFIGS)),
    ApiAcl(45, "AlterPartitionReassignments", _cluster(_op.ALTER)),
    ApiAcl(46, "ListPartitionReassignments", _cluster(_op.DESCRIBE)),
    ApiAcl(
        47,
        "OffsetDelete",
        (
            _check(_op.DELETE, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED),
            _check(_op.READ, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),
        ),
    ),
    ApiAcl(48, "DescribeClientQuotas", _cluster(_op.DESCRIBE_CONFIGS)),
    ApiAcl(49, "AlterClientQuotas", _cluster(_op.ALTER_CONFIGS)),
    ApiAcl(50, "DescribeUserScramCredentials", _cluster(_op.DESCRIBE)),
    ApiAcl(51, "AlterUserScramCredentials", _cluster(_op.ALTER)),
    ApiAcl(
        60,
        "DescribeCluster",
        (
            _check(
                _op.DESCRIBE,
                _rt.CLUSTER,
                Scope.REQUEST,
                None,
                When.AUTHORIZED_OPERATIONS,
                "cluster_authorized_operations is 0 when denied",
            ),
        ),
        "Never refused: Kafka's documentation lists DESCRIBE on the cluster, but it only decides whether the"
        " authorized operations are computed.",
    ),
    ApiAcl(61, "DescribeProducers", (_check(_op.READ, _rt.TOPIC, Scope.EACH, _TOPIC_DENIED),)),
    ApiAcl(
        65,
        "DescribeTransactions",
        (
            _check(_op.DESCRIBE, _rt.TRANSACTIONAL_ID, Scope.EACH, _TXN_DENIED),
            _check(_op.DESCRIBE, _rt.TOPIC, Scope.FILTER, None, When.TRANSACTION_TOPICS),
        ),
    ),
    ApiAcl(66, "ListTransactions", (_check(_op.DESCRIBE, _rt.TRANSACTIONAL_ID, Scope.FILTER, None),)),
    ApiAcl(
        68,
        "ConsumerGroupHeartbeat",
        (
            _check(_op.READ, _rt.GROUP, Scope.REQUEST, _GROUP_DENIED),
            _check(
                _op.DESCRIBE,
                _rt.TOPIC,
                Scope.EVERY,
                _TOPIC_DENIED,
                When.SUBSCRIBED_TOPIC_NAMES,
                "the heartbeat fails, with no error message",
            ),
            _check(
                _op.DESCRIBE,
                _rt.TOPIC,
                Scope.FILTER,
                None,
                When.SUBSCRIBED_TOPIC_REGEX,
                "the topics the regular expression matches",
            ),
        ),
    ),
    ApiAcl(
        69,
        "ConsumerGroupDescribe",
        (
            _check(_op.DESCRIBE, _rt.GROUP, Scope.EACH, _GROUP_DENIED),
            _check(
                _op.DESCRIBE,
                _rt.TOPIC,
                Scope.EVERY,
                _TOPIC_DENIED,
                When.ASSIGNED_TOPICS,
                "per group: one undescribable topic in its members' assignments (current or target) replaces the"
                ' group with the error and "The group has described topic(s) that the client is not authorized'
                ' to describe."',
            ),
        ),
        "Kafka's documentation says READ on the group; the code (and its AuthorizerIntegrationTest) checks DESCRIBE.",
    ),
)

API_ACLS: Final[Mapping[int, ApiAcl]] = MappingProxyType({api.api_key: api for api in _API_ACL_LIST})
"""What Kafka authorizes for each API this broker serves, by API key.

From Kafka's "Operations and Resources on Protocols" table (docs, security: authorization and ACLs), corrected
against the code where the two differ (``KafkaApis``, ``ControllerApis``, ``AclApis``, ``AuthHelper`` and
``AuthorizerIntegrationTest``'s per-API ACLs): ApiAcl.note and AclRule.note say where. Requests that check several
resources have one rule per resource (and per condition, ``When``), in the order Kafka checks them."""


# --- The metadata log's encoding ----------------------------------------------------------------------------------


class AclDecodeError(ValueError):
    """Stored ACL data that is not a valid binding."""


_JSON_FIELDS: Final = ("resource_type", "resource_name", "pattern_type", "principal", "host", "operation", "permission")


def binding_to_json(binding: AclBinding) -> dict[str, str]:
    """The binding as a JSON object, for a metadata command or snapshot: enums by name, strings as they are."""
    return {
        "resource_type": binding.resource_type.name,
        "resource_name": binding.resource_name,
        "pattern_type": binding.pattern_type.name,
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.name,
        "permission": binding.permission.name,
    }


def _enum_field(obj: Mapping[str, Any], key: str, cls: type[enum.IntEnum], allowed: frozenset[Any]) -> Any:
    value = obj[key]
    member = cls.__members__.get(value) if isinstance(value, str) else None
    if member is None or member not in allowed:
        names = ", ".join(sorted(m.name for m in allowed))
        raise AclDecodeError(f"{key}: expected one of {names}, got {value!r}")
    return member


def _str_field(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise AclDecodeError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def binding_from_json(obj: object) -> AclBinding:
    """A binding from ``binding_to_json``'s object. Strict: exactly those keys, concrete enum names, and a binding
    ``validate_binding`` accepts; anything else raises ``AclDecodeError``."""
    if not isinstance(obj, dict):
        raise AclDecodeError(f"an ACL binding is a JSON object, got {type(obj).__name__}")
    keys = set(obj)
    if keys != set(_JSON_FIELDS):
        missing = sorted(set(_JSON_FIELDS) - keys)
        extra = sorted(str(k) for k in keys - set(_JSON_FIELDS))
        raise AclDecodeError(f"an ACL binding's fields: missing {missing}, unexpected {extra}")
    binding = AclBinding(
        resource_type=_enum_field(obj, "resource_type", ResourceType, _CONCRETE_RESOURCE_TYPES),
        resource_name=_str_field(obj, "resource_name"),
        pattern_type=_enum_field(obj, "pattern_type", PatternType, _CONCRETE_PATTERN_TYPES),
        principal=_str_field(obj, "principal"),
        host=_str_field(obj, "host"),
        operation=_enum_field(obj, "operation", AclOperation, _CONCRETE_OPERATIONS),
        permission=_enum_field(obj, "permission", AclPermissionType, _CONCRETE_PERMISSIONS),
    )
    problem = validate_binding(binding)
    if problem is not None:
        raise AclDecodeError(problem.message)
    return binding


def bindings_to_json(bindings: Iterable[AclBinding]) -> list[dict[str, str]]:
    return [binding_to_json(b) for b in bindings]


def bindings_from_json(obj: object) -> tuple[AclBinding, ...]:
    """A list of bindings (a snapshot's ACLs), at most ``ACL_COUNT_MAX``; raises ``AclDecodeError``."""
    if not isinstance(obj, list):
        raise AclDecodeError(f"ACL bindings are a JSON array, got {type(obj).__name__}")
    if len(obj) > ACL_COUNT_MAX:
        raise AclDecodeError(f"{len(obj)} ACL bindings, more than {ACL_COUNT_MAX}")
    return tuple(binding_from_json(item) for item in obj)
