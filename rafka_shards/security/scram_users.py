"""SCRAM users between the metadata image and the SASL core: the broker's credential lookup, and credentials as
metadata commands.

Runs in every shard process (the SaslHandshake / SaslAuthenticate handlers will build a lookup from the shard's
current image for each exchange) and in the controller process (the admin API turns passwords into credentials,
then commands). ``controller`` may not import ``rafka_shards``, so the metadata keeps its own plain record of a
credential (``controller.image.ScramCredentialRecord``, mechanisms by SASL name); this module converts it to
``rafka_shards.security.sasl.ScramCredential`` and back. Pure, but for ``new_mock_secret``'s random bytes.

The mock secret: ``ScramServer`` / ``PlainServer`` answer users without a credential with made-up salts keyed by a
secret, which must be the same on every broker and across restarts (else the answer for an unknown user would
change between brokers or restarts, and a known user's would not) and must not be public. The image holds it
(``MetadataImage.scram_mock_secret``): every ``UpsertScramCredential`` carries ``SCRAM_MOCK_SECRET_BYTES`` random
bytes from its proposer and the first one committed becomes the cluster's secret for good. Before any credential
exists there is no user to tell apart from an unknown one, and ``sasl_credentials`` gives None (each process's own
random secret).
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from controller.commands import UpsertScramCredential
from controller.image import MetadataImage, ScramCredentialRecord
from controller.scram import SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, SCRAM_MECHANISMS, SCRAM_MOCK_SECRET_BYTES
from rafka_shards.security.sasl import CredentialLookup, ScramCredential, ScramMechanism, make_credential, scram_keys

# The metadata's rules and the SASL core's must be the same list and the same bounds.
assert {m.value: m.digest_size for m in ScramMechanism} == dict(SCRAM_MECHANISMS)
assert all((m.min_iterations, m.max_iterations) == (SCRAM_ITERATIONS_MIN, SCRAM_ITERATIONS_MAX) for m in ScramMechanism)


class SaslCredentials(NamedTuple):
    """What a SASL server mechanism needs from the metadata: ``server_for(name, lookup, mock_secret=...)``."""

    lookup: CredentialLookup
    mock_secret: bytes | None  # None until the first credential exists: each process then uses its own


def mechanism_named(name: str) -> ScramMechanism | None:
    """The mechanism of a SASL name (``SCRAM-SHA-256``), or None."""
    for mechanism in ScramMechanism:
        if mechanism.value == name:
            return mechanism
    return None


def scram_credential(record: ScramCredentialRecord) -> ScramCredential:
    """The SASL core's credential for a metadata record (the state machine checked the same rules)."""
    mechanism = mechanism_named(record.mechanism)
    assert mechanism is not None, f"the metadata holds a credential of unknown mechanism {record.mechanism!r}"
    return ScramCredential(mechanism, record.salt, record.iterations, record.stored_key, record.server_key)


def credential_lookup(image: MetadataImage) -> CredentialLookup:
    """The ``CredentialLookup`` of ``image``'s credentials: (username, mechanism) -> credential or None. It reads
    only ``image``: build a new one from the current image for each exchange so new users and passwords count."""
    credentials = image.scram_credentials

    def lookup(username: str, mechanism: ScramMechanism) -> ScramCredential | None:
        record = credentials.get((username, mechanism.value))
        return None if record is None else scram_credential(record)

    return lookup


def sasl_credentials(image: MetadataImage) -> SaslCredentials:
    """The lookup of ``image``'s credentials and the cluster's mock secret (None before the first credential)."""
    return SaslCredentials(credential_lookup(image), image.scram_mock_secret or None)


LocalUser = tuple[str, dict[ScramMechanism, ScramCredential]]


def local_user(username: str, password: str) -> LocalUser:
    """The inter-broker user as a credential of this process alone (``inter_broker_sasl_username`` / ``_password``):
    one per SCRAM mechanism, random salts, so PLAIN and both SCRAM mechanisms log it in. Runs PBKDF2 twice (a few
    milliseconds each): call it once, at start-up."""
    secret = password.encode("utf-8")
    return username, {m: make_credential(m, secret) for m in ScramMechanism}


def with_local_user(credentials: SaslCredentials, local: LocalUser | None) -> SaslCredentials:
    """``credentials`` (the image's) with the local inter-broker user in front: brokers log in to each other with
    the password in their configuration, before and whatever the metadata holds (a credential of the same name
    made through AlterUserScramCredentials or the admin API is not used for that name on this broker)."""
    if local is None:
        return credentials
    name, mine = local
    lookup = credentials.lookup

    def local_first(username: str, mechanism: ScramMechanism) -> ScramCredential | None:
        return mine.get(mechanism) if username == name else lookup(username, mechanism)

    return SaslCredentials(local_first, credentials.mock_secret)


def new_mock_secret() -> bytes:
    """Random bytes for an ``UpsertScramCredential``: the cluster's mock secret if it is the first credential."""
    return secrets.token_bytes(SCRAM_MOCK_SECRET_BYTES)


def credentials_by_user(image: MetadataImage) -> dict[str, list[ScramCredentialRecord]]:
    """Every user with a credential, by name in sorted order, with its credentials in mechanism order (SHA-256
    first: Kafka's mechanism types)."""
    order = {m.value: m.kafka_type for m in ScramMechanism}
    users: dict[str, list[ScramCredentialRecord]] = {}
    for (user, _), record in sorted(image.scram_credentials.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        users.setdefault(user, []).append(record)
    return users


def salted_password_command(
    user: str, mechanism: ScramMechanism, salt: bytes, iterations: int, salted_password: bytes, mock_secret: bytes
) -> UpsertScramCredential:
    """The command for an AlterUserScramCredentials upsertion: the keys of the salted password, which is dropped.
    Unchecked but for the salted password's length (``ValueError``): ``controller.state_machine.validate`` says
    whether the command may be proposed."""
    stored_key, server_key = scram_keys(mechanism, salted_password)
    return UpsertScramCredential(user, mechanism.value, salt, iterations, stored_key, server_key, mock_secret)


def upsert_command(user: str, credential: ScramCredential, mock_secret: bytes) -> UpsertScramCredential:
    """The metadata command storing ``credential`` as ``user``'s (salt, iterations and keys, nothing else)."""
    return UpsertScramCredential(
        user=user,
        mechanism=credential.mechanism.value,
        salt=credential.salt,
        iterations=credential.iterations,
        stored_key=credential.stored_key,
        server_key=credential.server_key,
        mock_secret=mock_secret,
    )
