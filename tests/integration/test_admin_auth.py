"""The authenticated admin API on a real node (issue 18, "Admin API"), called as curl calls it: HTTP Basic with SCRAM
users and bearer tokens, 401 and 403, probes and /metrics open or not, superusers bootstrapped through the token file,
``/v1/security/acls`` round trips and bad input, HTTPS with a test CA and client certificates, certificates reloaded
without a restart. Nothing of a credential may appear in an answer or in the node's log."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka.admin as kafka
import pytest
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from rafka_shards.security.admin_auth import basic_header
from tests import certs
from tests.conftest import Broker, running

pytestmark = pytest.mark.integration

ROOT_TOKEN = "root-token-6c1f0e9b2d7a4c35"
CI_TOKEN = "ci-token-0a8e5d3f71b94c62"
ADMIN_PW = "admin-pw-3e9c71b04d"
BOB_PW = "bob-pw-58a0c2e7f1"
BOB_NEW_PW = "bob-new-pw-9d14b7c3a2"
CAROL_PW = "carol-pw-2b7d90e4c6"
BOOT_PW = "boot-pw-71c3e0a9d5"
SECRETS = (ROOT_TOKEN, CI_TOKEN, ADMIN_PW, BOB_PW, BOB_NEW_PW, CAROL_PW, BOOT_PW)
WAIT_S = 60.0  # bound of every wait for the node to notice a changed file (it looks every 1 s / 10 s)


def call(
    broker: Broker,
    method: str,
    path: str,
    body: Any = None,
    auth: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON or text, headers) of one request, as curl sends it."""
    data = None if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(f"{broker.admin}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context or broker.admin_tls) as r:
            status, raw, headers = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, raw, headers = e.code, e.read(), dict(e.headers)
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers


def bearer(token: str) -> str:
    return f"Bearer {token}"


ROOT = bearer(ROOT_TOKEN)
serving = contextlib.contextmanager(running)  # a node for one block, stopped cleanly after it


def wait_until(what: str, check: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S}s: {what}"
        time.sleep(0.2)


def assert_no_secret(broker: Broker) -> None:
    text = broker.log(10_000_000)
    for secret in SECRETS:
        assert secret not in text


def _secured(tmp_path: Path, *extra: str) -> Broker:
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"# bootstrap: the first superuser\n{ROOT_TOKEN} User:root\n\n{CI_TOKEN} User:ci\n")
    return Broker(
        tmp_path / "data",
        extra_args=[
            "--admin-api-require-auth",
            "true",
            "--admin-api-tokens-file",
            str(tokens),
            "--super-users",
            "User:root;User:admin",
            *extra,
        ],
    )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Broker]:
    yield from running(_secured(tmp_path))


def test_basic_and_bearer_authentication_and_superusers(secured: Broker, tmp_path: Path) -> None:
    b = secured
    # Probes and (by default) /metrics need nothing.
    assert call(b, "GET", "/v1/status/ready")[0] == 200
    assert call(b, "GET", "/v1/status/live")[0] == 200
    assert call(b, "GET", "/metrics")[0] == 200

    # No credentials: 401 with the challenge, for reads and changes alike.
    for method, path in (("GET", "/v1/topics"), ("POST", "/v1/topics"), ("GET", "/v1/security/users")):
        status, answer, headers = call(b, method, path, {"name": "x"} if method == "POST" else None)
        assert status == 401 and answer["error"] == "unauthorized", answer
        assert headers["WWW-Authenticate"] == 'Basic realm="rafka_shards"'

    # Bootstrap: the token file's superuser creates the SCRAM users (a superuser and a plain one).
    for user, pw in (("admin", ADMIN_PW), ("bob", BOB_PW)):
        new = {"username": user, "password": pw, "algorithm": "SCRAM-SHA-512" if user == "admin" else "SCRAM-SHA-256"}
        status, answer, _ = call(b, "POST", "/v1/security/users", new, ROOT)
        assert status == 201, answer
    admin, bob = basic_header("admin", ADMIN_PW), basic_header("bob", BOB_PW)

    # Reads: any authenticated user, by password (either mechanism) or token.
    for auth in (admin, bob, ROOT, bearer(CI_TOKEN), admin, bob):  # twice: the second time from the cache
        status, users, _ = call(b, "GET", "/v1/security/users", auth=auth)
        assert status == 200 and {"admin", "bob"} <= {u["username"] for u in users}

    # The other bootstrap path: a user made by a Kafka client (AlterUserScramCredentials; librdkafka salts the
    # password itself, with its own iterations) logs in to the admin API with the same password.
    kafka_admin = AdminClient({"bootstrap.servers": b.bootstrap})
    upsert = UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), CAROL_PW.encode()
    )
    for future in kafka_admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    assert call(b, "GET", "/v1/topics", auth=basic_header("carol", CAROL_PW))[0] == 200

    # Changes: superusers only (User:admin by password, User:root by token); others get 403.
    status, answer, _ = call(b, "POST", "/v1/topics", {"name": "orders", "partitions": 2}, admin)
    assert status == 201, answer
    for auth in (bob, bearer(CI_TOKEN)):
        for method, path, body in (
            ("POST", "/v1/topics", {"name": "nope"}),
            ("DELETE", "/v1/topics/orders", None),
            ("PATCH", "/v1/topics/orders", {"partitions": 3}),
            ("POST", "/v1/security/users", {"username": "eve", "password": "x" * 12, "algorithm": "SCRAM-SHA-256"}),
            ("PUT", "/v1/security/users/admin", {"password": "taken-over", "algorithm": "SCRAM-SHA-256"}),
            ("DELETE", "/v1/security/users/admin", None),
            ("POST", "/v1/security/acls", {}),
        ):
            status, answer, _ = call(b, method, path, body, auth)
            assert status == 403 and answer["error"] == "forbidden", (method, path, answer)
    assert [t["name"] for t in call(b, "GET", "/v1/topics", auth=bob)[1]] == ["orders"]  # nothing changed
    assert len(call(b, "GET", "/v1/topics/orders", auth=bob)[1]["partitions"]) == 2

    # Failures: the same answer for a wrong password, an unknown user and an unknown token.
    failures = [
        call(b, "GET", "/v1/topics", auth=auth)
        for auth in (
            basic_header("admin", "wrong-password"),
            basic_header("nobody", ADMIN_PW),
            bearer("no-such-token-0123456789"),
        )
    ]
    assert [(s, a) for s, a, _ in failures] == [failures[0][:2]] * 3 and failures[0][0] == 401
    assert "admin" not in failures[0][1]["message"] and "nobody" not in failures[1][1]["message"]
    for malformed in ("Basic !!!", "Digest x", "Basic " + "QQ=="):
        status, answer, _ = call(b, "GET", "/v1/topics", auth=malformed)
        assert status == 401 and answer["message"].startswith("authentication failed"), answer

    # A new password: the old one stops working at once (the cached result was for the old credential).
    change = {"password": BOB_NEW_PW, "algorithm": "SCRAM-SHA-512"}
    assert call(b, "PUT", "/v1/security/users/bob", change, admin)[0] == 200
    assert call(b, "GET", "/v1/topics", auth=bob)[0] == 401
    assert call(b, "GET", "/v1/topics", auth=basic_header("bob", BOB_NEW_PW))[0] == 200

    # Failed logins are counted.
    _, metrics, _ = call(b, "GET", "/metrics")
    counts = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rafka_admin_auth_total{")
    }
    assert counts["bad_credentials"] >= 4 and counts["malformed"] >= 3 and counts["forbidden"] >= 14, counts
    assert counts["missing"] >= 3 and counts["success"] >= 8, counts

    # The token file is re-read when it changes: ci's token is revoked, a new one works.
    new_token = "rotated-token-4f2b8e1c9a"
    (tmp_path / "admin-tokens").write_text(f"{ROOT_TOKEN} User:root\n{new_token} User:ops\n")
    wait_until("the new token works", lambda: call(b, "GET", "/v1/topics", auth=bearer(new_token))[0] == 200)
    assert call(b, "GET", "/v1/topics", auth=bearer(CI_TOKEN))[0] == 401
    assert call(b, "GET", "/v1/topics", auth=ROOT)[0] == 200

    assert b.alive()
    assert_no_secret(b)
    assert new_token not in b.log(10_000_000)


def test_metrics_can_require_authentication(tmp_path: Path) -> None:
    with serving(_secured(tmp_path, "--admin-metrics-open", "false")) as b:
        status, _, headers = call(b, "GET", "/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        status, text, _ = call(b, "GET", "/metrics", auth=bearer(CI_TOKEN))  # a read: any authenticated user
        assert status == 200 and "rafka_admin_auth_total" in text
        assert call(b, "GET", "/v1/status/ready")[0] == 200  # probes stay open


def test_a_bootstrap_user_is_the_first_superuser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Redpanda's RP_BOOTSTRAP_USER: no token file at all, the first superuser comes from the node's environment.
    monkeypatch.setenv("RAFKA_BOOTSTRAP_USER", f"admin:{BOOT_PW}:SCRAM-SHA-512")
    node = Broker(tmp_path / "data", extra_args=["--admin-api-require-auth", "true", "--super-users", "User:admin"])
    with serving(node) as b:
        boot = basic_header("admin", BOOT_PW)
        wait_until("the bootstrap user logs in", lambda: call(b, "GET", "/v1/security/users", auth=boot)[0] == 200)
        users = call(b, "GET", "/v1/security/users", auth=boot)[1]
        assert users == [{"username": "admin", "mechanisms": ["SCRAM-SHA-512"]}]
        assert call(b, "POST", "/v1/topics", {"name": "first"}, boot)[0] == 201  # a superuser
        # A password changed later survives a restart with the same setting: an existing user is left as it is.
        change = {"password": ADMIN_PW, "algorithm": "SCRAM-SHA-256"}
        assert call(b, "PUT", "/v1/security/users/admin", change, boot)[0] == 200
        b.restart()
        assert call(b, "GET", "/v1/topics", auth=basic_header("admin", ADMIN_PW))[0] == 200
        assert call(b, "GET", "/v1/topics", auth=boot)[0] == 401
        assert "bootstrap user 'admin' exists" in b.log(1_000_000)
        assert_no_secret(b)


ACL = {
    "resource_type": "topic",
    "resource_name": "orders",
    "principal": "User:alice",
    "operation": "READ",
    "permission": "ALLOW",
}


def _acl(**changes: str) -> dict[str, str]:
    full = {"pattern_type": "LITERAL", "host": "*", **ACL, **changes}
    full["resource_type"] = full["resource_type"].upper()
    return full


def test_acls_round_trip_and_bad_input(secured: Broker) -> None:
    b = secured
    assert call(b, "GET", "/v1/security/acls", auth=ROOT)[:2] == (200, [])
    status, created, _ = call(b, "POST", "/v1/security/acls", ACL, ROOT)
    assert (status, created) == (201, {"created": [_acl()]})
    more = [
        {**ACL, "resource_name": "orders-", "pattern_type": "prefixed", "operation": "write"},
        {**ACL, "principal": "User:bob", "permission": "deny", "host": "10.0.0.7"},
        {**ACL, "resource_type": "group", "resource_name": "billing"},
        ACL,  # already stored: kept once
    ]
    status, created, _ = call(b, "POST", "/v1/security/acls", more, ROOT)
    assert status == 201 and len(created["created"]) == 4, created

    def listed(query: str = "") -> list[dict[str, str]]:
        status, answer, _ = call(b, "GET", f"/v1/security/acls{query}", auth=bearer(CI_TOKEN))  # reads: any user
        assert status == 200, answer
        return sorted(answer, key=lambda a: sorted(a.items()))

    assert len(listed()) == 4

    # One store: Kafka clients see the ACLs the admin API made, and the admin API those a Kafka client made.
    kafka_admin = AdminClient({"bootstrap.servers": b.bootstrap})
    every = kafka.AclBindingFilter(
        kafka.ResourceType.ANY,
        None,
        kafka.ResourcePatternType.ANY,
        None,
        None,
        kafka.AclOperation.ANY,
        kafka.AclPermissionType.ANY,
    )
    seen = kafka_admin.describe_acls(every).result(timeout=30)
    assert sorted((a.name, a.principal, a.operation.name) for a in seen) == [
        ("billing", "User:alice", "READ"),
        ("orders", "User:alice", "READ"),
        ("orders", "User:bob", "READ"),
        ("orders-", "User:alice", "WRITE"),
    ]
    made = kafka.AclBinding(
        kafka.ResourceType.TOPIC,
        "audit",
        kafka.ResourcePatternType.LITERAL,
        "User:carol",
        "*",
        kafka.AclOperation.DESCRIBE,
        kafka.AclPermissionType.ALLOW,
    )
    for future in kafka_admin.create_acls([made]).values():
        future.result(timeout=30)
    assert listed("?principal=User:carol") == [
        _acl(resource_name="audit", principal="User:carol", operation="DESCRIBE")
    ]
    assert call(b, "DELETE", "/v1/security/acls?principal=User:carol", None, ROOT)[0] == 200

    assert listed("?principal=User:bob") == [_acl(principal="User:bob", permission="DENY", host="10.0.0.7")]
    assert [a["resource_type"] for a in listed("?resource_type=group")] == ["GROUP"]
    # MATCH: the ACLs that apply to the topic orders-eu: the prefixed "orders-" one only.
    assert listed("?resource_type=topic&pattern_type=match&resource_name=orders-eu") == [
        _acl(resource_name="orders-", pattern_type="PREFIXED", operation="WRITE")
    ]
    assert len(listed("?resource_type=TOPIC&operation=read")) == 2

    # Bad input: 400 with the field named, nothing created or deleted.
    for method, path, body, field, words in (
        ("POST", "/v1/security/acls", {**ACL, "operation": "REED"}, "operation", "expected one of"),
        ("POST", "/v1/security/acls", {**ACL, "resource_type": "topics"}, "resource_type", "expected one of"),
        ("POST", "/v1/security/acls", {k: v for k, v in ACL.items() if k != "principal"}, "principal", "missing"),
        ("POST", "/v1/security/acls", {**ACL, "principal": "alice"}, None, "Could not parse principal"),
        ("POST", "/v1/security/acls", '{"resource_type": "topic",', None, "not valid JSON"),
        ("POST", "/v1/security/acls", [ACL, {**ACL, "permission": "maybe"}], "[1].permission", "ALLOW, DENY"),
        ("GET", "/v1/security/acls?topic=orders", None, "topic", "unknown filter field"),
        ("GET", "/v1/security/acls?operation=unknown", None, "operation", "expected one of"),
        ("DELETE", "/v1/security/acls", None, None, "a filter is required"),
        ("DELETE", "/v1/security/acls", '{"principal": 7}', "principal", "expected a string"),
    ):
        status, answer, _ = call(b, method, path, body, ROOT)
        assert status == 400 and answer["error"] == "bad_request", (path, body, answer)
        assert answer.get("field") == field and words in answer["message"], answer
    assert len(listed()) == 4

    # DELETE by a body filter, then by the query; each answers what it removed.
    status, answer, _ = call(b, "DELETE", "/v1/security/acls", {"principal": "User:bob"}, ROOT)
    assert status == 200 and answer == {"deleted": [_acl(principal="User:bob", permission="DENY", host="10.0.0.7")]}
    status, answer, _ = call(b, "DELETE", "/v1/security/acls?resource_type=topic&pattern_type=prefixed", None, ROOT)
    assert status == 200 and [a["resource_name"] for a in answer["deleted"]] == ["orders-"]
    assert call(b, "DELETE", "/v1/security/acls?principal=User:nobody", None, ROOT)[:2] == (200, {"deleted": []})
    assert sorted(a["resource_type"] for a in listed()) == ["GROUP", "TOPIC"]
    status, answer, _ = call(b, "DELETE", "/v1/security/acls?resource_type=any", None, ROOT)
    assert status == 200 and len(answer["deleted"]) == 2
    assert listed() == []
    assert b.alive()


def _client_context(ca: Path, client: certs.Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(client.cert_file, client.key_file)
    return ctx


def test_https_with_client_certificates_and_a_certificate_reload(tmp_path: Path) -> None:
    pki = certs.make_pki(tmp_path / "pki")
    served = tmp_path / "served"  # the files the node reads, replaced below
    served.mkdir()
    (served / "admin.crt").write_bytes(pki.server.cert_file.read_bytes())
    (served / "admin.key").write_bytes(pki.server.key_file.read_bytes())
    with_cert = _client_context(pki.ca.cert_file, pki.client)
    node = _secured(
        tmp_path,
        "--admin-ssl-cert-file",
        str(served / "admin.crt"),
        "--admin-ssl-key-file",
        str(served / "admin.key"),
        "--admin-ssl-ca-file",
        str(pki.ca.cert_file),
        "--admin-ssl-client-auth",
        "required",
    )
    node.admin_tls = with_cert
    with serving(node) as b:
        assert b.admin.startswith("https://")
        assert call(b, "GET", "/v1/status/ready")[0] == 200
        assert call(b, "GET", "/v1/topics", auth=ROOT)[:2] == (200, [])
        # Plain HTTP on the HTTPS port gets no answer.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{b.admin_port}/v1/status/ready", timeout=10)
        # No client certificate, or one of a CA the node does not trust: the handshake fails.
        for ctx in (
            _client_context(pki.ca.cert_file, None),
            _client_context(pki.ca.cert_file, pki.foreign_client),
            _client_context(pki.other_ca.cert_file, pki.client),  # the client does not trust the node's CA
        ):
            with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
                call(b, "GET", "/v1/status/ready", context=ctx)

        # A new certificate from another CA, written in place: new handshakes use it without a restart.
        renewed = certs.server_cert(tmp_path / "pki", "renewed", pki.other_ca)
        tmp = served / "admin.crt.tmp"
        tmp.write_bytes(renewed.cert_file.read_bytes())
        (served / "admin.key.tmp").write_bytes(renewed.key_file.read_bytes())
        os.replace(served / "admin.key.tmp", served / "admin.key")
        os.replace(tmp, served / "admin.crt")
        trusts_new = _client_context(pki.other_ca.cert_file, pki.client)

        def serves_new() -> bool:
            try:
                return call(b, "GET", "/v1/status/live", context=trusts_new)[0] == 200
            except (urllib.error.URLError, ssl.SSLError, ConnectionError):
                return False

        wait_until("the renewed certificate is served", serves_new)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            call(b, "GET", "/v1/status/live", context=with_cert)  # trusts only the old CA
        b.admin_tls = trusts_new  # for the fixture's stop
        assert call(b, "GET", "/v1/topics", auth=ROOT)[0] == 200
        assert "reloaded" in b.log(1_000_000)

        # ops/rolling_restart.py reaches the secured node with what the environment gives it.
        restart_tool = _rolling_restart_module()
        env = {"RAFKA_ADMIN_CA_FILE": str(pki.other_ca.cert_file), "RAFKA_ADMIN_TOKEN": ROOT_TOKEN}
        env |= {"RAFKA_ADMIN_CERT_FILE": str(pki.client.cert_file), "RAFKA_ADMIN_KEY_FILE": str(pki.client.key_file)}
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            assert restart_tool.http("GET", f"{b.admin}/v1/topics")[0] == 200
            assert restart_tool.cluster_unhealthy([restart_tool.Node(b.admin, "")]) is None
            mp.delenv("RAFKA_ADMIN_TOKEN")
            assert restart_tool.http("GET", f"{b.admin}/v1/topics")[0] == 401
        assert_no_secret(b)


def _rolling_restart_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "rolling_restart_under_test", Path(__file__).parents[2] / "ops" / "rolling_restart.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
