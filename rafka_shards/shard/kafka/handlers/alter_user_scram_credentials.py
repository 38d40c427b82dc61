"""AlterUserScramCredentials (API key 51), version 0: create, replace and delete users' SCRAM credentials (KIP-554).

Runs in a shard process. An upsertion carries a salt, an iteration count and the salted password; only the stored
and server keys made from it (RFC 5802) go into the metadata log, as ``UpsertScramCredential`` commands, and a
deletion becomes ``DeleteScramCredential``. One result per user, with Kafka's codes and messages:

- an empty or oversized user name: UNACCEPTABLE_CREDENTIAL; a mechanism type other than 1 (SCRAM-SHA-256) or 2
  (SCRAM-SHA-512): UNSUPPORTED_SASL_MECHANISM; iterations outside 4096..16384 ("Too few iterations", "Too many
  iterations"), an empty or oversized salt, a salted password of the wrong length: UNACCEPTABLE_CREDENTIAL
  (these are the state machine's own checks, run on this shard's image before anything is proposed);
- the same (user, mechanism) twice in the request: DUPLICATE_RESOURCE for that user, as in KIP-554 and the ZooKeeper
  broker (KRaft's ScramControlManager refuses a second alteration of a user even for another mechanism; librdkafka
  and the Java client document (user, mechanism) as what must be unique, so that is the rule here);
- a deletion of a credential that does not exist: RESOURCE_NOT_FOUND;
- then the user's commands are proposed in order; a refusal or an unavailable controller is the user's result.

A user with any error changes nothing; other users of the request are unaffected (Kafka's per-user results). A
user's commands are checked together before the first is proposed, so only a concurrent change to the same user
(or losing the controller midway) can leave part of one user's alterations applied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.acls import AclOperation
from controller.commands import DeleteScramCredential, UpsertScramCredential
from controller.image import MetadataImage
from controller.scram import scram_username_error
from controller.state_machine import validate
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.security.sasl import ScramMechanism
from rafka_shards.security.scram_users import new_mock_secret, salted_password_command
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.manager import REJECTION_CODES

DUPLICATE_MESSAGE = "A user credential cannot be altered twice in the same request"


@dataclass(frozen=True, slots=True)
class Deletion:
    user: str
    mechanism_type: int


@dataclass(frozen=True, slots=True)
class Upsertion:
    user: str
    mechanism_type: int
    iterations: int
    salt: bytes = field(repr=False)
    salted_password: bytes = field(repr=False)


ScramCommand = UpsertScramCredential | DeleteScramCredential


@dataclass(slots=True)
class Plan:
    """Each user of the request once, in order of first appearance: its commands, or the error it gets."""

    users: list[str] = field(default_factory=list)
    commands: dict[str, list[ScramCommand]] = field(default_factory=dict)
    errors: dict[str, KafkaError] = field(default_factory=dict)

    def fail(self, user: str, error: KafkaError) -> None:
        self.errors.setdefault(user, error)  # the first error found is the user's
        self.commands[user] = []


def _command(image: MetadataImage, item: Deletion | Upsertion, mock_secret: bytes) -> ScramCommand | KafkaError:
    mechanism = ScramMechanism.from_kafka_type(item.mechanism_type)
    if mechanism is None:
        problem = scram_username_error(item.user)  # Kafka checks the name first
        if problem is not None:
            return KafkaError(ErrorCode.UNACCEPTABLE_CREDENTIAL, problem)
        return KafkaError(ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"Unknown SCRAM mechanism type {item.mechanism_type}")
    cmd: ScramCommand
    if isinstance(item, Deletion):
        cmd = DeleteScramCredential(item.user, mechanism.value)
    else:
        size = len(item.salted_password)
        if size != mechanism.digest_size:
            return KafkaError(
                ErrorCode.UNACCEPTABLE_CREDENTIAL,
                f"A {mechanism.value} salted password is {mechanism.digest_size} bytes, not {size}",
            )
        cmd = salted_password_command(
            item.user, mechanism, item.salt, item.iterations, item.salted_password, mock_secret
        )
    rejection = validate(image, cmd)
    if rejection is not None:
        return KafkaError(REJECTION_CODES[rejection.kind], rejection.message)
    return cmd


def plan(image: MetadataImage, deletions: list[Deletion], upsertions: list[Upsertion], mock_secret: bytes) -> Plan:
    """What the request does to each of its users, checked against ``image``; nothing is proposed. The checks come
    in the ZooKeeper broker's order: each alteration's own fields, then duplicate pairs, then deletions of
    credentials that are not there."""
    out = Plan()
    items: list[Deletion | Upsertion] = [*deletions, *upsertions]
    checked = [(item, _command(image, item, mock_secret)) for item in items]
    for item, result in checked:
        if item.user not in out.commands:
            out.users.append(item.user)
            out.commands[item.user] = []
        if isinstance(result, KafkaError) and result.code is not ErrorCode.RESOURCE_NOT_FOUND:
            out.fail(item.user, result)
    pairs = Counter((item.user, item.mechanism_type) for item in items)
    for item, _ in checked:
        if pairs[(item.user, item.mechanism_type)] > 1:
            out.fail(item.user, KafkaError(ErrorCode.DUPLICATE_RESOURCE, DUPLICATE_MESSAGE))
    for item, result in checked:
        if item.user in out.errors:
            continue
        if isinstance(result, KafkaError):
            out.fail(item.user, result)
        else:
            out.commands[item.user].append(result)
    return out


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    # ALTER on the cluster; Kafka answers a denial with CLUSTER_AUTHORIZATION_FAILED for every user of the request.
    if not ctx.access.cluster(AclOperation.ALTER):
        users = dict.fromkeys([str(d.name) for d in req.deletions] + [str(u.name) for u in req.upsertions])
        denied = [
            {
                "user": user,
                "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                "error_message": AUTHORIZATION_FAILED_MESSAGE,
            }
            for user in users
        ]
        return kio_codec.encode_response(51, ctx.version, {"throttle_time": 0, "results": denied})
    deletions = [Deletion(str(d.name), int(d.mechanism)) for d in req.deletions]
    upsertions = [
        Upsertion(str(u.name), int(u.mechanism), int(u.iterations), bytes(u.salt), bytes(u.salted_password))
        for u in req.upsertions
    ]
    manager = ctx.manager
    todo = plan(manager.image, deletions, upsertions, new_mock_secret())
    for user in todo.users:
        for cmd in todo.commands[user]:
            try:
                await manager.propose(cmd)
            except KafkaError as e:
                todo.fail(user, e)
                break
    results = []
    for user in todo.users:
        error = todo.errors.get(user)
        results.append(
            {
                "user": user,
                "error_code": int(ErrorCode.NONE if error is None else error.code),
                "error_message": None if error is None else error.message,
            }
        )
    return kio_codec.encode_response(51, ctx.version, {"throttle_time": 0, "results": results})


HANDLER = ApiHandler(key=51, min_version=0, max_version=0, handle=handle)
