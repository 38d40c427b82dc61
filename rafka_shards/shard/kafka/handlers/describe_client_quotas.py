"""DescribeClientQuotas (API key 48), versions 0-1: the client quotas the metadata holds, filtered (KIP-546).

Runs in a shard process; answered from the shard's metadata image, as KRaft brokers answer from theirs
(``ClientQuotasImage.describe``). A filter is a list of components, each on one entity type (user, client-id, ip)
with a match type: 0 = exact name (``match`` set), 1 = the type's default (``match`` null), 2 = any entity having the
type, named or default (``match`` null). An entity matches when it has every filtered type as the component says;
``strict`` also excludes entities with types the filter does not name. No components: every entity.

A bad filter fails the whole request, entries null, with Kafka's codes and messages: an empty entity type, a type
twice, a match string where the match type takes none (or none where it needs one), an unknown match type, an ip
component beside a user or client-id one: INVALID_REQUEST; an unknown entity type: UNSUPPORTED_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from controller.acls import AclOperation
from controller.quotas import CLIENT_ID, ENTITY_TYPES, IP, USER, QuotaEntity
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.security.quota import Quotas
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

API_KEY: Final = 48
MATCH_EXACT: Final = 0
MATCH_DEFAULT: Final = 1
MATCH_SPECIFIED: Final = 2


@dataclass(frozen=True, slots=True)
class Component:
    entity_type: str
    match_type: int
    match: str | None


@dataclass(frozen=True, slots=True)
class Filter:
    exact: dict[str, str | None]  # entity type -> the name it must have (None: the default)
    types: frozenset[str]  # entity types it must have, any name
    strict: bool

    def matches(self, entity: QuotaEntity) -> bool:
        names = dict(entity)
        if self.strict and len(names) != len(self.exact) + len(self.types):
            return False
        for entity_type, name in self.exact.items():
            if entity_type not in names or names[entity_type] != name:
                return False
        return all(entity_type in names for entity_type in self.types)


def _invalid(message: str) -> KafkaError:
    return KafkaError(ErrorCode.INVALID_REQUEST, message)


def parse_filter(components: list[Component], strict: bool) -> Filter:
    """The filter, or the KafkaError the whole request gets (the checks of ``ClientQuotasImage.describe``, in its
    order)."""
    exact: dict[str, str | None] = {}
    types: set[str] = set()
    for c in components:
        if not c.entity_type:
            raise _invalid("Invalid empty entity type.")
        if c.entity_type in exact or c.entity_type in types:
            raise _invalid(f"Entity type {c.entity_type} cannot appear more than once in the filter.")
        if c.entity_type not in ENTITY_TYPES:
            raise KafkaError(ErrorCode.UNSUPPORTED_VERSION, f"Unsupported entity type {c.entity_type}")
        if c.match_type == MATCH_EXACT:
            if c.match is None:
                raise _invalid("Request specified MATCH_TYPE_EXACT, but set match string to null.")
            exact[c.entity_type] = c.match
        elif c.match_type == MATCH_DEFAULT:
            if c.match is not None:
                raise _invalid("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
            exact[c.entity_type] = None
        elif c.match_type == MATCH_SPECIFIED:
            if c.match is not None:
                raise _invalid("Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
            types.add(c.entity_type)
        else:
            raise _invalid(f"Unknown match type {c.match_type}")
    named = set(exact) | types
    if IP in named and (USER in named or CLIENT_ID in named):
        raise _invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or "
            "clientId filter component."
        )
    return Filter(exact, frozenset(types), strict)


def describe(quotas: Quotas, f: Filter) -> list[dict[str, Any]]:
    """The response's entries: each matching entity with its values, in entity order (the image keeps no order)."""
    entries = []
    for entity in sorted(quotas, key=lambda e: [(t, n is not None, n or "") for t, n in e]):
        if f.matches(entity):
            values = quotas[entity]
            entries.append(
                {
                    "entity": [{"entity_type": t, "entity_name": n} for t, n in entity],
                    "values": [{"key": k, "value": float(values[k])} for k in sorted(values)],
                }
            )
    return entries


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    # DESCRIBE_CONFIGS on the cluster, else CLUSTER_AUTHORIZATION_FAILED in error_code with entries null (Kafka).
    components = [Component(str(c.entity_type), int(c.match_type), c.match) for c in req.components]
    body: dict[str, Any] = {"throttle_time": 0, "error_code": 0, "error_message": None, "entries": None}
    if not ctx.access.cluster(AclOperation.DESCRIBE_CONFIGS):
        body["error_code"] = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
        body["error_message"] = AUTHORIZATION_FAILED_MESSAGE
        return kio_codec.encode_response(API_KEY, ctx.version, body)
    try:
        body["entries"] = describe(ctx.manager.image.client_quotas, parse_filter(components, bool(req.strict)))
    except KafkaError as e:
        body["error_code"], body["error_message"] = int(e.code), e.message
    return kio_codec.encode_response(API_KEY, ctx.version, body)


HANDLER = ApiHandler(key=API_KEY, min_version=0, max_version=1, handle=handle)
