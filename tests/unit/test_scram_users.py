"""SCRAM users at the edges, without processes: the broker's credential lookup from the image (checked by running
the SASL core's ScramServer and PlainServer against ScramClient and PLAIN tokens), AlterUserScramCredentials' per-user
plan and DescribeUserScramCredentials' results with Kafka's codes and messages (KIP-554; ScramControlManager,
ZkAdminManager and ScramImage.describe), and ``/v1/security/users`` on fake ports.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from controller.commands import DeleteScramCredential, UpsertScramCredential, encode_command
from controller.image import MetadataImage, decode_image, encode_image
from controller.state_machine import apply
from rafka_shards.admin.app import ROUTES
from rafka_shards.admin.routes.openapi import openapi_document
from rafka_shards.model import ErrorCode
from rafka_shards.security.sasl import (
    PlainServer,
    SaslAuthenticationFailed,
    ScramClient,
    ScramMechanism,
    ScramServer,
    make_credential,
)
from rafka_shards.security.scram_users import (
    credential_lookup,
    credentials_by_user,
    new_mock_secret,
    sasl_credentials,
    upsert_command,
)
from rafka_shards.shard.kafka.handlers.alter_user_scram_credentials import Deletion, Upsertion, plan
from rafka_shards.shard.kafka.handlers.describe_user_scram_credentials import describe
from tests.unit.test_admin_routes import FakeMetadata, _call

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
PASSWORD = b"correct horse battery staple"
SECRET = b"0123456789abcdef0123456789abcdef"


def image_with(*commands: UpsertScramCredential | DeleteScramCredential) -> MetadataImage:
    image = MetadataImage(offset=0, cluster_id="c")
    for cmd in commands:
        image = apply(image, cmd, image.offset + 1)
    return image


def user(name: str, mechanism: ScramMechanism = SHA256, password: bytes = PASSWORD) -> UpsertScramCredential:
    return upsert_command(name, make_credential(mechanism, password), SECRET)


def authenticate(image: MetadataImage, mechanism: ScramMechanism, name: str, password: bytes) -> str | None:
    """A whole SCRAM exchange with the lookup and mock secret of ``image``; the principal, or None if refused."""
    lookup, secret = sasl_credentials(image)
    server = ScramServer(mechanism, lookup, mock_secret=secret)
    client = ScramClient(mechanism, name, password)
    try:
        server_first = server.step(client.first())
        server_final = server.step(client.final(server_first))
    except SaslAuthenticationFailed:
        return None
    client.verify(server_final)  # the server proved it holds the same credential
    assert server.done
    return server.principal


# ---- the lookup (what the SASL handlers will use) ----------------------------------------------------------------


def test_the_lookup_verifies_the_password_and_only_it() -> None:
    image = image_with(user("alice"), user("alice", SHA512, b"another one"), user("bob", SHA512))
    assert authenticate(image, SHA256, "alice", PASSWORD) == "alice"
    assert authenticate(image, SHA512, "alice", b"another one") == "alice"
    assert authenticate(image, SHA512, "alice", PASSWORD) is None  # each mechanism has its own credential
    assert authenticate(image, SHA256, "alice", b"wrong") is None
    assert authenticate(image, SHA512, "bob", PASSWORD) == "bob"
    assert authenticate(image, SHA256, "bob", PASSWORD) is None  # bob has no SCRAM-SHA-256 credential
    assert authenticate(image, SHA256, "carol", PASSWORD) is None


def test_plain_checks_the_password_against_the_same_credentials() -> None:
    lookup, secret = sasl_credentials(image_with(user("alice", SHA512)))
    assert PlainServer(lookup, mock_secret=secret).step(b"\x00alice\x00" + PASSWORD) == b""
    with pytest.raises(SaslAuthenticationFailed):
        PlainServer(lookup, mock_secret=secret).step(b"\x00alice\x00nope")


def test_the_lookup_reads_its_image_only() -> None:
    before = image_with(user("alice"))
    after = apply(before, DeleteScramCredential("alice", "SCRAM-SHA-256"), before.offset + 1)
    assert credential_lookup(before)("alice", SHA256) is not None
    assert credential_lookup(after)("alice", SHA256) is None


def test_the_mock_secret_is_the_images_once_a_credential_exists() -> None:
    assert sasl_credentials(image_with()).mock_secret is None  # no user yet: each process its own secret
    image = image_with(user("alice"))
    assert sasl_credentials(image).mock_secret == SECRET
    assert len(new_mock_secret()) == len(SECRET) and new_mock_secret() != new_mock_secret()


def test_an_unknown_user_gets_the_same_salt_from_every_broker_of_the_cluster() -> None:
    """Two shards (or a shard before and after a restart) decode the same image: same secret, same made-up salt."""
    image = image_with(user("alice"))
    firsts = []
    for img in (image, decode_image(encode_image(image))):
        lookup, secret = sasl_credentials(img)
        server = ScramServer(SHA256, lookup, lambda: b"servernonce", mock_secret=secret)
        firsts.append(server.step(b"n,,n=mallory,r=clientnonce"))
    assert firsts[0] == firsts[1]


def test_credentials_by_user_never_holds_a_password() -> None:
    image = image_with(user("bob", SHA512), user("alice", SHA512), user("alice"))
    users = credentials_by_user(image)
    assert list(users) == ["alice", "bob"]
    assert [r.mechanism for r in users["alice"]] == ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    assert PASSWORD not in repr(image).encode() and PASSWORD not in repr(users).encode()


# ---- AlterUserScramCredentials: the per-user plan --------------------------------------------------------------------


def upsertion(name: str, mechanism: int = 1, iterations: int = 4096, salted_size: int | None = None) -> Upsertion:
    size = 64 if mechanism == 2 else 32
    salt = b"salt-" + name.encode()
    salted = hashlib.pbkdf2_hmac("sha512" if mechanism == 2 else "sha256", PASSWORD, salt, 4096)
    return Upsertion(name, mechanism, iterations, salt, salted[: salted_size or size])


def outcome(image: MetadataImage, deletions: list[Deletion], upsertions: list[Upsertion]) -> dict[str, Any]:
    p = plan(image, deletions, upsertions, SECRET)
    assert set(p.users) == set(p.commands) | set(p.errors)
    return {u: (p.errors[u].code, p.errors[u].message) if u in p.errors else p.commands[u] for u in p.users}


def test_a_valid_request_becomes_commands_per_user_without_the_salted_password() -> None:
    image = image_with(user("carol"))
    out = outcome(image, [Deletion("carol", 1)], [upsertion("alice"), upsertion("alice", 2), upsertion("bob")])
    assert list(out) == ["carol", "alice", "bob"]  # each user once, in order of first appearance
    assert out["carol"] == [DeleteScramCredential("carol", "SCRAM-SHA-256")]
    assert [(c.user, c.mechanism, c.iterations) for c in out["alice"]] == [
        ("alice", "SCRAM-SHA-256", 4096),
        ("alice", "SCRAM-SHA-512", 4096),
    ]
    (cmd,) = out["bob"]
    assert cmd.salt == b"salt-bob" and cmd.mock_secret == SECRET
    salted = upsertion("bob").salted_password
    assert salted not in (cmd.stored_key, cmd.server_key)
    # The credential it stores verifies the password the client salted.
    assert authenticate(image_with(cmd), SHA256, "bob", PASSWORD) == "bob"


@pytest.mark.parametrize(
    ("up", "code", "words"),
    [
        (upsertion(""), ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        (upsertion("", mechanism=0), ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        (upsertion("a", mechanism=0), ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (upsertion("a", mechanism=3), ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (upsertion("a", iterations=4095), ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations"),
        (upsertion("a", iterations=16385), ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations"),
        (upsertion("a", salted_size=20), ErrorCode.UNACCEPTABLE_CREDENTIAL, "salted password is 32 bytes"),
        (dataclasses.replace(upsertion("a"), salt=b""), ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt"),
        (upsertion("x" * 256), ErrorCode.UNACCEPTABLE_CREDENTIAL, "limit is 255"),
    ],
)
def test_refused_upsertions_get_kafkas_codes(up: Upsertion, code: ErrorCode, words: str) -> None:
    out = outcome(image_with(), [], [up, upsertion("fine")])
    assert out[up.user][0] is code and words in out[up.user][1]
    assert len(out["fine"]) == 1  # the other user is unaffected


def test_deletions_of_missing_credentials_are_resource_not_found() -> None:
    image = image_with(user("alice"))
    out = outcome(image, [Deletion("alice", 2), Deletion("nobody", 1), Deletion("x", 9)], [])
    assert out["alice"] == (ErrorCode.RESOURCE_NOT_FOUND, out["alice"][1])
    assert "does not exist" in out["alice"][1] and out["nobody"][0] is ErrorCode.RESOURCE_NOT_FOUND
    assert out["x"][0] is ErrorCode.UNSUPPORTED_SASL_MECHANISM


def test_the_same_user_and_mechanism_twice_is_duplicate_resource_and_changes_nothing_of_that_user() -> None:
    image = image_with(user("alice"))
    out = outcome(image, [Deletion("alice", 1)], [upsertion("alice"), upsertion("alice", 2), upsertion("bob")])
    assert out["alice"] == (
        ErrorCode.DUPLICATE_RESOURCE,
        "A user credential cannot be altered twice in the same request",
    )
    assert len(out["bob"]) == 1
    out = outcome(image, [], [upsertion("bob"), upsertion("bob")])
    assert out["bob"][0] is ErrorCode.DUPLICATE_RESOURCE


def test_an_alteration_refused_for_itself_wins_over_a_duplicate_and_a_duplicate_over_a_missing_credential() -> None:
    """The ZooKeeper broker's order: each alteration's own fields, then duplicate pairs, then missing deletions."""
    out = outcome(image_with(), [], [upsertion("a"), upsertion("a", iterations=100)])
    assert out["a"][0] is ErrorCode.UNACCEPTABLE_CREDENTIAL
    out = outcome(image_with(), [Deletion("a", 1), Deletion("a", 1)], [])
    assert out["a"][0] is ErrorCode.DUPLICATE_RESOURCE


def test_a_user_with_one_bad_alteration_changes_nothing() -> None:
    out = outcome(image_with(), [], [upsertion("a"), upsertion("a", 2, iterations=20000)])
    assert out["a"][0] is ErrorCode.UNACCEPTABLE_CREDENTIAL


# ---- DescribeUserScramCredentials --------------------------------------------------------------------------------


def test_describe_all_users_in_name_order_with_mechanisms_and_iterations() -> None:
    image = image_with(user("bob", SHA512), user("alice"), user("alice", SHA512))
    for users in (None, []):
        results = describe(image, users)
        assert [r["user"] for r in results] == ["alice", "bob"]
        assert results[0]["credential_infos"] == [
            {"mechanism": 1, "iterations": 4096},
            {"mechanism": 2, "iterations": 4096},
        ]
        assert results[1]["credential_infos"] == [{"mechanism": 2, "iterations": 4096}]
        assert all(r["error_code"] == 0 and r["error_message"] is None for r in results)
    assert describe(image_with(), None) == []


def test_describe_named_users_unknown_and_duplicates() -> None:
    image = image_with(user("alice"))
    results = describe(image, ["nobody", "alice", "twice", "twice", ""])
    assert [r["user"] for r in results] == ["nobody", "alice", "twice", ""]
    nobody, alice, twice, empty = results
    assert nobody["error_code"] == ErrorCode.RESOURCE_NOT_FOUND
    assert nobody["error_message"] == "Attempt to describe a user credential that does not exist: nobody"
    assert alice["error_code"] == 0 and alice["credential_infos"] == [{"mechanism": 1, "iterations": 4096}]
    assert twice["error_code"] == ErrorCode.DUPLICATE_RESOURCE
    assert (
        twice["error_message"] == "Cannot describe SCRAM credentials for the same user twice in a single request: twice"
    )
    assert empty["error_code"] == ErrorCode.RESOURCE_NOT_FOUND


# ---- /v1/security/users --------------------------------------------------------------------------------------------


def test_users_through_the_admin_api() -> None:
    metadata = FakeMetadata(brokers=0)
    body = '{"username": "alice", "password": "s3cret-Passw0rd", "algorithm": "SCRAM-SHA-256"}'
    answers = _call(
        metadata,
        [
            ("POST", "/v1/security/users", body),
            ("POST", "/v1/security/users", body.replace("SHA-256", "SHA-512")),  # exists: use PUT
            ("POST", "/v1/security/users", body.replace("alice", "bob")),
            ("GET", "/v1/security/users", None),
            ("PUT", "/v1/security/users/alice", '{"password": "new-Passw0rd", "algorithm": "SCRAM-SHA-512"}'),
            ("GET", "/v1/security/users", None),
            ("PUT", "/v1/security/users/nobody", '{"password": "x", "algorithm": "SCRAM-SHA-512"}'),
            ("DELETE", "/v1/security/users/bob", None),
            ("DELETE", "/v1/security/users/bob", None),
            ("GET", "/v1/security/users", None),
        ],
    )
    created, exists, created_bob, listed, updated, relisted, unknown, deleted, gone, final = answers
    assert created == (201, {"username": "alice", "algorithm": "SCRAM-SHA-256"})
    assert exists[0] == 409 and exists[1]["error"] == "conflict"
    assert created_bob[0] == 201
    assert listed == (
        200,
        [{"username": "alice", "mechanisms": ["SCRAM-SHA-256"]}, {"username": "bob", "mechanisms": ["SCRAM-SHA-256"]}],
    )
    assert updated == (200, {"username": "alice", "algorithm": "SCRAM-SHA-512"})
    # The new password replaced the old one: the SCRAM-SHA-256 credential holding the old one is gone.
    assert relisted[1][0] == {"username": "alice", "mechanisms": ["SCRAM-SHA-512"]}
    assert unknown[0] == 404 and deleted == (200, {"deleted": "bob"}) and gone[0] == 404
    assert final == (200, [{"username": "alice", "mechanisms": ["SCRAM-SHA-512"]}])

    image = metadata.image
    assert authenticate(image, SHA512, "alice", b"new-Passw0rd") == "alice"
    assert authenticate(image, SHA512, "alice", b"s3cret-Passw0rd") is None
    assert authenticate(image, SHA256, "alice", b"s3cret-Passw0rd") is None
    assert image.scram_credentials[("alice", "SCRAM-SHA-512")].iterations == 4096
    assert len(image.scram_credentials[("alice", "SCRAM-SHA-512")].salt) == 32
    # Only credentials were proposed: no command carries the password, in any form a log could show.
    for cmd in metadata.proposed:
        for text in (repr(cmd).encode(), encode_command(cmd)):
            assert b"Passw0rd" not in text
    assert all(b"Passw0rd" not in repr(a).encode() for a in answers)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/security/users", '{"username": "a", "password": "p"}', "algorithm"),
        ("POST", "/v1/security/users", '{"username": "a", "password": "p", "algorithm": "MD5"}', "algorithm"),
        ("POST", "/v1/security/users", '{"username": "a", "password": "p", "algorithm": ["x"]}', "algorithm"),
        ("POST", "/v1/security/users", '{"username": "", "password": "p", "algorithm": "SCRAM-SHA-256"}', "username"),
        ("POST", "/v1/security/users", '{"username": 1, "password": "p", "algorithm": "SCRAM-SHA-256"}', "username"),
        ("POST", "/v1/security/users", '{"username": "a", "password": "", "algorithm": "SCRAM-SHA-256"}', "password"),
        (
            "POST",
            "/v1/security/users",
            '{"username": "a", "password": 12345, "algorithm": "SCRAM-SHA-256"}',
            "password",
        ),
        (
            "POST",
            "/v1/security/users",
            '{"username": "a", "password": "' + "p" * 1025 + '", "algorithm": "SCRAM-SHA-256"}',
            "password",
        ),
        ("POST", "/v1/security/users", '{"username": "a", "password": "p", "algorithm": "SCRAM-SHA-256", "x": 1}', "x"),
        ("PUT", "/v1/security/users/alice", '{"password": "p"}', "algorithm"),
        ("PUT", "/v1/security/users/" + "x" * 256, '{"password": "p", "algorithm": "SCRAM-SHA-256"}', "username"),
        ("DELETE", "/v1/security/users/" + "x" * 256, None, "username"),
    ],
)
def test_bad_user_requests_name_the_field_and_never_echo_the_password(
    method: str, path: str, body: str, field: str
) -> None:
    metadata = FakeMetadata(brokers=0)
    ((status, answer),) = _call(metadata, [(method, path, body)])
    assert status == 400 and answer["field"] == field, answer
    assert "p" * 20 not in answer["message"] and "12345" not in answer["message"]
    assert metadata.proposed == []


def test_the_openapi_document_describes_the_user_routes() -> None:
    paths = openapi_document(ROUTES)["paths"]
    assert set(paths["/v1/security/users"]) == {"get", "post"}
    assert set(paths["/v1/security/users/{username}"]) == {"put", "delete"}
    post = paths["/v1/security/users"]["post"]
    assert next(iter(post["responses"])) == "201"
    assert set(post["requestBody"]["content"]["application/json"]["example"]) == {"username", "password", "algorithm"}
