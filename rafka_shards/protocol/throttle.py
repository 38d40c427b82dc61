"""Where a response carries ``throttle_time_ms``, and whether the client throttles itself (KIP-219). Sans-IO.

Runs in every shard process. The connection decides a request's throttle time once the handler has encoded its
response, so it writes the time into the encoded body here rather than through every handler. The field's place
comes from the spec (kio's generated classes): most responses open with it, or open with fixed-size fields before it
(OffsetDelete's error code); Produce closes with it (then the empty tagged-field section this broker's encoder writes
in flexible versions, ``fast_responses``). Responses without the field at a known place (ApiVersions, old versions
without one) are not rewritten.

KIP-219: from the versions in ``CLIENT_THROTTLES_SINCE`` on (Kafka's ``AbstractResponse.shouldClientThrottle``), the
client waits out the throttle time itself, so the broker answers at once and stops reading the connection for that
long; for older versions the broker holds the response for that long, since the client would send more at once.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Mapping
from typing import Final

from rafka_shards.protocol import kio_codec

PRODUCE_KEY: Final = 0

# API key -> the first version whose client honours throttle_time_ms (Kafka's response classes); absent: never.
CLIENT_THROTTLES_SINCE: Final[Mapping[int, int]] = {
    0: 6,  # Produce
    1: 8,  # Fetch
    2: 3,  # ListOffsets
    3: 6,  # Metadata
    8: 4,  # OffsetCommit
    9: 4,  # OffsetFetch
    10: 2,  # FindCoordinator
    11: 3,  # JoinGroup
    12: 2,  # Heartbeat
    13: 2,  # LeaveGroup
    14: 2,  # SyncGroup
    15: 2,  # DescribeGroups
    16: 2,  # ListGroups
    18: 2,  # ApiVersions
    19: 3,  # CreateTopics
    20: 2,  # DeleteTopics
    22: 1,  # InitProducerId
    32: 2,  # DescribeConfigs
    37: 1,  # CreatePartitions
    42: 1,  # DeleteGroups
    47: 0,  # OffsetDelete
    48: 0,  # DescribeClientQuotas
    49: 0,  # AlterClientQuotas
    50: 0,  # DescribeUserScramCredentials
    51: 0,  # AlterUserScramCredentials
    60: 0,  # DescribeCluster
    68: 0,  # ConsumerGroupHeartbeat
    69: 0,  # ConsumerGroupDescribe
}

_FIXED_SIZES: Final = {"int8": 1, "bool": 1, "int16": 2, "error_code": 2, "int32": 4, "int64": 8, "uuid": 16}
_I32 = struct.Struct(">i")


def client_throttles(api_key: int, version: int) -> bool:
    since = CLIENT_THROTTLES_SINCE.get(api_key)
    return since is not None and version >= since


@functools.cache
def throttle_position(api_key: int, version: int) -> int | None:
    """The byte offset of throttle_time_ms in the response body: from the start (>= 0), from the end (< 0, Produce),
    or None when it has no fixed place."""
    cls = kio_codec.response_class(api_key, version)
    if cls is None:
        return None
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if "throttle_time" not in names:
        return None
    if api_key == PRODUCE_KEY:
        return -5 if kio_codec.is_flexible(api_key, version) else -4
    offset = 0
    for f in fields[: names.index("throttle_time")]:
        size = _FIXED_SIZES.get(f.metadata.get("kafka_type", ""))
        if size is None:
            return None
        offset += size
    return offset


def has_field(body: bytes | bytearray | memoryview, position: int) -> bool:
    """Whether ``body`` is long enough to hold the field at ``position``."""
    return len(body) >= (position + 4 if position >= 0 else -position)


def read_throttle(body: bytes | bytearray | memoryview, position: int) -> int:
    start = position if position >= 0 else len(body) + position
    (value,) = _I32.unpack_from(body, start)
    return int(value)


def with_throttle(body: bytes, position: int, throttle_ms: int) -> bytes:
    """``body`` with throttle_time_ms set to ``throttle_ms``."""
    start = position if position >= 0 else len(body) + position
    assert 0 <= start <= len(body) - 4, (position, len(body))
    return body[:start] + _I32.pack(throttle_ms) + body[start + 4 :]
