"""The admin API's audit trail (issue 18): every change it is asked for, and every request refused for want of
credentials or rights, as events of ``rafka_shards.security.audit``.

Runs in the controller process. ``audit_middleware`` is the outermost middleware: it sees every request and its
final status, 401 and 403 answers of the authentication middleware included. For a POST, PUT, PATCH or DELETE it
records one ``MutationEvent``: the principal (``request[http.PRINCIPAL]``, which the authentication middleware sets;
unknown without it), the client address, "METHOD /path", the HTTP status, and the metadata commands the request
proposed (collected by ``AuditingProposer``, which wraps the proposer the routes use; each command as
``describe_command`` gives it: a SCRAM user's name and mechanism, never its password, salt or keys). Nothing of the
request's body is recorded. A 401 is also an ``AuthenticationEvent`` (failed: the HTTP Basic user name attempted,
never its password; a bearer token as ``BEARER`` only), a 403 an ``AuthorizationDenial``.
Reads are not recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
from typing import Any, Final

from aiohttp import web

from controller.commands import Command
from controller.topics import TopicProposal
from rafka_shards.admin.http import PRINCIPAL, Handler
from rafka_shards.admin.ports import MetadataProposer
from rafka_shards.security.audit import (
    UNKNOWN,
    AuditSink,
    AuthenticationEvent,
    AuthFailure,
    AuthorizationDenial,
    MutationEvent,
    Source,
    describe_command,
    describe_topic_request,
)

MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ADMIN_LISTENER: Final = "admin"
COMMANDS_PER_REQUEST_MAX: Final = 1_000  # noted per request (a replication factor change: one per partition)

# The commands the current request proposed (set by the middleware; a list shared with tasks the request starts).
_proposed: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "admin_audit_proposed", default=None
)


def _client(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return request.remote or UNKNOWN


def _principal(request: web.Request) -> str:
    principal = request.get(PRINCIPAL)
    return principal if isinstance(principal, str) else UNKNOWN


def audit_middleware(sink: AuditSink) -> Any:
    """The aiohttp middleware recording ``sink``'s admin events (first in the application's middleware list)."""

    @web.middleware
    async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        mutating = request.method in MUTATING_METHODS
        if not mutating:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                if e.status in (401, 403):
                    _refused(sink, request, e.status)
                raise
            if response.status in (401, 403):
                _refused(sink, request, response.status)
            return response
        proposed: list[dict[str, Any]] = []
        token = _proposed.set(proposed)
        status = 500
        error = ""
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status, error = e.status, e.reason
            raise
        except asyncio.CancelledError:
            status, error = 499, "client went away"  # nginx's code: the answer was never sent
            raise
        except Exception as e:  # recorded, then raised as it was
            error = type(e).__name__
            raise
        finally:
            _proposed.reset(token)
            if status in (401, 403):
                _refused(sink, request, status)
            api = f"{request.method} {request.path}"
            sink.audit(
                MutationEvent(
                    _principal(request),
                    _client(request),
                    Source.ADMIN,
                    api,
                    tuple(proposed),
                    status < 400,
                    error or ("" if status < 400 else f"HTTP {status}"),
                    status,
                    ADMIN_LISTENER,
                )
            )

    return audit


def _attempted(request: web.Request) -> tuple[str, str, AuthFailure]:
    """(user, mechanism, reason) of a request refused with 401: the user name of HTTP Basic (its password is split
    off and dropped here), ``BEARER`` for a token (never the token), or no credentials at all."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).split(b":", 1)[0].decode()
        except (binascii.Error, UnicodeDecodeError):
            return UNKNOWN, "HTTP-BASIC", AuthFailure.MALFORMED
        return user, "HTTP-BASIC", AuthFailure.BAD_CREDENTIALS
    if scheme.lower() == "bearer":
        return UNKNOWN, "BEARER", AuthFailure.BAD_CREDENTIALS
    if scheme:
        return UNKNOWN, "HTTP", AuthFailure.MALFORMED
    return UNKNOWN, "HTTP", AuthFailure.MISSING_CREDENTIALS


def _refused(sink: AuditSink, request: web.Request, status: int) -> None:
    client = _client(request)
    if status == 401:
        user, mechanism, reason = _attempted(request)
        sink.audit(AuthenticationEvent(user, mechanism, ADMIN_LISTENER, client, False, reason))
    else:
        api = f"{request.method} {request.path}"
        operation = "ALTER" if request.method in MUTATING_METHODS else "DESCRIBE"
        principal = _principal(request)
        sink.audit(AuthorizationDenial(principal, client, ADMIN_LISTENER, api, operation, "ADMIN_API", request.path))


class AuditingProposer:
    """The routes' proposer: each command or topic request goes to ``inner`` and is noted, with its outcome, in the
    current request's audit event. One proposed outside a request is recorded alone (source admin)."""

    def __init__(self, inner: MetadataProposer, sink: AuditSink) -> None:
        self._inner = inner
        self._sink = sink

    async def propose(self, cmd: Command) -> int:
        return await self._noted(describe_command(cmd), self._inner.propose(cmd))

    async def propose_topic(self, proposal: TopicProposal) -> int:
        if proposal.validate_only:
            return await self._inner.propose_topic(proposal)
        return await self._noted(describe_topic_request(proposal), self._inner.propose_topic(proposal))

    async def _noted(self, what: dict[str, Any], proposing: Any) -> int:
        try:
            offset: int = await proposing
        except BaseException as e:
            self._note({**what, "error": type(e).__name__})
            raise
        self._note(what)
        return offset

    def _note(self, what: dict[str, Any]) -> None:
        proposed = _proposed.get()
        if proposed is None:
            ok = "error" not in what
            event = MutationEvent(UNKNOWN, UNKNOWN, Source.ADMIN, "", (what,), ok, str(what.get("error", "")))
            self._sink.audit(event)
        elif len(proposed) < COMMANDS_PER_REQUEST_MAX:
            proposed.append(what)
