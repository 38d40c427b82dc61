"""The audit log's core, sans-IO (issue 18): typed audit events, what may be said of a metadata command, and their
encoding as one bounded JSON line each.

Runs in every process of a node (each shard; the controller process for the admin API and the active controller's
own changes). Three kinds of event:

- ``AuthenticationEvent``: a SASL exchange (or a client certificate, an admin API credential) that succeeded or
  failed: who tried (the user name attempted, never a password, token or SCRAM proof), the mechanism, the listener,
  the client address, the result and, on failure, a reason code (``AuthFailure``).
- ``AuthorizationDenial``: an ACL check that said no: principal, client, listener, API, operation, resource.
- ``MutationEvent``: a metadata change proposed by a Kafka API handler, the admin API or the broker itself: who,
  from where (``source``: kafka / admin / internal, and ``api``: the Kafka API name or "METHOD /path"), what
  (``commands``: the command types with their non-secret fields, ``describe_command``), and the result.

The shells (``rafka_shards.ipc.audit_log``) encode each event with ``AuditEncoder`` at once (so the event objects do
not outlive the call) and write the lines in batches. Every line carries the time (ISO-8601 UTC and epoch ms, from
an injected clock), the node id, the process and a sequence number per process (gaps show dropped events). Bounds:
strings are cut at ``FIELD_CHARS_MAX``, lists at ``LIST_ITEMS_MAX``, and a line that still exceeds
``LINE_BYTES_MAX`` loses its details (``"truncated": true``), so a line is never larger than that.

``current_actor`` is a context variable the shells set around each request (the Kafka connection around each
request's task, the admin API around each HTTP request): code that proposes a change deep below a handler
(``PartitionManager.propose``) finds who asked without every call passing it down.

The schema (every field is always present unless said otherwise), documented in ``docs/architecture.md``::

    {"ts": "2026-12-02T03:00:00.123Z", "ts_ms": 1796180400123, "seq": 17, "node": 1, "process": "broker-0",
     "kind": "authentication" | "authorization" | "mutation", "result": "success" | "failure" | "denied",
     "principal": "User:alice", "client": "127.0.0.1:50123", ...the kind's own fields}
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import orjson

from controller import commands, topics
from controller.acls import AclBinding, binding_to_json
from controller.image import MetadataImage
from rafka_shards import model

FIELD_CHARS_MAX: Final = 256  # a string field (a user name, a topic name, a reason) is cut here
LIST_ITEMS_MAX: Final = 64  # a list (commands of one request, ACL bindings, configs) keeps this many items
LINE_BYTES_MAX: Final = 8 * 1024  # a line larger than this drops its details (see ``AuditEncoder.encode``)
UNKNOWN: Final = ""  # a principal or client the code that records the event does not know
TRUNCATION_MARK: Final = "…"
DEPTH_MAX: Final = 8  # nesting kept in a line (a command's fields are 3 deep at most)
ESSENTIAL_CHARS_MAX: Final = 64  # a line too large even without its details keeps this much of each field

# Fields that are never written, whatever command carries them (the credentials' material, the mock secret).
_SECRET_FIELDS: Final = frozenset({"salt", "stored_key", "server_key", "mock_secret", "password", "token"})


class Kind(enum.Enum):
    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    MUTATION = "mutation"


class Result(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # an authentication that failed, a mutation refused or failed
    DENIED = "denied"  # an authorization denial


class AuthFailure(enum.Enum):
    """Why an authentication failed: a code for machines, never the credentials."""

    BAD_CREDENTIALS = "bad_credentials"  # wrong password, unknown user, bad proof (Kafka does not tell them apart)
    MALFORMED = "malformed"  # the client's token did not parse, or was too large
    UNSUPPORTED_MECHANISM = "unsupported_mechanism"
    ILLEGAL_STATE = "illegal_state"  # a SASL request out of order
    REAUTHENTICATION = "reauthentication"  # a re-authentication changed the principal or the mechanism
    TLS_HANDSHAKE = "tls_handshake"  # the TLS handshake failed (no or a bad client certificate, ...)
    PRINCIPAL_MAPPING = "principal_mapping"  # the client certificate maps to no principal
    MISSING_CREDENTIALS = "missing_credentials"  # admin API: a request without (valid) credentials


class Source(enum.Enum):
    KAFKA = "kafka"  # a Kafka API request on a listener
    ADMIN = "admin"  # an admin API HTTP request
    INTERNAL = "internal"  # the broker itself (registration, ISR changes, producer id blocks, internal topics)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is behind the request being handled, as the shell that received it knows it."""

    principal: str  # "User:alice", "User:ANONYMOUS"
    client: str  # "127.0.0.1:50123"
    source: Source
    api: str  # the Kafka API name ("CreateTopics") or "METHOD /path" for the admin API
    listener: str = ""


current_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("audit_actor", default=None)
"""The request being handled in this task (set by the shells; None outside a request: the broker itself)."""


@dataclass(frozen=True, slots=True)
class AuthenticationEvent:
    KIND: ClassVar[Kind] = Kind.AUTHENTICATION
    user: str  # the user name attempted ("" when the exchange failed before naming one)
    mechanism: str  # SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, TLS (a client certificate), HTTP-BASIC, BEARER
    listener: str  # the Kafka listener's name, or "admin"
    client: str
    success: bool
    reason: AuthFailure | None = None  # a failure's code
    principal: str = UNKNOWN  # on success: the principal the connection now has ("User:alice")
    detail: str = ""  # a failure's particulars that are not secret (OpenSSL's reason for a failed TLS handshake)


@dataclass(frozen=True, slots=True)
class AuthorizationDenial:
    """An ACL check that denied ``operation`` on a resource (what ``rafka_shards.shard.authz`` reports)."""

    KIND: ClassVar[Kind] = Kind.AUTHORIZATION
    principal: str
    client: str
    listener: str
    api: str  # the Kafka API name, e.g. "Produce"
    operation: str  # Kafka's operation name, e.g. "WRITE"
    resource_type: str  # "TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"
    resource_name: str


@dataclass(frozen=True, slots=True)
class MutationEvent:
    KIND: ClassVar[Kind] = Kind.MUTATION
    principal: str
    client: str
    source: Source
    api: str  # the Kafka API name, "METHOD /path" of an admin request, or what the broker was doing
    commands: tuple[Mapping[str, Any], ...]  # ``describe_command`` / ``describe_topic_request`` of each change
    success: bool
    error: str = ""  # a failure's error (an error code name, an HTTP reason), never the request's body
    status: int | None = None  # an admin request's HTTP status
    listener: str = ""


AuditEvent = AuthenticationEvent | AuthorizationDenial | MutationEvent


class AuditSink(Protocol):
    """Where events go: ``rafka_shards.ipc.audit_log.AuditLog`` (or ``NULL_SINK`` when the audit log is off)."""

    def audit(self, event: AuditEvent) -> None:
        """Record ``event``; never blocks and never raises (a full queue drops it and counts the drop)."""
        ...


class _NullSink:
    def audit(self, event: AuditEvent) -> None:
        pass


NULL_SINK: Final[AuditSink] = _NullSink()


def mutation(
    commands_: Sequence[Mapping[str, Any]], *, success: bool, error: str = "", actor: Actor | None = None
) -> MutationEvent:
    """A mutation by ``actor``, by default whoever ``current_actor`` says is asking (outside a request: the broker
    itself, principal and client unknown, source internal)."""
    if actor is None:
        actor = current_actor.get()
    if actor is None:
        return MutationEvent(UNKNOWN, UNKNOWN, Source.INTERNAL, "", tuple(commands_), success, error)
    return MutationEvent(
        actor.principal,
        actor.client,
        actor.source,
        actor.api,
        tuple(commands_),
        success,
        error,
        listener=actor.listener,
    )


# ---- what may be said of a change ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-able form of a command's field value; bytes are never written (only their length)."""
    if isinstance(value, AclBinding):
        return binding_to_json(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value) if f.name not in _SECRET_FIELDS]
        return {name: _plain(getattr(value, name)) for name in names}
    return value


def describe_command(cmd: commands.Command) -> dict[str, Any]:
    """The command's type and its fields without any secret: a SCRAM credential is its user, mechanism and
    iterations (never the salt, the keys or the cluster's mock secret); an ACL command its bindings; a topic its
    name, assignments and configs."""
    out: dict[str, Any] = {"type": cmd.TYPE}
    for f in dataclasses.fields(cmd):
        if f.name in _SECRET_FIELDS:
            continue
        out[f.name] = _plain(getattr(cmd, f.name))
    return out


def describe_topic_request(proposal: topics.TopicProposal) -> dict[str, Any]:
    """A topic request as the edges propose it (``controller.topics``): its type and fields."""
    request = proposal.request
    out: dict[str, Any] = {"type": type(request).__name__}
    for f in dataclasses.fields(request):
        out[f.name] = _plain(getattr(request, f.name))
    if proposal.validate_only:
        out["validate_only"] = True
    return out


# ---- encoding ------------------------------------------------------------------------------------------------------


def _cut(value: Any, depth: int = 0, chars_max: int = FIELD_CHARS_MAX) -> Any:
    """``value`` within the bounds: strings of at most ``chars_max`` characters, lists of LIST_ITEMS_MAX items,
    nesting of DEPTH_MAX levels."""
    if isinstance(value, str):
        return value if len(value) <= chars_max else value[: chars_max - 1] + TRUNCATION_MARK
    if depth >= DEPTH_MAX:
        return TRUNCATION_MARK
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k)[:FIELD_CHARS_MAX]: _cut(v, depth + 1) for k, v in items[:LIST_ITEMS_MAX]}
        if len(items) > LIST_ITEMS_MAX:
            out["…more"] = len(items) - LIST_ITEMS_MAX
        return out
    if isinstance(value, tuple | list):
        out_list = [_cut(v, depth + 1) for v in value[:LIST_ITEMS_MAX]]
        if len(value) > LIST_ITEMS_MAX:
            out_list.append({"…more": len(value) - LIST_ITEMS_MAX})
        return out_list
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _cut(str(value), depth, chars_max)


def _iso(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class AuditEncoder:
    """Turns events into JSON lines (bytes ending in a newline) for one process: ``node`` and ``process`` name
    where they come from, ``now_ms`` is the wall clock (injected), ``seq`` counts every event encoded."""

    def __init__(self, node: int, process: str, now_ms: Callable[[], int]) -> None:
        self.node = node
        self.process = process
        self._now_ms = now_ms
        self.seq = 0

    def encode(self, event: AuditEvent) -> bytes:
        ms = self._now_ms()
        self.seq += 1
        head: dict[str, Any] = {
            "ts": _iso(ms),
            "ts_ms": ms,
            "seq": self.seq,
            "node": self.node,
            "process": self.process,
            "kind": event.KIND.value,
        }
        body = _body(event)
        line = orjson.dumps({**head, **_cut(body)}) + b"\n"
        if len(line) <= LINE_BYTES_MAX:
            return line
        # Too large (a long list of ACL bindings or configs): keep who, what kind and the result, drop the details.
        kept: dict[str, Any] = {k: _cut(body[k]) for k in _ESSENTIAL if k in body}
        if "commands" in body:
            kept["commands"] = [{"type": _cut(c.get("type", "?"))} for c in body["commands"][:LIST_ITEMS_MAX]]
        line = orjson.dumps({**head, **kept, "truncated": True}) + b"\n"
        if len(line) > LINE_BYTES_MAX:
            # Still too large: a client's long multi-byte or escaped user name, mechanism or path. The essential
            # fields cut to ESSENTIAL_CHARS_MAX fit whatever their characters (9 fields of 64 characters of at most
            # 6 bytes each, as JSON escapes them, are about 3.5 KiB).
            kept = {k: _cut(body[k], chars_max=ESSENTIAL_CHARS_MAX) for k in _ESSENTIAL if k in body}
            line = orjson.dumps({**head, **kept, "truncated": True}) + b"\n"
        assert len(line) <= LINE_BYTES_MAX, len(line)
        return line


_ESSENTIAL: Final = ("result", "principal", "client", "user", "mechanism", "listener", "source", "api", "status")


def _body(event: AuditEvent) -> dict[str, Any]:
    if isinstance(event, AuthenticationEvent):
        out: dict[str, Any] = {
            "result": (Result.SUCCESS if event.success else Result.FAILURE).value,
            "principal": event.principal,
            "client": event.client,
            "user": event.user,
            "mechanism": event.mechanism,
            "listener": event.listener,
        }
        if event.reason is not None:
            out["reason"] = event.reason.value
        if event.detail:
            out["detail"] = event.detail
        return out
    if isinstance(event, AuthorizationDenial):
        return {
            "result": Result.DENIED.value,
            "principal": event.principal,
            "client": event.client,
            "listener": event.listener,
            "api": event.api,
            "operation": event.operation,
            "resource_type": event.resource_type,
            "resource_name": event.resource_name,
        }
    out = {
        "result": (Result.SUCCESS if event.success else Result.FAILURE).value,
        "principal": event.principal,
        "client": event.client,
        "source": event.source.value,
        "api": event.api,
        "commands": [dict(c) for c in event.commands],
    }
    if event.listener:
        out["listener"] = event.listener
    if event.error:
        out["error"] = event.error
    if event.status is not None:
        out["status"] = event.status
    return out


# ---- the internal topic --------------------------------------------------------------------------------------------

AUDIT_TOPIC: Final = model.AUDIT_TOPIC
AUDIT_TOPIC_PARTITIONS: Final = 1  # one partition: every process's events in one order; audit volume is small
AUDIT_TOPIC_REPLICATION_FACTOR_MAX: Final = 3
AUDIT_TOPIC_RETENTION_MS: Final = 7 * 24 * 3600 * 1000  # Redpanda's audit topic keeps a week too


def audit_topic_request(image: MetadataImage) -> topics.NewTopic:
    """The creation of ``AUDIT_TOPIC`` on a cluster that looks like ``image``: replicated on up to three nodes."""
    nodes = {b.node_id if b.node_id is not None else -b.broker_id for b in image.brokers.values() if not b.fenced}
    replication_factor = max(1, min(AUDIT_TOPIC_REPLICATION_FACTOR_MAX, len(nodes)))
    configs = {"cleanup.policy": "delete", "retention.ms": str(AUDIT_TOPIC_RETENTION_MS)}
    return topics.NewTopic(AUDIT_TOPIC, AUDIT_TOPIC_PARTITIONS, replication_factor, configs)
