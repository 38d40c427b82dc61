"""Where the connection writes a quota throttle time into an encoded response (rafka_shards.protocol.throttle):
checked by decoding the rewritten bytes with kio, for the hand-written Produce and Fetch encoders and for kio's."""

from __future__ import annotations

import datetime

import pytest
from kio.serial import entity_reader

from rafka_shards.protocol import kio_codec, throttle
from rafka_shards.protocol.fast_responses import (
    FetchPartitionData,
    ProducePartitionResult,
    encode_fetch_response,
    encode_produce_response,
)
from rafka_shards.shard.kafka.registry import HANDLERS


def _throttle_of(api_key: int, version: int, body: bytes) -> int:
    cls = kio_codec.response_class(api_key, version)
    obj, _ = entity_reader(cls)(body, 0)
    value = obj.throttle_time
    assert isinstance(value, datetime.timedelta)
    return int(value.total_seconds() * 1000)


@pytest.mark.parametrize("version", range(3, 12))
def test_produce_response_ends_with_it(version: int) -> None:
    body = encode_produce_response(version, [("t", [ProducePartitionResult(0, 0, 5, -1, 0, None)])])
    position = throttle.throttle_position(0, version)
    assert position is not None and throttle.has_field(body, position)
    assert throttle.read_throttle(body, position) == 0
    assert _throttle_of(0, version, throttle.with_throttle(body, position, 1234)) == 1234


@pytest.mark.parametrize("version", range(4, 17))
def test_fetch_response_starts_with_it(version: int) -> None:
    parts = encode_fetch_response(version, [("t", bytes(16), [FetchPartitionData(0, 0, 1, 1, 0, [])])])
    assert throttle.throttle_position(1, version) == 0
    head = throttle.with_throttle(bytes(parts[0]), 0, 77)
    assert _throttle_of(1, version, head + b"".join(bytes(p) for p in parts[1:])) == 77


def test_kio_encoded_responses() -> None:
    body = kio_codec.encode_response(47, 0, {"error_code": 0, "throttle_time": 0, "topics": []})
    assert throttle.throttle_position(47, 0) == 2  # after OffsetDelete's error code
    assert _throttle_of(47, 0, throttle.with_throttle(body, 2, 99)) == 99
    assert throttle.throttle_position(18, 3) is None  # ApiVersions: after an array
    assert throttle.throttle_position(3, 0) is None  # Metadata v0 has no throttle time


def test_every_served_api_is_placed() -> None:
    """Each API this broker serves either has a fixed place for the field in every version that has it, or is one
    of the exempt ones (ApiVersions and the SASL exchange)."""
    for key, handler in HANDLERS.items():
        for version in range(handler.min_version, handler.max_version + 1):
            cls = kio_codec.response_class(key, version)
            has_field = "throttle_time" in kio_codec.field_names(cls)
            if has_field and key not in (18,):
                assert throttle.throttle_position(key, version) is not None, (handler.name, version)


def test_kip_219_versions() -> None:
    assert not throttle.client_throttles(0, 5) and throttle.client_throttles(0, 6)
    assert not throttle.client_throttles(1, 7) and throttle.client_throttles(1, 8)
    assert throttle.client_throttles(48, 0)
    assert not throttle.client_throttles(23, 4)  # OffsetForLeaderEpoch: Kafka never lets the client throttle
