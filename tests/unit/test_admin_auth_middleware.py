"""The admin API's authentication middleware on fake ports (no processes): credentials from the image, the cache that
spares PBKDF2 on repeated requests and misses it after a password change, 401/403 and the open probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rafka_shards.admin import auth
from rafka_shards.admin.app import build_app
from rafka_shards.admin.ports import AdminSecurity
from rafka_shards.security.admin_auth import basic_header
from rafka_shards.security.sasl import ScramMechanism, make_credential
from rafka_shards.security.scram_users import new_mock_secret, upsert_command
from tests.unit.test_admin_routes import FakeMetadata, fake_ports

SECURITY = AdminSecurity(require_auth=True, super_users=frozenset({"User:admin"}), failed_auth_delay_ms=0)


async def _set_password(metadata: FakeMetadata, user: str, password: str) -> None:
    credential = make_credential(ScramMechanism.SCRAM_SHA_256, password.encode())
    await metadata.propose(upsert_command(user, credential, new_mock_secret()))


Call = tuple[str, str, str | None] | Callable[[], Awaitable[object]]  # a request, or something done between two


def _calls(metadata: FakeMetadata, calls: list[Call]) -> list[tuple[int, Any]]:
    async def run() -> list[tuple[int, Any]]:
        ports = fake_ports(metadata, security=SECURITY)
        out = []
        async with TestClient(TestServer(build_app(ports))) as client:
            for call in calls:
                if callable(call):
                    await call()
                    continue
                method, path, authorization = call
                headers = {} if authorization is None else {"Authorization": authorization}
                body = '{"name": "t"}' if method == "POST" else None
                r = await client.request(method, path, headers=headers, data=body)
                out.append((r.status, await r.json()))
        return out

    return asyncio.run(run())


def test_passwords_are_checked_once_then_cached_until_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[str] = []
    real = auth.verify_password

    def counting(credential: Any, password: bytes) -> bool:
        checks.append(password.decode())
        return real(credential, password)

    monkeypatch.setattr(auth, "verify_password", counting)
    metadata = FakeMetadata(brokers=1)
    asyncio.run(_set_password(metadata, "admin", "pw-1"))
    asyncio.run(_set_password(metadata, "bob", "bob-pw"))
    admin, bob = basic_header("admin", "pw-1"), basic_header("bob", "bob-pw")
    answers = _calls(
        metadata,
        [
            ("GET", "/v1/status/ready", None),
            ("GET", "/v1/topics", None),
            ("GET", "/v1/topics", admin),
            ("GET", "/v1/topics", admin),
            ("POST", "/v1/topics", bob),
            ("POST", "/v1/topics", admin),
            ("GET", "/v1/topics", basic_header("admin", "wrong")),
            ("GET", "/v1/topics", basic_header("nobody", "pw-1")),
        ],
    )
    assert [status for status, _ in answers] == [200, 401, 200, 200, 403, 201, 401, 401]
    assert answers[-1] == answers[-2] and answers[-1][1]["error"] == "unauthorized"
    assert checks == ["pw-1", "bob-pw", "wrong", "pw-1"]  # admin's password once; the decoy for nobody

    # A new password: the result cached for the old credential no longer counts.
    checks.clear()
    answers = _calls(
        metadata,
        [
            ("GET", "/v1/topics", admin),
            ("GET", "/v1/topics", admin),
            lambda: _set_password(metadata, "admin", "pw-2"),
            ("GET", "/v1/topics", admin),
            ("GET", "/v1/topics", basic_header("admin", "pw-2")),
        ],
    )
    assert [status for status, _ in answers] == [200, 200, 401, 200]
    assert checks == ["pw-1", "pw-1", "pw-2"]  # once per credential and password


def test_no_path_trick_reaches_a_protected_route_without_credentials() -> None:
    async def run() -> list[bytes]:
        ports = fake_ports(FakeMetadata(brokers=1), security=SECURITY)
        server = TestServer(build_app(ports))
        await server.start_server()
        out = []
        try:
            for path in TRICKS:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                out.append((await reader.read()).split(b"\r\n", 1)[0])
                writer.close()
        finally:
            await server.close()
        return out

    statuses = asyncio.run(run())
    assert all(s.split()[1] in (b"401", b"404") for s in statuses), list(zip(TRICKS, statuses, strict=True))


TRICKS = (
    "/v1/status/../topics",
    "/v1/status/%2e%2e/topics",
    "/v1/status/..%2ftopics",
    "/v1/status/ready/../../topics",
    "/metrics/../v1/topics",
    "//v1/topics",
    "/v1/topics/",
    "/v1/status/../security/users",
)
