"""The audit log (issue 18): the sans-IO core's events and their JSON lines (schema, bounds, no secrets), the
rotated file, the bounded queue that drops and counts, and the admin API's middleware over a real aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller import topics
from controller.acls import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType
from controller.commands import CreateAcls, CreateTopic, DeleteScramCredential, UpsertScramCredential
from rafka_shards.admin.app import build_app
from rafka_shards.admin.audit import AuditingProposer, audit_middleware
from rafka_shards.admin.http import PRINCIPAL, errors
from rafka_shards.admin.ports import AdminSecurity
from rafka_shards.ipc import audit_log
from rafka_shards.ipc.audit_log import AuditLog, AuditTopicError, RotatingFile
from rafka_shards.security.admin_auth import basic_header
from rafka_shards.security.audit import (
    FIELD_CHARS_MAX,
    LINE_BYTES_MAX,
    Actor,
    AuditEncoder,
    AuditEvent,
    AuthenticationEvent,
    AuthFailure,
    AuthorizationDenial,
    MutationEvent,
    Source,
    current_actor,
    describe_command,
    describe_topic_request,
    mutation,
)
from rafka_shards.security.sasl import ScramMechanism, make_credential
from rafka_shards.security.scram_users import upsert_command
from rafka_shards.shard.tls_audit import audit_failed_handshakes
from tests.certs import make_pki
from tests.unit.test_admin_routes import FakeMetadata, fake_ports

NOW_MS = 1_796_180_400_123  # 2026-12-02T03:00:00.123Z


def encoder() -> AuditEncoder:
    return AuditEncoder(3, "broker-7", lambda: NOW_MS)


def decode(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    out: dict[str, Any] = orjson.loads(line)
    return out


# ---- the core ------------------------------------------------------------------------------------------------------


def test_an_authentication_line_says_who_what_when_where_and_the_result() -> None:
    enc = encoder()
    ok = decode(
        enc.encode(AuthenticationEvent("alice", "SCRAM-SHA-512", "SASL", "127.0.0.1:5", True, None, "User:alice"))
    )
    assert ok == {
        "ts": "2026-12-02T03:00:00.123Z",
        "ts_ms": NOW_MS,
        "seq": 1,
        "node": 3,
        "process": "broker-7",
        "kind": "authentication",
        "result": "success",
        "principal": "User:alice",
        "client": "127.0.0.1:5",
        "user": "alice",
        "mechanism": "SCRAM-SHA-512",
        "listener": "SASL",
    }
    bad = decode(
        enc.encode(AuthenticationEvent("eve", "PLAIN", "SASL", "10.0.0.1:9", False, AuthFailure.BAD_CREDENTIALS))
    )
    assert (bad["seq"], bad["result"], bad["reason"], bad["user"], bad["principal"]) == (
        2,
        "failure",
        "bad_credentials",
        "eve",
        "",
    )


def test_an_authorization_denial_line() -> None:
    line = decode(
        encoder().encode(
            AuthorizationDenial("User:bob", "127.0.0.1:6", "CLIENT", "Produce", "WRITE", "TOPIC", "orders")
        )
    )
    assert {
        k: line[k] for k in ("kind", "result", "principal", "api", "operation", "resource_type", "resource_name")
    } == {
        "kind": "authorization",
        "result": "denied",
        "principal": "User:bob",
        "api": "Produce",
        "operation": "WRITE",
        "resource_type": "TOPIC",
        "resource_name": "orders",
    }


def test_a_scram_credential_is_described_by_its_user_and_mechanism_only() -> None:
    credential = make_credential(ScramMechanism.SCRAM_SHA_256, b"hunter2-password")
    cmd = upsert_command("alice", credential, b"m" * 32)
    assert isinstance(cmd, UpsertScramCredential)
    described = describe_command(cmd)
    assert described == {
        "type": "UpsertScramCredential",
        "user": "alice",
        "mechanism": "SCRAM-SHA-256",
        "iterations": credential.iterations,
    }
    line = encoder().encode(mutation([described], success=True))
    for secret in (cmd.salt, cmd.stored_key, cmd.server_key, cmd.mock_secret):
        assert secret not in line and base64.b64encode(secret) not in line and secret.hex().encode() not in line
    assert b"hunter2" not in line
    assert describe_command(DeleteScramCredential("alice", "SCRAM-SHA-256")) == {
        "type": "DeleteScramCredential",
        "user": "alice",
        "mechanism": "SCRAM-SHA-256",
    }


def test_topics_and_acls_are_described_with_their_fields() -> None:
    topic_id = uuid.uuid4()
    created = describe_command(CreateTopic("orders", topic_id, ((1, 2), (2, 1)), (("retention.ms", "1000"),)))
    assert created == {
        "type": "CreateTopic",
        "name": "orders",
        "topic_id": str(topic_id),
        "assignments": [[1, 2], [2, 1]],
        "configs": [["retention.ms", "1000"]],
    }
    proposal = topics.TopicProposal(topics.NewTopic("orders", 3, 1, {"cleanup.policy": "compact"}), topic_id)
    assert describe_topic_request(proposal) == {
        "type": "NewTopic",
        "name": "orders",
        "partitions": 3,
        "replication_factor": 1,
        "configs": {"cleanup.policy": "compact"},
        "assignments": None,
    }
    binding = AclBinding(
        ResourceType.TOPIC, "orders", PatternType.LITERAL, "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW
    )
    assert describe_command(CreateAcls((binding,)))["acls"] == [
        {
            "resource_type": "TOPIC",
            "resource_name": "orders",
            "pattern_type": "LITERAL",
            "principal": "User:bob",
            "host": "*",
            "operation": "READ",
            "permission": "ALLOW",
        }
    ]


def test_a_mutation_is_the_current_actors_or_the_brokers_own() -> None:
    what = [{"type": "DeleteTopic", "name": "t"}]
    assert mutation(what, success=True) == MutationEvent("", "", Source.INTERNAL, "", tuple(what), True)
    token = current_actor.set(Actor("User:alice", "127.0.0.1:9", Source.KAFKA, "DeleteTopics", "CLIENT"))
    try:
        event = mutation(what, success=False, error="TOPIC_AUTHORIZATION_FAILED")
    finally:
        current_actor.reset(token)
    line = decode(encoder().encode(event))
    assert {k: line[k] for k in ("principal", "client", "source", "api", "listener", "result", "error")} == {
        "principal": "User:alice",
        "client": "127.0.0.1:9",
        "source": "kafka",
        "api": "DeleteTopics",
        "listener": "CLIENT",
        "result": "failure",
        "error": "TOPIC_AUTHORIZATION_FAILED",
    }
    assert line["commands"] == what


def test_fields_are_cut_and_a_line_never_exceeds_its_bound() -> None:
    enc = encoder()
    long_user = "u" * 10_000
    line = decode(enc.encode(AuthenticationEvent(long_user, "PLAIN", "SASL", "c", False, AuthFailure.MALFORMED)))
    assert len(line["user"]) == FIELD_CHARS_MAX and line["user"].endswith("…")
    many = [{"type": "CreateTopic", "name": "x" * 200, "configs": {f"k{i}": "v" * 200 for i in range(60)}}] * 200
    raw = enc.encode(MutationEvent("User:a", "c", Source.ADMIN, "POST /v1/topics", tuple(many), True, status=200))
    assert len(raw) <= LINE_BYTES_MAX
    big = decode(raw)
    assert big["truncated"] is True and big["principal"] == "User:a" and big["status"] == 200
    assert all(c == {"type": "CreateTopic"} for c in big.get("commands", []))
    # A client's user name, mechanism and path of control characters (six bytes each once escaped) still fit.
    nasty = "\x01" * 10_000
    raw = enc.encode(AuthenticationEvent(nasty, nasty, nasty, nasty, False, AuthFailure.MALFORMED, nasty, nasty))
    assert len(raw) <= LINE_BYTES_MAX and decode(raw)["user"] == "\x01" * (FIELD_CHARS_MAX - 1) + "…"
    raw = enc.encode(MutationEvent(nasty, nasty, Source.KAFKA, nasty, ({"type": nasty, "x": nasty},), False, nasty))
    assert len(raw) <= LINE_BYTES_MAX and decode(raw)["truncated"] is True


# ---- the file ------------------------------------------------------------------------------------------------------


def test_the_file_rotates_at_its_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit-broker-0.jsonl"
    f = RotatingFile(path, max_bytes=100, backups=2)
    lines = [f"{i:09d}".encode() * 3 + b"\n" for i in range(20)]  # 28 bytes each: three per file
    for i in range(0, 20, 2):
        f.write(lines[i : i + 2])
    f.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["audit-broker-0.jsonl", "audit-broker-0.jsonl.1", "audit-broker-0.jsonl.2"]
    for name in files:
        assert 0 < (path.parent / name).stat().st_size <= 100
    kept = b"".join((path.parent / n).read_bytes() for n in reversed(files))
    assert kept == b"".join(lines[-len(kept) // 28 :])  # the newest lines, in order, none torn
    assert f.rotations == 6  # 20 lines, three per file: rotated before lines 3, 6, ..., 18
    # Reopened (a restart), it appends to the current file and counts its size.
    size = path.stat().st_size
    again = RotatingFile(path, max_bytes=100, backups=2)
    again.write([b"x\n"])
    again.close()
    assert path.stat().st_size == size + 2


def test_no_backups_means_the_full_file_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    f = RotatingFile(path, max_bytes=10, backups=0)
    f.write([b"12345678\n", b"abcdefgh\n"])
    f.close()
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"] and path.read_bytes() == b"abcdefgh\n"


# ---- the queue and the topic ---------------------------------------------------------------------------------------


class Topic:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.fail = True

    async def append(self, lines: Sequence[bytes]) -> None:
        if self.fail:
            raise AuditTopicError("not created yet")
        self.batches.append(list(lines))

    def close(self) -> None:
        pass


def event(i: int) -> AuditEvent:
    return AuthenticationEvent(f"user{i}", "PLAIN", "SASL", "c", True, None, f"User:user{i}")


def test_a_full_queue_drops_and_counts_and_the_sequence_shows_the_gap(tmp_path: Path) -> None:
    async def main() -> None:
        topic = Topic()
        audit = AuditLog(encoder(), RotatingFile(tmp_path / "a.jsonl", 1 << 20, 1), topic, queue_lines_max=3)
        for i in range(5):
            audit.audit(event(i))
        assert audit.dropped == 2
        await audit.flush()  # the topic refuses: the batch waits in its backlog
        audit.audit(event(5))
        topic.fail = False
        await audit.close()
        seqs = [decode(line)["seq"] for line in (tmp_path / "a.jsonl").read_bytes().splitlines(keepends=True)]
        assert seqs == [1, 2, 3, 6]
        assert [[decode(line)["seq"] for line in batch] for batch in topic.batches] == [[1, 2, 3, 6]]  # one batch

    asyncio.run(main())


# ---- the admin API's middleware ------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def audit(self, event: AuditEvent) -> None:
        self.events.append(event)


class Proposer:
    async def propose(self, cmd: Any) -> int:
        return 1

    async def propose_topic(self, proposal: topics.TopicProposal) -> int:
        return 2


def test_the_admin_middleware_records_changes_with_their_commands_and_refusals() -> None:
    sink = Sink()
    proposer = AuditingProposer(Proposer(), sink)

    async def create_user(request: web.Request) -> web.Response:
        request[PRINCIPAL] = "User:admin"  # what the authentication middleware sets
        credential = make_credential(ScramMechanism.SCRAM_SHA_512, b"s3cret-pw")
        await proposer.propose(upsert_command("carol", credential, b"m" * 32))
        return web.json_response({}, status=201)

    async def listed(request: web.Request) -> web.Response:
        return web.json_response([])

    async def forbidden(request: web.Request) -> web.Response:
        raise web.HTTPUnauthorized()

    async def main() -> None:
        app = web.Application(middlewares=[audit_middleware(sink), errors])
        app.router.add_post("/v1/security/users", create_user)
        app.router.add_get("/v1/topics", listed)
        app.router.add_delete("/v1/topics/{name}", forbidden)
        app.router.add_get("/v1/topics/{name}", forbidden)
        async with TestClient(TestServer(app)) as client:
            body = {"username": "carol", "password": "s3cret-pw"}
            assert (await client.post("/v1/security/users", json=body)).status == 201
            assert (await client.get("/v1/topics")).status == 200
            assert (await client.delete("/v1/topics/orders")).status == 401
            basic = "Basic " + base64.b64encode(b"mallory:hunter2-pw").decode()
            assert (await client.get("/v1/topics/x", headers={"Authorization": basic})).status == 401

    asyncio.run(main())
    created, refused, refused_change, refused_basic = sink.events
    assert isinstance(refused_basic, AuthenticationEvent)
    assert (refused_basic.user, refused_basic.mechanism, refused_basic.reason) == (
        "mallory",
        "HTTP-BASIC",
        AuthFailure.BAD_CREDENTIALS,
    )
    assert isinstance(created, MutationEvent)
    assert (created.principal, created.source, created.api, created.status, created.success) == (
        "User:admin",
        Source.ADMIN,
        "POST /v1/security/users",
        201,
        True,
    )
    assert created.commands == (
        {"type": "UpsertScramCredential", "user": "carol", "mechanism": "SCRAM-SHA-512", "iterations": 4096},
    )
    assert created.client.startswith("127.0.0.1:")
    assert isinstance(refused, AuthenticationEvent) and refused.reason is AuthFailure.MISSING_CREDENTIALS
    assert isinstance(refused_change, MutationEvent) and refused_change.status == 401 and not refused_change.success
    lines = b"".join(encoder().encode(e) for e in sink.events)
    assert b"s3cret" not in lines and b"hunter2" not in lines


@pytest.mark.parametrize("validate_only", [True, False])
def test_the_auditing_proposer_outside_a_request_records_alone(validate_only: bool) -> None:
    sink = Sink()
    proposal = topics.TopicProposal(topics.RemoveTopic("t"), uuid.uuid4(), validate_only)
    asyncio.run(AuditingProposer(Proposer(), sink).propose_topic(proposal))
    assert [e.commands for e in sink.events if isinstance(e, MutationEvent)] == (
        [] if validate_only else [({"type": "RemoveTopic", "name": "t"},)]
    )


# ---- failed TLS handshakes -----------------------------------------------------------------------------------------


def test_a_failed_tls_handshake_is_reported_with_openssls_reason(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server.cert_file, pki.server.key_file)
    server_ctx.load_verify_locations(pki.ca.cert_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    sink = Sink()
    audit_failed_handshakes(server_ctx, "MTLS", sink.audit)

    def handshake(client_cert: Any) -> bool:
        client_ctx = ssl.create_default_context(cafile=str(pki.ca.cert_file))
        client_ctx.check_hostname = False
        if client_cert is not None:
            client_ctx.load_cert_chain(client_cert.cert_file, client_cert.key_file)
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = server_ctx.wrap_bio(to_server, to_client, server_side=True)
        client = client_ctx.wrap_bio(to_client, to_server)
        for _ in range(10):  # a handshake is a few round trips
            for side in (client, server):
                try:
                    side.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except ssl.SSLError:
                    if side is server:
                        return False
            if server.version() is not None and client.version() is not None:
                try:
                    client.write(b"x")  # TLS 1.3: the server checks the client's certificate on its next read
                    server.read(1)
                except ssl.SSLError:
                    return False
                return True
        raise AssertionError("the handshake went nowhere")

    assert handshake(pki.client) and sink.events == []
    assert not handshake(None)
    assert not handshake(pki.foreign_client)
    details = [e.detail for e in sink.events if isinstance(e, AuthenticationEvent)]
    assert [e.reason for e in sink.events if isinstance(e, AuthenticationEvent)] == [AuthFailure.TLS_HANDSHAKE] * 2
    assert details[0] == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert details[1].startswith("CERTIFICATE_VERIFY_FAILED: ")


def test_a_backlog_that_overflows_while_a_batch_is_in_flight_sends_each_line_at_most_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "TOPIC_BACKLOG_LINES_MAX", 4)

    class SlowTopic(Topic):
        def __init__(self) -> None:
            super().__init__()
            self.fail = False
            self.go = asyncio.Event()

        async def append(self, lines: Sequence[bytes]) -> None:
            await self.go.wait()
            await super().append(lines)

    async def main() -> None:
        topic = SlowTopic()
        audit = AuditLog(encoder(), RotatingFile(tmp_path / "a.jsonl", 1 << 20, 1), topic)
        for i in range(3):
            audit.audit(event(i))
        await audit._write_file()  # seq 1-3 wait for the topic
        sending = asyncio.get_running_loop().create_task(audit._to_topic(topic))
        await asyncio.sleep(0)  # the batch of 1-3 is in flight
        for i in range(3, 6):
            audit.audit(event(i))
        await audit._write_file()  # 4-6 join: the backlog holds 4 at most, so 1 and 2 are dropped
        topic.go.set()
        await sending
        await audit.flush()
        await audit.close()
        sent = [decode(line)["seq"] for batch in topic.batches for line in batch]
        # 1-3 were on their way when 1 and 2 were dropped (counted, though they arrived); 3 is not sent again.
        assert sent == [1, 2, 3, 4, 5, 6]
        assert audit.dropped == 2

    asyncio.run(main())


def test_the_admin_api_audits_with_the_principal_its_authentication_found() -> None:
    metadata = FakeMetadata(brokers=1)
    sink = Sink()
    security = AdminSecurity(require_auth=True, super_users=frozenset({"User:admin"}), failed_auth_delay_ms=0)

    async def run() -> list[int]:
        for user in ("admin", "bob"):
            credential = make_credential(ScramMechanism.SCRAM_SHA_256, f"{user}-pw".encode())
            await metadata.propose(upsert_command(user, credential, b"m" * 32))
        ports = fake_ports(metadata, security=security)
        statuses = []
        calls: list[tuple[str | None, str | None]] = [
            ("admin", '{"name": "orders"}'),
            ("bob", '{"name": "x"}'),
            (None, None),
        ]
        async with TestClient(TestServer(build_app(ports, sink))) as client:
            for who, body in calls:
                headers = {} if who is None else {"Authorization": basic_header(who, f"{who}-pw")}
                r = await client.request("POST" if body else "GET", "/v1/topics", headers=headers, data=body)
                statuses.append(r.status)
        return statuses

    assert asyncio.run(run()) == [201, 403, 401]
    created, denied, refused, missing = sink.events
    assert isinstance(created, MutationEvent) and (created.principal, created.status) == ("User:admin", 201)
    assert [c["type"] for c in created.commands] == ["NewTopic"] and created.commands[0]["name"] == "orders"
    assert isinstance(denied, AuthorizationDenial) and denied.principal == "User:bob"
    assert isinstance(refused, MutationEvent) and (refused.principal, refused.status, refused.commands) == (
        "User:bob",
        403,
        (),
    )
    assert isinstance(missing, AuthenticationEvent) and missing.reason is AuthFailure.MISSING_CREDENTIALS
