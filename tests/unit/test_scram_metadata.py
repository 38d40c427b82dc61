"""SCRAM credentials in the metadata (KIP-554): the two commands' codec, their validation and apply, the image codec.

The rules are Kafka's ScramControlManager's (user name, mechanism, 4096..16384 iterations, deletion of a credential
that is not there refused with RESOURCE_NOT_FOUND's kind), plus this project's bounds (salt and key sizes, the
number of credentials) and its cluster-wide mock secret, which the first credential sets for good.
"""

from __future__ import annotations

import base64
import dataclasses

import orjson
import pytest

from controller.commands import (
    CommandDecodeError,
    DeleteScramCredential,
    UpsertScramCredential,
    decode_command,
    encode_command,
)
from controller.image import ImageDecodeError, MetadataImage, ScramCredentialRecord, decode_image, encode_image
from controller.scram import (
    SCRAM_CREDENTIALS_MAX,
    SCRAM_ITERATIONS_MAX,
    SCRAM_ITERATIONS_MIN,
    SCRAM_MECHANISMS,
    SCRAM_MOCK_SECRET_BYTES,
    SCRAM_USERNAME_BYTES_MAX,
)
from controller.state_machine import RejectKind, apply, validate

SHA256, SHA512 = "SCRAM-SHA-256", "SCRAM-SHA-512"
SECRET_A = bytes(range(SCRAM_MOCK_SECRET_BYTES))
SECRET_B = bytes(reversed(range(SCRAM_MOCK_SECRET_BYTES)))


def upsert(
    user: str = "alice", mechanism: str = SHA256, iterations: int = 4096, secret: bytes = SECRET_A, **changes: object
) -> UpsertScramCredential:
    size = SCRAM_MECHANISMS.get(mechanism, 32)
    cmd = UpsertScramCredential(
        user, mechanism, b"salt-" + user.encode(errors="surrogatepass"), iterations, b"s" * size, b"k" * size, secret
    )
    return dataclasses.replace(cmd, **changes)  # type: ignore[arg-type]


def empty() -> MetadataImage:
    return MetadataImage(offset=0, cluster_id="cluster-1")


def run(*commands: UpsertScramCredential | DeleteScramCredential) -> MetadataImage:
    image = empty()
    for i, cmd in enumerate(commands):
        image = apply(image, cmd, i + 1)
    return image


# ---- the commands' encoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [upsert(), upsert("bob", SHA512, 16384), DeleteScramCredential("alice", SHA256)])
def test_commands_round_trip(cmd: UpsertScramCredential | DeleteScramCredential) -> None:
    assert decode_command(encode_command(cmd)) == cmd


def test_bytes_are_base64_in_the_json() -> None:
    body = orjson.loads(encode_command(upsert()))
    assert body["salt"] == base64.b64encode(b"salt-alice").decode()
    assert base64.b64decode(body["stored_key"]) == b"s" * 32
    assert base64.b64decode(body["mock_secret"]) == SECRET_A


def _upsert_json(**changes: object) -> bytes:
    body = orjson.loads(encode_command(upsert()))
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize(
    "data",
    [
        _upsert_json(salt="not base64!"),
        _upsert_json(salt="c2FsdA"),  # padding missing
        _upsert_json(salt="c2FsdA==\n"),  # whitespace
        _upsert_json(salt="c2FsdB=="),  # stray bits: decodes to the same bytes as c2FsdA==, not canonical
        _upsert_json(stored_key=[1, 2]),
        _upsert_json(server_key=None),
        _upsert_json(iterations="4096"),
        _upsert_json(iterations=True),
        _upsert_json(user=7),
        _upsert_json(mechanism=1),
        _upsert_json(mock_secret=...),  # missing
        _upsert_json(extra="x"),
        b'{"v": 1, "type": "DeleteScramCredential", "user": "alice"}',
        b'{"v": 1, "type": "DeleteScramCredential", "user": "alice", "mechanism": 1}',
    ],
)
def test_bad_commands_are_refused(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_command(data)


def test_keys_and_secret_stay_out_of_repr() -> None:
    cmd = upsert(stored_key=b"STORED" * 6 + b"..", server_key=b"SERVER" * 6 + b"..", mock_secret=b"SECRET" * 6)
    record = run(upsert()).scram_credentials[("alice", SHA256)]
    for text in (repr(cmd), repr(record), repr(run(upsert()))):
        assert "STORED" not in text and "SERVER" not in text and "SECRET" not in text and "sssss" not in text


# ---- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "kind", "words"),
    [
        (upsert(""), RejectKind.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        (upsert("x" * (SCRAM_USERNAME_BYTES_MAX + 1)), RejectKind.UNACCEPTABLE_CREDENTIAL, "limit is 255"),
        (upsert("é" * 128), RejectKind.UNACCEPTABLE_CREDENTIAL, "256 bytes"),  # 128 characters, 256 bytes
        (upsert("a\x00b"), RejectKind.UNACCEPTABLE_CREDENTIAL, "NUL"),
        (upsert("\ud800"), RejectKind.UNACCEPTABLE_CREDENTIAL, "not valid Unicode"),
        (upsert(mechanism="SCRAM-SHA-1"), RejectKind.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (upsert(mechanism="PLAIN"), RejectKind.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (upsert(iterations=SCRAM_ITERATIONS_MIN - 1), RejectKind.UNACCEPTABLE_CREDENTIAL, "Too few iterations"),
        (upsert(iterations=SCRAM_ITERATIONS_MAX + 1), RejectKind.UNACCEPTABLE_CREDENTIAL, "Too many iterations"),
        (upsert(salt=b""), RejectKind.UNACCEPTABLE_CREDENTIAL, "Salt"),
        (upsert(salt=b"s" * 257), RejectKind.UNACCEPTABLE_CREDENTIAL, "Salt"),
        (upsert(stored_key=b"s" * 64), RejectKind.UNACCEPTABLE_CREDENTIAL, "32 bytes"),
        (upsert(mechanism=SHA512, server_key=b"k" * 32), RejectKind.UNACCEPTABLE_CREDENTIAL, "64 bytes"),
        (upsert(mock_secret=b"short"), RejectKind.INVALID_REQUEST, "mock secret"),
        (DeleteScramCredential("", SHA256), RejectKind.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        (DeleteScramCredential("alice", "MD5"), RejectKind.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        (DeleteScramCredential("alice", SHA256), RejectKind.UNKNOWN_CREDENTIAL, "does not exist"),
    ],
)
def test_refusals_name_kafkas_kind_and_reason(
    cmd: UpsertScramCredential | DeleteScramCredential, kind: RejectKind, words: str
) -> None:
    rejection = validate(empty(), cmd)
    assert rejection is not None and rejection.kind is kind and words in rejection.message


def test_iteration_bounds_are_inclusive() -> None:
    assert validate(empty(), upsert(iterations=SCRAM_ITERATIONS_MIN)) is None
    assert validate(empty(), upsert(iterations=SCRAM_ITERATIONS_MAX)) is None


def test_deleting_the_other_mechanism_of_a_user_is_refused() -> None:
    rejection = validate(run(upsert(mechanism=SHA256)), DeleteScramCredential("alice", SHA512))
    assert rejection is not None and rejection.kind is RejectKind.UNKNOWN_CREDENTIAL


def test_the_number_of_credentials_is_bounded_but_replacing_one_is_not_refused() -> None:
    records = {
        (f"u{i}", SHA256): ScramCredentialRecord(SHA256, b"s", 4096, b"s" * 32, b"k" * 32)
        for i in range(SCRAM_CREDENTIALS_MAX)
    }
    full = dataclasses.replace(empty(), scram_credentials=records, scram_mock_secret=SECRET_A)
    rejection = validate(full, upsert("one-more"))
    assert (
        rejection is not None
        and rejection.kind is RejectKind.CONFLICT
        and str(SCRAM_CREDENTIALS_MAX) in (rejection.message)
    )
    assert validate(full, upsert("u7")) is None  # a new password for an existing credential
    assert validate(full, upsert("u7", SHA512)) is not None  # a new (user, mechanism) pair counts


# ---- apply -----------------------------------------------------------------------------------------------------------


def test_upsert_adds_and_replaces_delete_removes() -> None:
    image = run(upsert(), upsert(mechanism=SHA512), upsert("bob"))
    assert set(image.scram_credentials) == {("alice", SHA256), ("alice", SHA512), ("bob", SHA256)}
    assert image.offset == 3
    record = image.scram_credentials[("alice", SHA512)]
    assert record == ScramCredentialRecord(SHA512, b"salt-alice", 4096, b"s" * 64, b"k" * 64)

    image = apply(image, upsert(iterations=8192, salt=b"new salt"), 4)
    assert image.scram_credentials[("alice", SHA256)].iterations == 8192
    assert image.scram_credentials[("alice", SHA256)].salt == b"new salt"

    before = image
    image = apply(image, DeleteScramCredential("alice", SHA256), 5)
    assert set(image.scram_credentials) == {("alice", SHA512), ("bob", SHA256)}
    assert ("alice", SHA256) in before.scram_credentials  # images are immutable: the old one is unchanged


def test_the_first_credential_sets_the_mock_secret_for_good() -> None:
    assert empty().scram_mock_secret == b""
    image = run(upsert(secret=SECRET_A))
    assert image.scram_mock_secret == SECRET_A
    image = apply(image, upsert("bob", secret=SECRET_B), 2)
    assert image.scram_mock_secret == SECRET_A  # later proposers' random bytes are ignored
    image = apply(image, DeleteScramCredential("alice", SHA256), 3)
    image = apply(image, DeleteScramCredential("bob", SHA256), 4)
    assert not image.scram_credentials and image.scram_mock_secret == SECRET_A  # kept when the last user goes
    image = apply(image, upsert("carol", secret=SECRET_B), 5)
    assert image.scram_mock_secret == SECRET_A


def test_a_delete_of_a_missing_credential_does_not_apply() -> None:
    with pytest.raises(AssertionError):
        apply(empty(), DeleteScramCredential("alice", SHA256), 1)


# ---- the image codec -------------------------------------------------------------------------------------------------


def test_image_round_trips_with_credentials() -> None:
    image = run(upsert(), upsert("bob", SHA512, 10_000), upsert("名前", SHA256))
    decoded = decode_image(encode_image(image))
    assert decoded == image
    assert decoded.scram_mock_secret == SECRET_A
    assert decoded.scram_credentials[("bob", SHA512)].iterations == 10_000


def test_image_round_trips_without_credentials() -> None:
    image = empty()
    assert decode_image(encode_image(image)) == image


def test_an_image_written_before_scram_users_decodes_with_none() -> None:
    body = orjson.loads(encode_image(run(upsert())))
    del body["scram_credentials"], body["scram_mock_secret"]
    decoded = decode_image(orjson.dumps(body))
    assert decoded.scram_credentials == {} and decoded.scram_mock_secret == b""


@pytest.mark.parametrize(
    "credentials",
    [
        [["alice", SHA256, "c2FsdA==", 4096, "not base64!", "a2V5"]],
        [["alice", SHA256, "c2FsdA==", "4096", "a2V5", "a2V5"]],
        [["alice", SHA256, "c2FsdA==", 4096, "a2V5"]],
        [[1, SHA256, "c2FsdA==", 4096, "a2V5", "a2V5"]],
        "alice",
    ],
)
def test_bad_credentials_in_an_image_are_refused(credentials: object) -> None:
    body = orjson.loads(encode_image(empty()))
    body["scram_credentials"] = credentials
    with pytest.raises(ImageDecodeError):
        decode_image(orjson.dumps(body))
