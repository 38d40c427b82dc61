"""JSON responses and errors of the admin API: every failure becomes ``{"error": ..., "message": ...}`` with its status.

Runs in the controller process (aiohttp). Statuses: 400 bad input, with ``field`` naming it (nothing is proposed),
404 unknown topic/partition/broker/user, 405, 409 a change the cluster's state does not allow, 413 a body over
``REQUEST_BODY_MAX_BYTES``, 503 no controller leader (with ``retry_after_ms``). The state machine's and the topics
frontend's refusals (``CommandRejected``, ``TopicRejected``) map by their ``RejectKind``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from controller.raft.node import ConfChangeError, NotLeader, ProposalDropped
from controller.state_machine import CommandRejected, RejectKind
from controller.topics import TopicRejected
from rafka_shards.admin.requests import BadRequest

# Who made the request, once the authentication middleware knows (``rafka_shards.admin.auth``); the audit log reads
# it (``rafka_shards.admin.audit``).
PRINCIPAL: web.RequestKey[str] = web.RequestKey("principal", str)

REQUEST_BODY_MAX_BYTES = 1024 * 1024
RETRY_AFTER_MS = 500
ADMIN_SHUTDOWN_S = 3.0  # requests in flight when the node stops get this long to finish

STATUS: dict[RejectKind, tuple[int, str]] = {
    RejectKind.INVALID_TOPIC: (400, "bad_request"),
    RejectKind.INVALID_PARTITIONS: (400, "bad_request"),
    RejectKind.INVALID_REPLICATION_FACTOR: (400, "bad_request"),
    RejectKind.INVALID_REPLICA_ASSIGNMENT: (400, "bad_request"),
    RejectKind.INVALID_CONFIG: (400, "bad_request"),
    RejectKind.INVALID_REQUEST: (400, "bad_request"),
    RejectKind.UNACCEPTABLE_CREDENTIAL: (400, "bad_request"),
    RejectKind.UNSUPPORTED_SASL_MECHANISM: (400, "bad_request"),
    RejectKind.UNKNOWN_TOPIC: (404, "not_found"),
    RejectKind.UNKNOWN_BROKER: (404, "not_found"),
    RejectKind.UNKNOWN_CREDENTIAL: (404, "not_found"),
    RejectKind.TOPIC_ALREADY_EXISTS: (409, "conflict"),
    RejectKind.STALE_LEADER_EPOCH: (409, "conflict"),
    RejectKind.CONFLICT: (409, "conflict"),
    RejectKind.CONTROLLER_UNAVAILABLE: (503, "unavailable"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return json_response({"error": error, "message": message, **extra}, status=status)


def unavailable(message: str) -> web.Response:
    return error_response(503, "unavailable", message, retry_after_ms=RETRY_AFTER_MS)


def _rejected(e: CommandRejected) -> web.Response:
    status, error = STATUS[e.rejection.kind]
    if status == 503:
        return unavailable(e.rejection.message)
    if isinstance(e, TopicRejected) and e.field is not None:  # a request field the cluster cannot satisfy
        return error_response(status, error, f"{e.field}: {e.rejection.message}", field=e.field)
    return error_response(status, error, e.rejection.message)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> Any:
    """Every failure as a JSON error with the right status; nothing of a failed request has been proposed."""
    try:
        return await handler(request)
    except BadRequest as e:
        extra = {} if e.field is None else {"field": e.field}
        return error_response(400, "bad_request", e.message, **extra)
    except CommandRejected as e:
        return _rejected(e)
    except (ProposalDropped, NotLeader) as e:
        return unavailable(str(e))
    except ConfChangeError as e:
        return error_response(409, "conflict", str(e))
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", f"the request body exceeds {REQUEST_BODY_MAX_BYTES} bytes")
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return error_response(e.status, e.reason.lower().replace(" ", "_"), e.reason)


def int_param(request: web.Request, name: str, lo: int, hi: int) -> int:
    """The path parameter ``name`` as an integer in ``lo..hi``; BadRequest naming it otherwise."""
    text = request.match_info[name]
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise BadRequest(name, f"{name}: expected an integer {lo}..{hi}, got {text!r}")
    return int(text)
