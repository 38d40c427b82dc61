"""AlterClientQuotas (API key 49), versions 0-1: set and remove client quotas (KIP-546), with ``validate_only``.

Runs in a shard process. Each entry names one entity (pairs of entity type and name, a null name for the type's
default) and its operations; each operation becomes one ``AlterClientQuota`` command (KRaft's ClientQuotaRecord).
One result per entry, with Kafka's codes: an entity that is not one a quota can be set on (empty, a type twice, an
unknown type, an invalid ip, ip with user or client-id), a key that is not a quota of the entity's kind, a key twice
in one entry, a value that is not positive and finite or not whole for a byte or connection rate: INVALID_REQUEST
with the reason (``controller.quotas``'s checks, run by the state machine's validator on this shard's image before
anything is proposed). With ``validate_only`` nothing is proposed: each entry gets the result it would have.

An entry with any error changes nothing; other entries are unaffected. An entry's commands are checked together
before the first is proposed, so only a concurrent change (or losing the controller midway) can leave part of one
entry applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from controller.acls import AclOperation
from controller.commands import AlterClientQuota
from controller.image import MetadataImage
from controller.quotas import entity_problem, normalized
from controller.state_machine import validate
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.manager import REJECTION_CODES

API_KEY: Final = 49


@dataclass(frozen=True, slots=True)
class Op:
    key: str
    value: float
    remove: bool


@dataclass(frozen=True, slots=True)
class Entry:
    entity: tuple[tuple[str, str | None], ...]  # as the request spells it (echoed in the response)
    ops: tuple[Op, ...]


def plan(image: MetadataImage, entry: Entry) -> list[AlterClientQuota] | KafkaError:
    """The entry's commands, each valid on ``image``, or the error the entry gets; nothing is proposed."""
    entity = normalized(entry.entity)
    problem = entity_problem(entity)  # checked first, so an entry without operations is still checked
    if problem is not None:
        return KafkaError(ErrorCode.INVALID_REQUEST, problem)
    keys = [op.key for op in entry.ops]
    for key in keys:
        if keys.count(key) > 1:
            return KafkaError(ErrorCode.INVALID_REQUEST, f"Duplicate quota key {key} in one entry")
    cmds = [AlterClientQuota(entity, op.key, None if op.remove else float(op.value)) for op in entry.ops]
    for cmd in cmds:
        rejection = validate(image, cmd)
        if rejection is not None:
            return KafkaError(REJECTION_CODES[rejection.kind], rejection.message)
    return cmds


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    # ALTER_CONFIGS on the cluster, else CLUSTER_AUTHORIZATION_FAILED on every entry and nothing changes (Kafka).
    manager = ctx.manager
    allowed = ctx.access.cluster(AclOperation.ALTER_CONFIGS)
    results = []
    for e in req.entries:
        entry = Entry(
            tuple((str(d.entity_type), d.entity_name) for d in e.entity),
            tuple(Op(str(o.key), float(o.value), bool(o.remove)) for o in e.ops),
        )
        denied = KafkaError(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
        outcome = plan(manager.image, entry) if allowed else denied
        if not isinstance(outcome, KafkaError) and not req.validate_only:
            for cmd in outcome:
                try:
                    await manager.propose(cmd)
                except KafkaError as err:
                    outcome = err
                    break
        error = outcome if isinstance(outcome, KafkaError) else None
        results.append(
            {
                "error_code": int(ErrorCode.NONE if error is None else error.code),
                "error_message": None if error is None else error.message,
                "entity": [{"entity_type": t, "entity_name": n} for t, n in entry.entity],
            }
        )
    return kio_codec.encode_response(API_KEY, ctx.version, {"throttle_time": 0, "entries": results})


HANDLER = ApiHandler(key=API_KEY, min_version=0, max_version=1, handle=handle)
