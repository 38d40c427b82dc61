"""SCRAM users on a real node (issue 18, KIP-554): created through the admin API, confluent-kafka's and kafka-python's
AdminClient (AlterUserScramCredentials), described by both clients (DescribeUserScramCredentials) and the admin API,
refused with Kafka's error codes, deleted; then, with the node stopped, the metadata on disk is replayed into an image
whose credential lookup verifies each password in a full SCRAM exchange (the SASL core's ScramServer against
ScramClient), no password appears anywhere in the data directory or the node's log, and after a restart every user is
still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka.admin import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion as KpUpsertion

from controller.commands import NoOp, decode_command
from controller.image import MetadataImage, decode_image
from controller.raft.types import EntryKind
from controller.raft.wal import RaftStorage, decode_snapshot
from controller.state_machine import apply
from rafka_shards.security import sasl
from rafka_shards.security.scram_users import sasl_credentials
from tests.conftest import Broker
from tests.integration.helpers import admin_call

pytestmark = pytest.mark.integration

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
PASSWORDS = {
    "alice-before": "alice-old-pw-4b7e0c93aa",
    "alice": "alice-pw-7f3a9c1e5b",
    "bob": "bob-pw-0d84e26a91",
    "carol": "carol-pw-c5b1f07e3d",
    "dave": "dave-pw-9e2a6d4c18",
}
TIMEOUT_S = 30


def _alter(admin: AdminClient, alterations: list[Any]) -> dict[str, KafkaError | None]:
    """Each user's outcome: None, or the KafkaError its future raised."""
    out: dict[str, KafkaError | None] = {}
    for user, future in admin.alter_user_scram_credentials(alterations).items():
        try:
            future.result(timeout=TIMEOUT_S)
            out[user] = None
        except KafkaException as e:
            out[user] = e.args[0]
    return out


def _described(admin: AdminClient) -> dict[str, list[tuple[int, int]]]:
    """Every user as DescribeUserScramCredentials shows it: (mechanism type, iterations)."""
    users = admin.describe_user_scram_credentials().result(timeout=TIMEOUT_S)
    return {
        user: sorted((i.mechanism.value, i.iterations) for i in d.scram_credential_infos) for user, d in users.items()
    }


def _image_on_disk(data_dir: Path) -> MetadataImage:
    """The node's metadata as its stopped controller left it: the Raft snapshot, then the committed log entries."""
    raft_dir = data_dir / "controller" / "raft"
    storage, entries = RaftStorage.open(raft_dir, decode_snapshot((raft_dir / "snapshot").read_bytes()))
    try:
        image = decode_image(storage.snapshot.data)
        for e in entries:
            if e.index <= storage.hard_state.commit:
                cmd = decode_command(e.data) if e.kind == EntryKind.NORMAL else NoOp()
                image = apply(image, cmd, e.index)
        return image
    finally:
        storage.close()


def _authenticates(image: MetadataImage, mechanism: sasl.ScramMechanism, user: str, password: str) -> bool:
    lookup, secret = sasl_credentials(image)
    server = sasl.ScramServer(mechanism, lookup, mock_secret=secret)
    client = sasl.ScramClient(mechanism, user, password.encode())
    try:
        server_final = server.step(client.final(server.step(client.first())))
    except sasl.SaslAuthenticationFailed:
        return False
    client.verify(server_final)
    return server.done and server.principal == user


def test_scram_users_through_kafka_clients_and_the_admin_api(broker: Broker) -> None:
    # The admin API: a password, turned into a credential by the node.
    status, answer = admin_call(
        broker.admin,
        "POST",
        "/v1/security/users",
        {"username": "alice", "password": PASSWORDS["alice-before"], "algorithm": "SCRAM-SHA-256"},
    )
    assert (status, answer) == (201, {"username": "alice", "algorithm": "SCRAM-SHA-256"})
    change = {"password": PASSWORDS["alice"], "algorithm": "SCRAM-SHA-256"}
    assert admin_call(broker.admin, "PUT", "/v1/security/users/alice", change) == (
        200,
        {"username": "alice", "algorithm": "SCRAM-SHA-256"},
    )

    # confluent-kafka (librdkafka salts the password itself and sends the salted password).
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    outcome = _alter(
        admin,
        [
            UserScramCredentialUpsertion("bob", ScramCredentialInfo(SHA512, 8192), PASSWORDS["bob"].encode()),
            UserScramCredentialUpsertion("carol", ScramCredentialInfo(SHA256, 4096), PASSWORDS["carol"].encode()),
            UserScramCredentialUpsertion("carol", ScramCredentialInfo(SHA512, 16384), PASSWORDS["carol"].encode()),
        ],
    )
    assert outcome == {"bob": None, "carol": None}

    # kafka-python.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert kp.alter_user_scram_credentials([KpUpsertion("dave", "SCRAM-SHA-256", PASSWORDS["dave"])]) == {
            "dave": None
        }
        expected = {"alice": [(1, 4096)], "bob": [(2, 8192)], "carol": [(1, 4096), (2, 16384)], "dave": [(1, 4096)]}
        assert _described(admin) == expected
        described = kp.describe_user_scram_credentials(["carol", "nobody"])
        assert [(int(i["mechanism"]), i["iterations"]) for i in described["carol"]["credential_infos"]] == expected[
            "carol"
        ]
        assert described["nobody"]["error"] == "Attempt to describe a user credential that does not exist: nobody"

        # Refusals, per user, with Kafka's messages; nothing of a refused user changes.
        refused = kp.alter_user_scram_credentials(
            [
                KpUpsertion("erin", "SCRAM-SHA-256", "x", iterations=1000),
                KpUpsertion("frank", "SCRAM-SHA-512", "x", iterations=20000),
                KpUpsertion("gina", "SCRAM-SHA-256", "x"),
                KpUpsertion("gina", "SCRAM-SHA-256", "y"),
                KpUpsertion("", "SCRAM-SHA-256", "x"),
            ]
        )
        assert refused["erin"].startswith("Too few iterations")
        assert refused["frank"].startswith("Too many iterations")
        assert refused["gina"] == "A user credential cannot be altered twice in the same request"
        assert refused[""] == "Username must not be empty"
    finally:
        kp.close()

    # The same refusals by code, through librdkafka.
    outcome = _alter(
        admin,
        [
            UserScramCredentialUpsertion("erin", ScramCredentialInfo(SHA256, 100), b"x"),
            UserScramCredentialDeletion("nobody", SHA512),
            UserScramCredentialDeletion("bob", SHA256),  # bob has SCRAM-SHA-512 only
        ],
    )
    assert {u: e.code() if e else None for u, e in outcome.items()} == {
        "erin": KafkaError.UNACCEPTABLE_CREDENTIAL,
        "nobody": KafkaError.RESOURCE_NOT_FOUND,
        "bob": KafkaError.RESOURCE_NOT_FOUND,
    }
    futures = admin.describe_user_scram_credentials(["nobody"])
    with pytest.raises(KafkaException) as e:
        futures["nobody"].result(timeout=TIMEOUT_S)
    assert e.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    assert _described(admin) == expected  # no refused alteration changed anything

    # Deletions: one mechanism through Kafka, a whole user through the admin API.
    assert _alter(admin, [UserScramCredentialDeletion("carol", SHA512)]) == {"carol": None}
    assert admin_call(broker.admin, "DELETE", "/v1/security/users/dave") == (200, {"deleted": "dave"})
    assert admin_call(broker.admin, "DELETE", "/v1/security/users/dave")[0] == 404
    expected = {"alice": [(1, 4096)], "bob": [(2, 8192)], "carol": [(1, 4096)]}
    assert _described(admin) == expected
    status, users = admin_call(broker.admin, "GET", "/v1/security/users")
    assert (status, users) == (
        200,
        [
            {"username": "alice", "mechanisms": ["SCRAM-SHA-256"]},
            {"username": "bob", "mechanisms": ["SCRAM-SHA-512"]},
            {"username": "carol", "mechanisms": ["SCRAM-SHA-256"]},
        ],
    )

    # What is on disk verifies each password, and holds none of them.
    assert broker.stop() == 0
    image = _image_on_disk(broker.data_dir)
    assert _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_256, "alice", PASSWORDS["alice"])
    assert _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_512, "bob", PASSWORDS["bob"])
    assert _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_256, "carol", PASSWORDS["carol"])
    assert not _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_512, "carol", PASSWORDS["carol"])  # deleted
    assert not _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_256, "dave", PASSWORDS["dave"])  # deleted
    assert not _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_256, "alice", PASSWORDS["alice-before"])
    assert not _authenticates(image, sasl.ScramMechanism.SCRAM_SHA_256, "alice", PASSWORDS["bob"])
    assert len(image.scram_mock_secret) == 32
    files = [p for p in broker.data_dir.rglob("*") if p.is_file()] + [broker.log_path]
    assert len(files) > 3
    for path in files:
        content = path.read_bytes()
        for which, password in PASSWORDS.items():
            assert password.encode() not in content, (which, path)

    # After a restart every user is still there.
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert _described(admin) == expected
    assert admin_call(broker.admin, "GET", "/v1/security/users") == (200, users)
