"""The kio codec wrapper: version-generic response building, strict request decoding."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer

from rafka_shards.protocol import kio_codec


def test_build_keeps_only_the_fields_of_the_version() -> None:
    data = {
        "throttle_time": 0,
        "topics": [
            {
                "name": "t",
                "partitions": [
                    {"partition_index": 0, "error_code": 0, "timestamp": -1, "offset": 5, "leader_epoch": 3}
                ],
            }
        ],
    }
    v1 = kio_codec.build(kio_codec.response_class(2, 1), data)  # type: ignore[arg-type]
    v4 = kio_codec.build(kio_codec.response_class(2, 4), data)  # type: ignore[arg-type]
    assert not hasattr(v1.topics[0].partitions[0], "leader_epoch")
    assert v4.topics[0].partitions[0].leader_epoch == 3
    assert kio_codec.encode(v4) != kio_codec.encode(v1)


def test_build_refuses_a_missing_required_field() -> None:
    with pytest.raises(KeyError, match="throttle_time"):
        kio_codec.build(kio_codec.response_class(2, 4), {"topics": []})  # type: ignore[arg-type]


def test_decode_round_trip_tolerates_trailing_bytes() -> None:
    cls = kio_codec.request_class(3, 4)
    assert cls is not None
    req_mod = __import__("kio.schema.metadata.v4.request", fromlist=["MetadataRequestTopic"])
    req = cls(topics=(req_mod.MetadataRequestTopic(name="abc"),), allow_auto_topic_creation=True)
    buf = io.BytesIO()
    entity_writer(cls)(buf, req)
    body = buf.getvalue()
    assert kio_codec.decode_request(3, 4, b"xx" + body, 2) == req
    # Trailing bytes are tolerated, as by Kafka (librdkafka 2.16 sends some after Metadata v12).
    assert kio_codec.decode_request(3, 4, body + b"\x00\x01", 0) == req


_APIS = [
    (key, v)
    for key, lo, hi in [
        (0, 3, 11),
        (1, 4, 16),
        (2, 1, 8),
        (3, 0, 12),
        (18, 0, 4),
        (19, 2, 7),
        (20, 1, 6),
        (23, 2, 4),
        (32, 1, 4),
        (37, 0, 3),
        (60, 0, 1),
    ]
    for v in range(lo, hi + 1)
]


@settings(max_examples=2000)
@given(st.sampled_from(_APIS), st.binary(max_size=300))
def test_fuzz_request_bodies_only_raise_decode_error(api: tuple[int, int], body: bytes) -> None:
    key, version = api
    with contextlib.suppress(kio_codec.RequestDecodeError):
        kio_codec.decode_request(key, version, body, 0)


def test_is_flexible_follows_the_specs() -> None:
    assert not kio_codec.is_flexible(0, 8) and kio_codec.is_flexible(0, 9)
    assert not kio_codec.is_flexible(1, 11) and kio_codec.is_flexible(1, 12)
    assert not kio_codec.is_flexible(3, 8) and kio_codec.is_flexible(3, 9)
