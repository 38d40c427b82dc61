"""DescribeClientQuotas' filters (KRaft's ClientQuotasImage.describe: match types, strict, Kafka's errors) and
AlterClientQuotas' per-entry plan (the state machine's checks, duplicate keys), on metadata images built here."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from controller.commands import AlterClientQuota
from controller.image import MetadataImage
from controller.quotas import normalized
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.shard.kafka.handlers.alter_client_quotas import Entry, Op, plan
from rafka_shards.shard.kafka.handlers.describe_client_quotas import (
    MATCH_DEFAULT,
    MATCH_EXACT,
    MATCH_SPECIFIED,
    Component,
    describe,
    parse_filter,
)

ENTITIES = [
    {"user": "alice"},
    {"user": None},
    {"user": "alice", "client-id": "app"},
    {"user": None, "client-id": None},
    {"client-id": "app"},
    {"client-id": None},
    {"ip": "127.0.0.1"},
]
QUOTAS = MappingProxyType(
    {
        normalized(e.items()): MappingProxyType(
            {"connection_creation_rate": 5.0} if "ip" in e else {"producer_byte_rate": 1000.0 + i}
        )
        for i, e in enumerate(ENTITIES)
    }
)


def _described(components: list[Component], strict: bool = False) -> list[dict[str, str | None]]:
    return [
        {d["entity_type"]: d["entity_name"] for d in entry["entity"]}
        for entry in describe(QUOTAS, parse_filter(components, strict))
    ]


def test_no_components_is_every_entity() -> None:
    assert len(_described([])) == len(ENTITIES)
    assert _described([], strict=True) == []  # strict: only entities with no types at all


def test_exact_default_and_specified() -> None:
    exact = _described([Component("user", MATCH_EXACT, "alice")])
    assert sorted(map(str, exact)) == sorted(map(str, [{"user": "alice"}, {"client-id": "app", "user": "alice"}]))
    assert _described([Component("user", MATCH_EXACT, "alice")], strict=True) == [{"user": "alice"}]
    assert _described([Component("user", MATCH_DEFAULT, None)], strict=True) == [{"user": None}]
    specified = _described([Component("client-id", MATCH_SPECIFIED, None)], strict=True)
    assert specified == [
        {"client-id": None},
        {"client-id": "app"},
    ]  # KRaft: any entity having the type (defaults first)
    both = _described([Component("user", MATCH_DEFAULT, None), Component("client-id", MATCH_DEFAULT, None)])
    assert both == [{"client-id": None, "user": None}]
    values = describe(QUOTAS, parse_filter([Component("ip", MATCH_SPECIFIED, None)], False))
    assert values[0]["values"] == [{"key": "connection_creation_rate", "value": 5.0}]


@pytest.mark.parametrize(
    ("components", "code", "message"),
    [
        ([Component("", MATCH_EXACT, "x")], ErrorCode.INVALID_REQUEST, "Invalid empty entity type."),
        (
            [Component("user", MATCH_EXACT, "x"), Component("user", MATCH_DEFAULT, None)],
            ErrorCode.INVALID_REQUEST,
            "Entity type user cannot appear more than once in the filter.",
        ),
        ([Component("group", MATCH_EXACT, "x")], ErrorCode.UNSUPPORTED_VERSION, "Unsupported entity type group"),
        (
            [Component("user", MATCH_EXACT, None)],
            ErrorCode.INVALID_REQUEST,
            "Request specified MATCH_TYPE_EXACT, but set match string to null.",
        ),
        (
            [Component("user", MATCH_DEFAULT, "x")],
            ErrorCode.INVALID_REQUEST,
            "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.",
        ),
        (
            [Component("user", MATCH_SPECIFIED, "x")],
            ErrorCode.INVALID_REQUEST,
            "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.",
        ),
        ([Component("user", 99, None)], ErrorCode.INVALID_REQUEST, "Unknown match type 99"),
        (
            [Component("ip", MATCH_SPECIFIED, None), Component("user", MATCH_SPECIFIED, None)],
            ErrorCode.INVALID_REQUEST,
            "Invalid entity filter component combination. IP filter component should not be used with user or "
            "clientId filter component.",
        ),
    ],
)
def test_bad_filters(components: list[Component], code: ErrorCode, message: str) -> None:
    with pytest.raises(KafkaError) as e:
        parse_filter(components, False)
    assert (e.value.code, e.value.message) == (code, message)


IMAGE = replace(MetadataImage(offset=0, cluster_id="c"), client_quotas=QUOTAS)


def test_plan_makes_one_command_per_op() -> None:
    entry = Entry(
        (("user", "bob"), ("client-id", None)),
        (Op("producer_byte_rate", 1024.0, False), Op("consumer_byte_rate", 0.0, True)),
    )
    assert plan(IMAGE, entry) == [
        AlterClientQuota((("client-id", None), ("user", "bob")), "producer_byte_rate", 1024.0),
        AlterClientQuota((("client-id", None), ("user", "bob")), "consumer_byte_rate", None),
    ]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (Entry((), ()), "Invalid empty client quota entity"),
        (Entry((("user", "a"), ("user", "b")), ()), "appears more than once"),
        (Entry((("group", "g"),), ()), "Unhandled client quota entity type: group"),
        (Entry((("ip", "not-an-ip"),), ()), "not-an-ip is not a valid IP or resolvable host."),
        (Entry((("ip", None), ("user", "a")), ()), "IP entity should not be combined"),
        (Entry((("user", "a"),), (Op("bogus", 1.0, False),)), "Invalid configuration key bogus"),
        (Entry((("user", "a"),), (Op("connection_creation_rate", 1.0, False),)), "Invalid configuration key"),
        (Entry((("ip", None),), (Op("producer_byte_rate", 1.0, False),)), "Invalid configuration key"),
        (Entry((("user", "a"),), (Op("producer_byte_rate", -1.0, False),)), "must be a positive number"),
        (Entry((("user", "a"),), (Op("producer_byte_rate", 1.5, False),)), "must be a whole number"),
        (
            Entry((("user", "a"),), (Op("producer_byte_rate", 1.0, False), Op("producer_byte_rate", 2.0, False))),
            "Duplicate quota key producer_byte_rate",
        ),
    ],
)
def test_plan_refuses_with_invalid_request(entry: Entry, fragment: str) -> None:
    outcome = plan(IMAGE, entry)
    assert isinstance(outcome, KafkaError)
    assert outcome.code is ErrorCode.INVALID_REQUEST
    assert fragment in outcome.message


def test_plan_accepts_request_percentage_fractions() -> None:
    assert plan(IMAGE, Entry((("user", "a"),), (Op("request_percentage", 12.5, False),))) == [
        AlterClientQuota((("user", "a"),), "request_percentage", 12.5)
    ]
