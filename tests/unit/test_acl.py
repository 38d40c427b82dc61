"""The ACL core (issue 18): Kafka's StandardAuthorizer decisions, the ACL requests' validation and filters, the
per-API authorization table, and the metadata log's encoding of bindings."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from controller.acls import (
    ACL_COUNT_MAX,
    ACL_STRING_LENGTH_MAX,
    ANY_BINDING_FILTER,
    API_ACLS,
    CLUSTER_RESOURCE_NAME,
    AclBinding,
    AclBindingFilter,
    AclDecodeError,
    AclErrorCode,
    AclOperation,
    AclPermissionType,
    Authorizer,
    PatternType,
    ResourceType,
    Scope,
    When,
    binding_from_json,
    binding_to_json,
    bindings_from_json,
    bindings_to_json,
    kafka_host_address,
    matches,
    parse_super_users,
    validate_binding,
    validate_filter,
)

Op = AclOperation
RT = ResourceType
PT = PatternType
ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY
ALICE = "User:alice"
BOB = "User:bob"
HOST = "10.0.0.1"


def acl(
    name: str = "orders",
    op: AclOperation = Op.READ,
    permission: AclPermissionType = ALLOW,
    *,
    principal: str = ALICE,
    host: str = "*",
    pattern: PatternType = PT.LITERAL,
    rtype: ResourceType = RT.TOPIC,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, permission)


def can(authz: Authorizer, op: AclOperation, name: str = "orders", *, who: str = ALICE, host: str = HOST) -> bool:
    return authz.authorize(who, host, op, RT.TOPIC, name)


# --- the decision -------------------------------------------------------------------------------------------------


def test_a_literal_allow_allows_that_operation_on_that_resource_only() -> None:
    authz = Authorizer([acl("orders", Op.READ)])
    assert can(authz, Op.READ)
    assert not can(authz, Op.WRITE)  # the resource has ACLs, none allowing WRITE
    assert not can(authz, Op.READ, who=BOB)
    assert not can(authz, Op.READ, "orders2")  # a literal is the whole name, not a prefix
    assert not authz.authorize(ALICE, HOST, Op.READ, RT.GROUP, "orders")  # another resource type


def test_deny_wins_over_allow_whatever_the_order() -> None:
    for bindings in ([acl(op=Op.READ), acl(op=Op.READ, permission=DENY)], [acl(op=Op.READ, permission=DENY), acl()]):
        assert not can(Authorizer(bindings), Op.READ)


def test_a_prefixed_deny_beats_a_literal_allow_and_a_wildcard_allow() -> None:
    authz = Authorizer(
        [
            acl("orders", Op.WRITE),
            acl("*", Op.WRITE),
            acl("ord", Op.WRITE, DENY, pattern=PT.PREFIXED),
        ]
    )
    assert not can(authz, Op.WRITE, "orders")
    assert can(authz, Op.WRITE, "payments")  # the wildcard allow, and the prefix does not match


def test_a_deny_of_all_denies_every_operation_and_an_allow_of_all_allows_every_operation() -> None:
    authz = Authorizer([acl(op=Op.ALL), acl(op=Op.ALL, permission=DENY, principal=BOB)])
    for op in (Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS):
        assert can(authz, op)
        assert not can(authz, op, who=BOB)


def test_describe_is_implied_by_read_write_delete_and_alter_and_describe_configs_by_alter_configs() -> None:
    for op in (Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.DESCRIBE):
        assert can(Authorizer([acl(op=op)]), Op.DESCRIBE), op
    for op in (Op.CREATE, Op.CLUSTER_ACTION, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS, Op.IDEMPOTENT_WRITE):
        assert not can(Authorizer([acl(op=op)]), Op.DESCRIBE), op
    assert can(Authorizer([acl(op=Op.ALTER_CONFIGS)]), Op.DESCRIBE_CONFIGS)
    assert not can(Authorizer([acl(op=Op.DESCRIBE_CONFIGS)]), Op.ALTER_CONFIGS)
    assert not can(Authorizer([acl(op=Op.DESCRIBE)]), Op.READ)  # implication goes one way only


def test_only_allows_imply_a_deny_of_read_does_not_deny_describe() -> None:
    authz = Authorizer([acl(op=Op.DESCRIBE), acl(op=Op.READ, permission=DENY)])
    assert can(authz, Op.DESCRIBE)
    assert not can(authz, Op.READ)
    # ... but a DENY of DESCRIBE beats a READ allow that would have implied it
    assert not can(Authorizer([acl(op=Op.READ), acl(op=Op.DESCRIBE, permission=DENY)]), Op.DESCRIBE)


def test_the_wildcard_principal_matches_every_principal_and_other_types_are_not_wildcards() -> None:
    authz = Authorizer([acl(op=Op.READ, principal="User:*")])
    assert can(authz, Op.READ, who=BOB)
    assert can(authz, Op.READ, who="Group:ops")  # Kafka matches User:* against any principal
    assert not can(Authorizer([acl(principal="Group:*")]), Op.READ, who="Group:ops")
    assert not can(Authorizer([acl(op=Op.READ, principal="User:*", permission=DENY), acl()]), Op.READ)


def test_hosts_match_exactly_or_by_the_wildcard() -> None:
    authz = Authorizer([acl(host="10.0.0.1")])
    assert can(authz, Op.READ, host="10.0.0.1")
    assert not can(authz, Op.READ, host="10.0.0.2")
    assert can(Authorizer([acl(host="*")]), Op.READ, host="192.168.1.7")
    denied_from_one_host = Authorizer([acl(), acl(host="10.0.0.9", permission=DENY)])
    assert can(denied_from_one_host, Op.READ, host="10.0.0.1")
    assert not can(denied_from_one_host, Op.READ, host="10.0.0.9")


def test_a_literal_wildcard_matches_every_name_of_its_type() -> None:
    authz = Authorizer([acl("*", Op.READ)])
    assert can(authz, Op.READ, "anything")
    assert can(authz, Op.READ, "*")
    assert not authz.authorize(ALICE, HOST, Op.READ, RT.GROUP, "anything")


def test_a_prefix_matches_names_starting_with_it_including_the_whole_name() -> None:
    authz = Authorizer([acl("orders", Op.READ, pattern=PT.PREFIXED)])
    assert can(authz, Op.READ, "orders")  # the prefix equal to the whole name
    assert can(authz, Op.READ, "orders-eu")
    assert not can(authz, Op.READ, "order")  # one character short
    assert not can(authz, Op.READ, "my-orders")  # a prefix, not a substring
    assert not can(authz, Op.READ, "")


def test_a_prefixed_star_is_not_a_wildcard() -> None:
    authz = Authorizer([acl("*", Op.READ, pattern=PT.PREFIXED, rtype=RT.GROUP)])
    assert not authz.authorize(ALICE, HOST, Op.READ, RT.GROUP, "g1")
    assert authz.authorize(ALICE, HOST, Op.READ, RT.GROUP, "*g1")


def test_several_prefix_lengths_are_all_consulted() -> None:
    authz = Authorizer(
        [
            acl("a", Op.READ, pattern=PT.PREFIXED),
            acl("ab", Op.WRITE, pattern=PT.PREFIXED),
            acl("abcdef", Op.READ, DENY, pattern=PT.PREFIXED),
        ]
    )
    assert can(authz, Op.READ, "abc")
    assert can(authz, Op.WRITE, "abc")
    assert not can(authz, Op.READ, "abcdefg")
    assert can(authz, Op.WRITE, "abcdefg")
    assert not can(authz, Op.WRITE, "axe")  # "ab" is not a prefix of it; "a" allows only READ


def test_super_users_may_do_everything_even_against_a_deny() -> None:
    authz = Authorizer([acl(op=Op.ALL, permission=DENY, principal="User:*")], super_users=frozenset({"User:admin"}))
    assert can(authz, Op.WRITE, who="User:admin")
    assert authz.authorize("User:admin", HOST, Op.CLUSTER_ACTION, RT.CLUSTER, CLUSTER_RESOURCE_NAME)
    assert not can(authz, Op.WRITE)


def test_allow_everyone_if_no_acl_found_applies_only_to_resources_without_any_acl() -> None:
    bindings = [acl("orders", Op.READ, principal=BOB)]
    open_authz = Authorizer(bindings, allow_everyone_if_no_acl_found=True)
    closed_authz = Authorizer(bindings, allow_everyone_if_no_acl_found=False)
    assert can(open_authz, Op.WRITE, "payments")  # no ACL at all on payments
    assert not can(closed_authz, Op.WRITE, "payments")
    assert not can(open_authz, Op.READ, "orders")  # orders has an ACL (for bob): alice is denied
    assert not can(closed_authz, Op.READ, "orders")
    # An ACL that matches the resource through a prefix or the wildcard counts as "an ACL found".
    prefixed = Authorizer(
        [acl("pay", Op.READ, principal=BOB, pattern=PT.PREFIXED)], allow_everyone_if_no_acl_found=True
    )
    assert not can(prefixed, Op.READ, "payments")
    assert can(Authorizer([], allow_everyone_if_no_acl_found=True), Op.ALTER, "x")
    assert not can(Authorizer([]), Op.READ, "x")  # Kafka's default once an authorizer is enabled


def test_authorize_refuses_an_action_that_is_not_concrete() -> None:
    authz = Authorizer([acl()])
    with pytest.raises(ValueError, match="not a concrete action"):
        authz.authorize(ALICE, HOST, Op.ANY, RT.TOPIC, "orders")
    with pytest.raises(ValueError, match="not a concrete action"):
        authz.authorize(ALICE, HOST, Op.READ, RT.ANY, "orders")


def test_the_authorizer_refuses_invalid_bindings_and_counts_duplicates_once() -> None:
    with pytest.raises(ValueError, match="invalid ACL"):
        Authorizer([acl(op=Op.ANY)])
    authz = Authorizer([acl(), acl(), acl(op=Op.WRITE)])
    assert len(authz) == 2
    assert authz.bindings == (acl(), acl(op=Op.WRITE))


def test_the_authorizer_is_bounded() -> None:
    many = (acl(f"t{i}") for i in range(ACL_COUNT_MAX + 1))
    with pytest.raises(ValueError, match="ACL_COUNT_MAX"):
        Authorizer(many)


def test_changed_adds_and_removes_without_touching_the_original() -> None:
    before = Authorizer([acl("orders", Op.READ), acl("pay", Op.WRITE, pattern=PT.PREFIXED)])
    after = before.changed(
        added=[acl("orders", Op.READ, DENY, principal="User:*"), acl("audit", Op.READ)],
        removed=[acl("pay", Op.WRITE, pattern=PT.PREFIXED), acl("never-there")],
    )
    assert can(before, Op.READ, "orders") and can(before, Op.WRITE, "payments")
    assert not can(after, Op.READ, "orders") and not can(after, Op.WRITE, "payments")
    assert can(after, Op.READ, "audit")
    assert after.bindings == (acl("orders", Op.READ), acl("orders", Op.READ, DENY, principal="User:*"), acl("audit"))
    assert acl("audit") in after and acl("audit") not in before
    emptied = after.changed(removed=after.bindings)
    assert len(emptied) == 0
    assert not can(emptied, Op.READ, "orders")
    assert can(Authorizer(allow_everyone_if_no_acl_found=True).changed(added=[acl()]).changed(removed=[acl()]), Op.READ)
    with pytest.raises(ValueError, match="invalid ACL"):
        before.changed(added=[acl(pattern=PT.MATCH)])


def test_changed_gives_the_same_decisions_as_building_from_scratch() -> None:
    rng = random.Random(180)
    pool = [
        acl(name, op, perm, principal=who, pattern=pattern)
        for name in ("a", "ab", "abc", "*", "b")
        for op in (Op.READ, Op.WRITE, Op.ALL)
        for perm in (ALLOW, DENY)
        for who in (ALICE, "User:*")
        for pattern in (PT.LITERAL, PT.PREFIXED)
        if not (pattern == PT.PREFIXED and name == "*")
    ]
    authz = Authorizer()
    held: list[AclBinding] = []
    for _ in range(100):
        added = rng.sample(pool, rng.randrange(0, 4))
        removed = rng.sample(held, min(len(held), rng.randrange(0, 4)))
        authz = authz.changed(added=added, removed=removed)
        held = [b for b in held if b not in removed] + [b for b in added if b not in held or b in removed]
        held = list(dict.fromkeys(held))
        fresh = Authorizer(held)
        assert set(authz.bindings) == set(held)
        for name in ("a", "abc", "abcd", "b", "c"):
            for op in (Op.READ, Op.WRITE, Op.DESCRIBE):
                assert authz.authorize(ALICE, HOST, op, RT.TOPIC, name) == fresh.authorize(
                    ALICE, HOST, op, RT.TOPIC, name
                )
            assert authz.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC) == fresh.authorize_any(
                ALICE, HOST, Op.WRITE, RT.TOPIC
            )


def _reference_authorize(bindings: list[AclBinding], principal: str, host: str, op: AclOperation, name: str) -> bool:
    """StandardAuthorizerData.findResult over every binding, without an index."""
    found = allowed = False
    for b in bindings:
        if b.resource_type != RT.TOPIC:
            continue
        if b.pattern_type == PT.LITERAL:
            if b.resource_name not in (name, "*"):
                continue
        elif not name.startswith(b.resource_name):
            continue
        found = True
        if b.principal not in (principal, "User:*") or b.host not in (host, "*"):
            continue
        if b.permission == DENY:
            if b.operation in (op, Op.ALL):
                return False
        elif b.operation in (op, Op.ALL) or (
            (op == Op.DESCRIBE and b.operation in (Op.READ, Op.WRITE, Op.DELETE, Op.ALTER))
            or (op == Op.DESCRIBE_CONFIGS and b.operation == Op.ALTER_CONFIGS)
        ):
            allowed = True
    return allowed or not found


def test_the_index_agrees_with_a_scan_of_every_binding() -> None:
    rng = random.Random(18)
    names = ["a", "ab", "abc", "abd", "b", "ba", "*", "orders", "orders-eu"]
    principals = [ALICE, BOB, "User:*"]
    ops = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.ALL, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS, Op.DELETE]
    for _ in range(200):
        bindings = [
            acl(
                rng.choice(names),
                rng.choice(ops),
                rng.choice([ALLOW, ALLOW, DENY]),
                principal=rng.choice(principals),
                host=rng.choice(["*", HOST, "10.0.0.2"]),
                pattern=rng.choice([PT.LITERAL, PT.PREFIXED]),
            )
            for _ in range(rng.randrange(0, 8))
        ]
        bindings = [b for b in bindings if not (b.pattern_type == PT.PREFIXED and b.resource_name == "*")]
        authz = Authorizer(bindings, allow_everyone_if_no_acl_found=True)
        for name in ["a", "abc", "abcd", "b", "orders", "orders-eu-1", "zzz"]:
            for who in (ALICE, BOB):
                for op in (Op.READ, Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.DELETE):
                    expected = _reference_authorize(bindings, who, HOST, op, name)
                    assert authz.authorize(who, HOST, op, RT.TOPIC, name) == expected, (bindings, who, op, name)


# --- authorize_any (authorizeByResourceType) ----------------------------------------------------------------------


def test_authorize_any_needs_one_allowed_resource_not_dominated_by_a_deny() -> None:
    any_write = Authorizer.authorize_any
    assert any_write(Authorizer([acl("orders", Op.WRITE)]), ALICE, HOST, Op.WRITE, RT.TOPIC)
    assert not any_write(Authorizer([acl("orders", Op.READ)]), ALICE, HOST, Op.WRITE, RT.TOPIC)
    assert not any_write(Authorizer([acl("orders", Op.WRITE, principal=BOB)]), ALICE, HOST, Op.WRITE, RT.TOPIC)
    # a literal allow dominated by the same literal deny, or by a deny prefix of it
    same = Authorizer([acl("orders", Op.WRITE), acl("orders", Op.WRITE, DENY)])
    assert not same.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    prefix = Authorizer([acl("orders", Op.WRITE), acl("ord", Op.WRITE, DENY, pattern=PT.PREFIXED)])
    assert not prefix.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    partly = Authorizer([acl("ord", Op.WRITE, pattern=PT.PREFIXED), acl("orders", Op.WRITE, DENY)])
    assert partly.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)  # "ord-x" is still writable
    # the wildcards: a wildcard deny denies even after a wildcard allow; a wildcard allow allows
    assert Authorizer([acl("*", Op.WRITE)]).authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)
    both = Authorizer([acl("*", Op.WRITE), acl("*", Op.WRITE, DENY)])
    assert not both.authorize_any(ALICE, HOST, Op.WRITE, RT.TOPIC)


def test_authorize_any_has_kafkas_quirks_super_users_the_hardcoded_probe_and_no_implication() -> None:
    admin = Authorizer([acl("*", Op.ALL, DENY, principal="User:*")], super_users=frozenset({"User:admin"}))
    assert admin.authorize_any("User:admin", HOST, Op.WRITE, RT.TOPIC)
    # allow.everyone.if.no.acl.found passes when no ACL matches the probe's name "hardcode"
    assert Authorizer([acl("orders", Op.READ)], allow_everyone_if_no_acl_found=True).authorize_any(
        ALICE, HOST, Op.WRITE, RT.TOPIC
    )
    # WRITE implies DESCRIBE in authorize, not in authorize_any
    assert not Authorizer([acl("orders", Op.WRITE)]).authorize_any(ALICE, HOST, Op.DESCRIBE, RT.TOPIC)
    assert Authorizer([acl("orders", Op.ALL)]).authorize_any(ALICE, HOST, Op.DESCRIBE, RT.TOPIC)


# --- validation ---------------------------------------------------------------------------------------------------


def test_a_valid_binding_passes_validation() -> None:
    assert validate_binding(acl()) is None
    assert validate_binding(acl("orders-", Op.WRITE, DENY, pattern=PT.PREFIXED, host="10.0.0.1")) is None
    assert validate_binding(acl(CLUSTER_RESOURCE_NAME, Op.ALTER, rtype=RT.CLUSTER)) is None
    assert validate_binding(acl("tx-1", Op.WRITE, rtype=RT.TRANSACTIONAL_ID, principal="Group:ops")) is None
    assert validate_binding(acl(principal="User:*", host="localhost")) is None  # Kafka checks neither


@pytest.mark.parametrize(
    ("binding", "reason"),
    [
        (acl(rtype=RT.ANY), "Invalid resourceType ANY"),
        (acl(rtype=RT.UNKNOWN), "Invalid resourceType UNKNOWN"),
        (acl(pattern=PT.MATCH), "Invalid patternType MATCH"),
        (acl(pattern=PT.ANY), "Invalid patternType ANY"),
        (acl(pattern=PT.UNKNOWN), "Invalid patternType UNKNOWN"),
        (acl(op=Op.ANY), "Invalid operation ANY"),
        (acl(op=Op.UNKNOWN), "Invalid operation UNKNOWN"),
        (acl(permission=AclPermissionType.ANY), "Invalid permissionType ANY"),
        (acl(permission=AclPermissionType.UNKNOWN), "Invalid permissionType UNKNOWN"),
        (
            acl("my-cluster", Op.ALTER, rtype=RT.CLUSTER),
            "The only valid name for the CLUSTER resource is kafka-cluster",
        ),
        (acl(""), "Invalid empty resource name"),
        (acl("", pattern=PT.PREFIXED), "Invalid empty resource name"),
        (acl(principal="alice"), "Could not parse principal from `alice`"),
        (acl("x" * (ACL_STRING_LENGTH_MAX + 1)), "The resource name is 32768 characters long"),
        (acl(host="h" * (ACL_STRING_LENGTH_MAX + 1)), "The host is 32768 characters long"),
    ],
)
def test_invalid_bindings_are_refused_with_invalid_request_and_the_reason(binding: AclBinding, reason: str) -> None:
    problem = validate_binding(binding)
    assert problem is not None
    assert problem.error == AclErrorCode.INVALID_REQUEST
    assert problem.message.startswith(reason), problem.message


def test_version_0_of_create_acls_supports_only_literal_patterns() -> None:
    problem = validate_binding(acl(pattern=PT.PREFIXED), api_version=0)
    assert problem is not None and problem.error == AclErrorCode.UNSUPPORTED_VERSION
    assert validate_binding(acl(pattern=PT.PREFIXED), api_version=1) is None
    assert validate_binding(acl(), api_version=0) is None


def test_wire_codes_and_unknown_codes() -> None:
    assert [t.value for t in ResourceType] == list(range(8))
    assert [t.value for t in PatternType] == list(range(5))
    assert [t.value for t in AclOperation] == list(range(15))
    assert [t.value for t in AclPermissionType] == list(range(4))
    assert ResourceType.from_code(2) is RT.TOPIC
    assert ResourceType.from_code(99) is RT.UNKNOWN
    assert PatternType.from_code(-1) is PT.UNKNOWN
    assert AclOperation.from_code(14) is Op.DESCRIBE_TOKENS
    assert AclOperation.from_code(15) is Op.UNKNOWN
    assert AclPermissionType.from_code(3) is ALLOW


def test_filters_with_unknown_parts_are_refused() -> None:
    assert validate_filter(ANY_BINDING_FILTER) is None
    for bad in (
        AclBindingFilter(resource_type=RT.UNKNOWN),
        AclBindingFilter(pattern_type=PT.UNKNOWN),
        AclBindingFilter(operation=Op.UNKNOWN),
        AclBindingFilter(permission=AclPermissionType.UNKNOWN),
    ):
        problem = validate_filter(bad)
        assert problem is not None and problem.error == AclErrorCode.INVALID_REQUEST, bad
    v0 = validate_filter(AclBindingFilter(pattern_type=PT.MATCH), api_version=0)
    assert v0 is not None and v0.error == AclErrorCode.UNSUPPORTED_VERSION
    assert validate_filter(AclBindingFilter(pattern_type=PT.LITERAL), api_version=0) is None


# --- filters (DescribeAcls, DeleteAcls) ---------------------------------------------------------------------------

LITERAL_ORDERS = acl("orders")
LITERAL_WILDCARD = acl("*")
PREFIXED_ORD = acl("ord", pattern=PT.PREFIXED)
PREFIXED_PAY = acl("pay", pattern=PT.PREFIXED)
GROUP_ACL = acl("orders", rtype=RT.GROUP)
ALL_BINDINGS = (LITERAL_ORDERS, LITERAL_WILDCARD, PREFIXED_ORD, PREFIXED_PAY, GROUP_ACL)


def selected(acl_filter: AclBindingFilter) -> set[AclBinding]:
    return {b for b in ALL_BINDINGS if matches(acl_filter, b)}


def test_the_any_filter_selects_everything() -> None:
    assert selected(ANY_BINDING_FILTER) == set(ALL_BINDINGS)
    assert Authorizer(ALL_BINDINGS).acls() == ALL_BINDINGS


def test_a_match_filter_selects_every_pattern_that_would_match_the_name() -> None:
    topic_orders = AclBindingFilter(RT.TOPIC, "orders", PT.MATCH)
    assert selected(topic_orders) == {LITERAL_ORDERS, LITERAL_WILDCARD, PREFIXED_ORD}
    assert selected(AclBindingFilter(RT.TOPIC, "ord", PT.MATCH)) == {LITERAL_WILDCARD, PREFIXED_ORD}
    assert selected(AclBindingFilter(RT.TOPIC, "or", PT.MATCH)) == {LITERAL_WILDCARD}
    assert selected(AclBindingFilter(RT.ANY, "orders", PT.MATCH)) == {
        LITERAL_ORDERS,
        LITERAL_WILDCARD,
        PREFIXED_ORD,
        GROUP_ACL,
    }
    assert selected(AclBindingFilter(RT.TOPIC, None, PT.MATCH)) == set(ALL_BINDINGS) - {GROUP_ACL}


def test_any_and_concrete_pattern_types_compare_the_name_exactly() -> None:
    assert selected(AclBindingFilter(RT.TOPIC, "orders", PT.ANY)) == {LITERAL_ORDERS}
    assert selected(AclBindingFilter(RT.TOPIC, "ord", PT.ANY)) == {PREFIXED_ORD}
    assert selected(AclBindingFilter(RT.TOPIC, "*", PT.LITERAL)) == {LITERAL_WILDCARD}  # only the wildcard itself
    assert selected(AclBindingFilter(RT.TOPIC, "orders", PT.PREFIXED)) == set()
    assert selected(AclBindingFilter(RT.TOPIC, None, PT.PREFIXED)) == {PREFIXED_ORD, PREFIXED_PAY}
    assert selected(AclBindingFilter(RT.GROUP)) == {GROUP_ACL}


def test_entry_filters_compare_principal_and_host_exactly() -> None:
    wildcard_principal = acl(principal="User:*")
    one_host = acl(host="10.0.0.1", op=Op.WRITE, permission=DENY)
    bindings = [LITERAL_ORDERS, wildcard_principal, one_host]
    assert [b for b in bindings if matches(AclBindingFilter(principal="User:*"), b)] == [wildcard_principal]
    assert [b for b in bindings if matches(AclBindingFilter(principal=ALICE), b)] == [LITERAL_ORDERS, one_host]
    assert [b for b in bindings if matches(AclBindingFilter(host="10.0.0.1"), b)] == [one_host]
    assert [b for b in bindings if matches(AclBindingFilter(operation=Op.WRITE), b)] == [one_host]
    assert [b for b in bindings if matches(AclBindingFilter(permission=DENY), b)] == [one_host]
    assert not matches(AclBindingFilter(operation=Op.ALL), LITERAL_ORDERS)  # ALL in a filter is the operation ALL


def test_a_filter_with_unknown_parts_selects_nothing() -> None:
    for bad in (AclBindingFilter(resource_type=RT.UNKNOWN), AclBindingFilter(pattern_type=PT.UNKNOWN)):
        assert selected(bad) == set()


def test_delete_acls_takes_what_the_filter_selects() -> None:
    authz = Authorizer(ALL_BINDINGS)
    doomed = authz.acls(AclBindingFilter(RT.TOPIC, "orders", PT.MATCH))
    remaining = Authorizer(b for b in authz.bindings if b not in doomed)
    assert remaining.bindings == (PREFIXED_PAY, GROUP_ACL)


# --- hosts and configuration --------------------------------------------------------------------------------------


def test_kafka_host_address_writes_addresses_as_java_does() -> None:
    assert kafka_host_address("10.0.0.1") == "10.0.0.1"
    assert kafka_host_address("::1") == "0:0:0:0:0:0:0:1"
    assert kafka_host_address("2001:DB8::0a") == "2001:db8:0:0:0:0:0:a"
    assert kafka_host_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert kafka_host_address("fe80::1%eth0") == "fe80:0:0:0:0:0:0:1%eth0"
    with pytest.raises(ValueError):
        kafka_host_address("localhost")


def test_super_users_are_parsed_as_kafka_does() -> None:
    assert parse_super_users(" User:admin ;User:ops;; ") == frozenset({"User:admin", "User:ops"})
    assert parse_super_users("") == frozenset()
    with pytest.raises(ValueError, match="not a principal"):
        parse_super_users("admin")


# --- the API table ------------------------------------------------------------------------------------------------

BROKER_API_KEYS = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    15: "DescribeGroups",
    16: "ListGroups",
    17: "SaslHandshake",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    21: "DeleteRecords",
    22: "InitProducerId",
    23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn",
    26: "EndTxn",
    27: "WriteTxnMarkers",
    28: "TxnOffsetCommit",
    29: "DescribeAcls",
    30: "CreateAcls",
    31: "DeleteAcls",
    32: "DescribeConfigs",
    33: "AlterConfigs",
    34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs",
    36: "SaslAuthenticate",
    37: "CreatePartitions",
    42: "DeleteGroups",
    43: "ElectLeaders",
    44: "IncrementalAlterConfigs",
    45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments",
    47: "OffsetDelete",
    48: "DescribeClientQuotas",
    49: "AlterClientQuotas",
    50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials",
    60: "DescribeCluster",
    61: "DescribeProducers",
    65: "DescribeTransactions",
    66: "ListTransactions",
    68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe",
}


def test_the_table_covers_every_api_the_broker_serves() -> None:
    assert {key: api.name for key, api in API_ACLS.items()} == BROKER_API_KEYS
    assert all(api.api_key == key for key, api in API_ACLS.items())


def test_only_the_handshake_apis_are_unchecked() -> None:
    assert {api.name for api in API_ACLS.values() if not api.rules} == {
        "SaslHandshake",
        "ApiVersions",
        "SaslAuthenticate",
    }


def test_the_tables_checks_are_concrete_and_filters_have_no_error() -> None:
    for api in API_ACLS.values():
        for rule in api.rules:
            assert rule.any_of, api.name
            for check in rule.any_of:
                assert check.operation not in (Op.ANY, Op.UNKNOWN), api.name
                assert check.resource_type not in (RT.ANY, RT.UNKNOWN), api.name
            if rule.any_of[-1].scope == Scope.FILTER:
                assert rule.error is None, api.name


def checks(api_key: int, when: When = When.ALWAYS) -> list[tuple[tuple[tuple[Op, RT, Scope], ...], object]]:
    return [
        (tuple((c.operation, c.resource_type, c.scope) for c in rule.any_of), rule.error)
        for rule in API_ACLS[api_key].rules
        if rule.when == when
    ]


def test_the_table_has_kafkas_checks_for_the_main_apis() -> None:
    e = AclErrorCode
    assert checks(0) == [(((Op.WRITE, RT.TOPIC, Scope.EACH),), e.TOPIC_AUTHORIZATION_FAILED)]
    assert checks(0, When.TRANSACTIONAL) == [
        (((Op.WRITE, RT.TRANSACTIONAL_ID, Scope.REQUEST),), e.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    ]
    assert checks(1, When.FROM_CONSUMER) == [(((Op.READ, RT.TOPIC, Scope.EACH),), e.TOPIC_AUTHORIZATION_FAILED)]
    assert checks(1, When.FROM_FOLLOWER) == [
        (((Op.CLUSTER_ACTION, RT.CLUSTER, Scope.REQUEST),), e.TOPIC_AUTHORIZATION_FAILED)
    ]
    assert checks(3, When.ALL_TOPICS) == [(((Op.DESCRIBE, RT.TOPIC, Scope.FILTER),), None)]
    assert checks(3, When.AUTO_CREATE) == [
        (((Op.CREATE, RT.CLUSTER, Scope.REQUEST), (Op.CREATE, RT.TOPIC, Scope.EACH)), e.TOPIC_AUTHORIZATION_FAILED)
    ]
    assert checks(8) == [
        (((Op.READ, RT.GROUP, Scope.REQUEST),), e.GROUP_AUTHORIZATION_FAILED),
        (((Op.READ, RT.TOPIC, Scope.EACH),), e.TOPIC_AUTHORIZATION_FAILED),
    ]
    assert checks(19)[0] == (
        ((Op.CREATE, RT.CLUSTER, Scope.REQUEST), (Op.CREATE, RT.TOPIC, Scope.EACH)),
        e.TOPIC_AUTHORIZATION_FAILED,
    )
    assert checks(22, When.NOT_TRANSACTIONAL) == [
        (
            ((Op.IDEMPOTENT_WRITE, RT.CLUSTER, Scope.REQUEST), (Op.WRITE, RT.TOPIC, Scope.ANY_OF_TYPE)),
            e.CLUSTER_AUTHORIZATION_FAILED,
        )
    ]
    assert checks(30) == [(((Op.ALTER, RT.CLUSTER, Scope.REQUEST),), e.CLUSTER_AUTHORIZATION_FAILED)]
    assert checks(32, When.TOPIC_CONFIGS) == [
        (((Op.DESCRIBE_CONFIGS, RT.TOPIC, Scope.EACH),), e.TOPIC_AUTHORIZATION_FAILED)
    ]
    assert checks(32, When.BROKER_CONFIGS) == [
        (((Op.DESCRIBE_CONFIGS, RT.CLUSTER, Scope.EACH),), e.CLUSTER_AUTHORIZATION_FAILED)
    ]
    assert checks(69)[0] == (((Op.DESCRIBE, RT.GROUP, Scope.EACH),), e.GROUP_AUTHORIZATION_FAILED)


# --- the metadata log's encoding ----------------------------------------------------------------------------------


def test_bindings_round_trip_through_json() -> None:
    bindings = (
        acl(),
        acl("orders-", Op.ALL, DENY, pattern=PT.PREFIXED, host="10.0.0.1", principal="User:*"),
        acl(CLUSTER_RESOURCE_NAME, Op.CLUSTER_ACTION, rtype=RT.CLUSTER, principal="User:broker"),
    )
    encoded = bindings_to_json(bindings)
    assert encoded[0] == {
        "resource_type": "TOPIC",
        "resource_name": "orders",
        "pattern_type": "LITERAL",
        "principal": "User:alice",
        "host": "*",
        "operation": "READ",
        "permission": "ALLOW",
    }
    assert bindings_from_json(encoded) == bindings
    assert binding_from_json(binding_to_json(bindings[1])) == bindings[1]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda o: o.pop("host"), "missing \\['host'\\]"),
        (lambda o: o.update(extra="x"), "unexpected \\['extra'\\]"),
        (lambda o: o.update(operation="ANY"), "operation: expected one of"),
        (lambda o: o.update(operation="read"), "operation: expected one of"),
        (lambda o: o.update(operation=3), "operation: expected one of"),
        (lambda o: o.update(pattern_type="MATCH"), "pattern_type: expected one of"),
        (lambda o: o.update(resource_type="ANY"), "resource_type: expected one of"),
        (lambda o: o.update(permission="UNKNOWN"), "permission: expected one of"),
        (lambda o: o.update(resource_name=None), "resource_name: expected a string"),
        (lambda o: o.update(principal="alice"), "Could not parse principal"),
        (lambda o: o.update(resource_name=""), "Invalid empty resource name"),
    ],
)
def test_decoding_is_strict(mutate: Callable[[dict[str, object]], object], reason: str) -> None:
    obj: dict[str, object] = dict(binding_to_json(acl()))
    mutate(obj)
    with pytest.raises(AclDecodeError, match=reason):
        binding_from_json(obj)


def test_decoding_refuses_what_is_not_a_binding_list() -> None:
    with pytest.raises(AclDecodeError):
        binding_from_json(["TOPIC"])
    with pytest.raises(AclDecodeError):
        bindings_from_json({"a": 1})
    with pytest.raises(AclDecodeError, match="more than"):
        bindings_from_json([None] * (ACL_COUNT_MAX + 1))
