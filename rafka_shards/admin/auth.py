"""The admin API's authentication middleware (issue 18, "Admin API"): HTTP Basic with SCRAM users or bearer tokens,
superusers for changes, as Redpanda's admin API does it.

Runs in the controller process, as the aiohttp middleware inside ``admin.http.errors``. The rules and the checks are
the sans-IO core's (``rafka_shards.security.admin_auth``); this shell reads the credentials of the metadata image,
runs PBKDF2 in a worker thread (at most ``PBKDF2_CONCURRENCY_MAX`` at once: hashlib lets go of the GIL, so Raft and
the shards' channels keep running) and caches its results, answers a failed login after
``connection_failed_authentication_delay_ms`` (as a SASL listener does), and counts outcomes for ``/metrics``.

A 401 says the same for an unknown user, a wrong password and an unknown token: nothing tells whether a user exists
(an unknown user is checked against a decoy credential, so it costs the same PBKDF2). Nothing of a credential is
logged or repeated in an answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from rafka_shards.admin.http import PRINCIPAL, Handler, error_response, unavailable
from rafka_shards.admin.ports import AdminSecurity, MetadataReader
from rafka_shards.security.admin_auth import (
    DECOY_CREDENTIAL,
    USER_PREFIX,
    WWW_AUTHENTICATE,
    Access,
    AuthorizationError,
    BasicCredentials,
    PasswordCache,
    TokenFile,
    TokensReloaded,
    TokensReloadFailed,
    parse_authorization,
    verify_password,
)
from rafka_shards.security.sasl import ScramCredential, ScramMechanism
from rafka_shards.security.scram_users import scram_credential

log = logging.getLogger(__name__)

PBKDF2_CONCURRENCY_MAX: Final = 2  # password checks running at once (each a worker thread)
PBKDF2_WAITING_MAX: Final = 64  # password checks waiting for one of those; more logins at once get a 503

# Outcome labels of rafka_admin_auth_total.
OUTCOMES: Final = ("success", "missing", "malformed", "bad_credentials", "forbidden")

UNAUTHENTICATED = "authentication required: HTTP Basic with a SCRAM user, or a bearer token"
FAILED = "authentication failed: the credentials are not valid"


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class AuthProbe:
    """Counts of the admin API's authentication outcomes, a prometheus-client collector (``rafka_admin_auth``)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(OUTCOMES, 0)

    def count(self, outcome: str) -> None:
        self.counts[outcome] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "rafka_admin_auth",
            "admin API requests that needed credentials, by outcome (failed logins: malformed, bad_credentials)",
            labels=["outcome"],
        )
        for outcome, n in self.counts.items():
            family.add_metric([outcome], n)
        yield family


class AdminAuth:
    """The middleware and what it keeps: the token file, the password cache, the PBKDF2 semaphore."""

    def __init__(self, security: AdminSecurity, metadata: MetadataReader, probe: AuthProbe) -> None:
        self.security = security
        self.policy = security.policy
        self.probe = probe
        self._metadata = metadata
        self._tokens = None if security.tokens_file is None else TokenFile(security.tokens_file, _monotonic_ms())
        self._cache = PasswordCache()
        self._pbkdf2 = asyncio.Semaphore(PBKDF2_CONCURRENCY_MAX)
        self._checks = 0  # password checks running or waiting

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> Any:
        # The route that will run decides, not the raw path: what the router matched is what the rules were written
        # for (a path the router does not match gets a 404 whatever it looks like).
        resource = request.match_info.route.resource
        access = self.policy.access(request.method, request.path if resource is None else resource.canonical)
        if access is Access.OPEN:
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            self.probe.count("missing")
            return _unauthorized(UNAUTHENTICATED)
        try:
            credentials = parse_authorization(header)
        except AuthorizationError as e:
            return await self._failed(request, "malformed", f"authentication failed: {e}")
        if isinstance(credentials, BasicCredentials):
            if self._checks >= PBKDF2_CONCURRENCY_MAX + PBKDF2_WAITING_MAX:
                return unavailable("too many logins in progress on this node")
            principal = await self._basic(credentials)
        else:
            principal = self._bearer(credentials.token)
        if principal is None:
            return await self._failed(request, "bad_credentials", FAILED)
        request[PRINCIPAL] = principal  # who, for the audit log (rafka_shards.admin.audit), allowed or not
        if not self.policy.allows(access, principal):
            self.probe.count("forbidden")
            return error_response(
                403, "forbidden", f"{request.method} needs a superuser (super_users); {principal} is not one"
            )
        self.probe.count("success")
        return await handler(request)

    async def _failed(self, request: web.Request, outcome: str, message: str) -> web.Response:
        self.probe.count(outcome)
        log.info("admin API: failed authentication from %s (%s)", request.remote, outcome)
        # As a SASL listener answers a failed authentication: late, so guessing is slow.
        await asyncio.sleep(self.security.failed_auth_delay_ms / 1000)
        return _unauthorized(message)

    async def _basic(self, credentials: BasicCredentials) -> str | None:
        image = self._metadata.image
        stored = [
            scram_credential(record)
            for m in ScramMechanism
            if (record := image.scram_credentials.get((credentials.username, m.value))) is not None
        ]
        if not stored:
            await self._verify(credentials.username, DECOY_CREDENTIAL, credentials.password, cache=False)
            return None
        for credential in stored:
            if await self._verify(credentials.username, credential, credentials.password):
                return USER_PREFIX + credentials.username
        return None

    async def _verify(self, username: str, credential: ScramCredential, password: bytes, cache: bool = True) -> bool:
        if cache and (known := self._cache.get(username, credential, password)) is not None:
            return known
        self._checks += 1
        try:
            async with self._pbkdf2:
                ok = await asyncio.to_thread(verify_password, credential, password)
        finally:
            self._checks -= 1
        if cache:
            self._cache.put(username, credential, password, ok)
        return ok

    def _bearer(self, token: str) -> str | None:
        if self._tokens is None:
            return None
        outcome = self._tokens.maybe_reload(_monotonic_ms())
        if isinstance(outcome, TokensReloaded):
            log.info("admin API: token file %s re-read: %d token(s)", self._tokens.path, outcome.tokens)
        elif isinstance(outcome, TokensReloadFailed):
            log.error("admin API: no bearer token is accepted until the token file is fixed: %s", outcome.error)
        return self._tokens.principal(token)


def _unauthorized(message: str) -> web.Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response
