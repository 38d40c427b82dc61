"""Client quotas as the metadata keeps them (KIP-546's DescribeClientQuotas / AlterClientQuotas model): entities,
keys and the checks KRaft's ``ClientQuotaControlManager`` makes. Pure: no I/O, no clock.

An entity is a set of (type, name) pairs, each type at most once, name ``None`` for the type's default (Kafka's
``<default>``): ``user``, ``client-id``, ``user`` + ``client-id``, or ``ip`` alone. It is kept as a tuple sorted by
type so one entity has one spelling. Each entity maps keys to values:

- ``producer_byte_rate``, ``consumer_byte_rate`` (bytes per second, whole numbers), ``request_percentage`` (percent
  of one request-handler thread, here: of the shard's event loop, over the quota window), ``controller_mutation_rate``
  (partitions created or deleted per second, KIP-599) for user / client-id entities;
- ``connection_creation_rate`` (connections per second, whole numbers, KIP-612) for ip entities.

Values are positive (Kafka refuses negatives; a zero byte rate would stop a client for good, so it is refused too).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from typing import Final

QuotaEntity = tuple[tuple[str, str | None], ...]

USER: Final = "user"
CLIENT_ID: Final = "client-id"
IP: Final = "ip"
ENTITY_TYPES: Final = (USER, CLIENT_ID, IP)

PRODUCER_BYTE_RATE: Final = "producer_byte_rate"
CONSUMER_BYTE_RATE: Final = "consumer_byte_rate"
REQUEST_PERCENTAGE: Final = "request_percentage"
CONTROLLER_MUTATION_RATE: Final = "controller_mutation_rate"
CONNECTION_CREATION_RATE: Final = "connection_creation_rate"
CLIENT_KEYS: Final = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE, CONTROLLER_MUTATION_RATE)
IP_KEYS: Final = (CONNECTION_CREATION_RATE,)
_WHOLE_KEYS: Final = frozenset({PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, CONNECTION_CREATION_RATE})

QUOTA_ENTITIES_MAX: Final = 100_000  # entities with at least one quota, cluster-wide
QUOTA_NAME_LENGTH_MAX: Final = 32_767
QUOTA_VALUE_MAX: Final = float(2**63 - 1)


def normalized(entity: Iterable[tuple[str, str | None]]) -> QuotaEntity:
    """The entity's one spelling: its pairs sorted by type (duplicates are kept for ``entity_problem`` to refuse)."""
    return tuple(sorted(entity, key=lambda pair: pair[0]))


def entity_problem(entity: QuotaEntity) -> str | None:
    """Why the entity is not one a quota can be set on, or None (Kafka's messages where it has them)."""
    if not entity:
        return "Invalid empty client quota entity"
    types = [t for t, _ in entity]
    if len(set(types)) != len(types):
        return f"Entity type {types[0]} appears more than once"
    for entity_type, name in entity:
        if entity_type not in ENTITY_TYPES:
            return f"Unhandled client quota entity type: {entity_type}"
        if name is not None and len(name) > QUOTA_NAME_LENGTH_MAX:
            return f"The {entity_type} name is {len(name)} characters long, more than {QUOTA_NAME_LENGTH_MAX}"
        if entity_type == USER and name == "":
            return "The user name of a quota entity cannot be empty (use the default entity)"
        if entity_type == IP and name is not None:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return f"{name} is not a valid IP or resolvable host."
    if IP in types and len(types) > 1:
        return "Invalid quota entity combination, IP entity should not be combined with User or ClientId"
    return None


def key_problem(entity: QuotaEntity, key: str, value: float | None) -> str | None:
    """Why ``key`` = ``value`` cannot be set on ``entity`` (``value`` None: removed), or None."""
    is_ip = any(t == IP for t, _ in entity)
    allowed = IP_KEYS if is_ip else CLIENT_KEYS
    if key not in allowed:
        kind = "IP" if is_ip else "user or client-id"
        return f"Invalid configuration key {key} for a {kind} entity (valid: {', '.join(allowed)})"
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        return f"Invalid value {value} for {key}: it must be a positive number"
    if value > QUOTA_VALUE_MAX:
        return f"Invalid value {value} for {key}: more than {QUOTA_VALUE_MAX:.0f}"
    if key in _WHOLE_KEYS and value != int(value):
        return f"Invalid value {value} for {key}: it must be a whole number"
    return None


def entity_to_json(entity: QuotaEntity) -> list[list[str | None]]:
    return [[t, n] for t, n in entity]
