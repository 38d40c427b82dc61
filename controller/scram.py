"""The rules a SCRAM credential in the metadata must follow (KIP-554), kept with the state machine that enforces them.

Runs in every process. ``controller`` may not import ``rafka_shards``, so the mechanisms are named here by their
SASL names, with the sizes the state machine checks; ``rafka_shards.security.sasl.ScramMechanism`` is the same list
with the cryptography, and ``rafka_shards.security.scram_users`` converts between the two (a test checks that they
agree). Bounds: Kafka's 4096..16384 iterations (ScramMechanism.minIterations, ScramControlManager.MAX_ITERATIONS),
user names of 1..255 UTF-8 bytes (RFC 4616's authcid bound, Redpanda's too), salts of 1..256 bytes, and at most
``SCRAM_CREDENTIALS_MAX`` credentials in the cluster (each is ~300 bytes of every image and snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# SASL mechanism name -> size in bytes of its digest (the stored key and the server key).
SCRAM_MECHANISMS: Final[Mapping[str, int]] = MappingProxyType({"SCRAM-SHA-256": 32, "SCRAM-SHA-512": 64})
SCRAM_ITERATIONS_MIN: Final = 4096
SCRAM_ITERATIONS_MAX: Final = 16384
SCRAM_USERNAME_BYTES_MAX: Final = 255
SCRAM_SALT_BYTES_MAX: Final = 256
SCRAM_CREDENTIALS_MAX: Final = 10_000  # (user, mechanism) pairs in the whole cluster
# The cluster's secret for the made-up credentials of unknown users (see MetadataImage.scram_mock_secret).
SCRAM_MOCK_SECRET_BYTES: Final = 32


def scram_username_error(name: str) -> str | None:
    """Why ``name`` cannot be a SCRAM user, or None. Kafka refuses only the empty name ("Username must not be
    empty"); the length bound is the SASL mechanisms' (a longer name could never authenticate), and so is NUL
    (PLAIN's separator, excluded from RFC 5802's saslname)."""
    if not name:
        return "Username must not be empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no client can send it, and the log's JSON cannot hold it
        return "Username is not valid Unicode"
    if size > SCRAM_USERNAME_BYTES_MAX:
        return f"Username is {size} bytes of UTF-8, the limit is {SCRAM_USERNAME_BYTES_MAX}"
    if "\x00" in name:
        return "Username must not contain NUL"
    return None
