"""The controller channel's frames on the wire (rafka_shards.ipc.channel over controller.wire): what the fast
encoders splice, and that each malformed body is refused for the right reason. Round trips of every message are in
test_controller.py."""

from __future__ import annotations

import uuid

import orjson
import pytest

from controller.commands import ChangePartition, CreateTopic, NoOp, encode_command
from controller.image import MetadataImage, encode_image
from controller.wire import Problem
from rafka_shards.ipc.channel import (
    RECORDS_PER_MESSAGE_MAX,
    ChannelDecoder,
    ChannelError,
    Hello,
    Image,
    PartitionStats,
    Records,
    Stats,
    encode,
    encode_hello,
    encode_image_message,
    encode_records,
)

COMMANDS = (NoOp(), CreateTopic("t", uuid.UUID(int=3), ((1,),), ()), ChangePartition("t", 0, 1, (1,), 2))
IMAGE = MetadataImage(offset=2, cluster_id="c")


def test_the_splicing_encoders_write_what_encode_writes() -> None:
    payloads = [encode_command(c) for c in COMMANDS]
    assert encode_records(5, payloads) == encode(Records(5, COMMANDS))
    assert encode_records(5, []) == encode(Records(5, ()))
    assert encode_hello(9, encode_image(IMAGE)) == encode(Hello(9, IMAGE))
    assert encode_image_message(encode_image(IMAGE)) == encode(Image(IMAGE))


def test_stats_partitions_travel_as_arrays() -> None:
    frame = encode(Stats(1, 2, (PartitionStats("t", 0, 1, 2, 3, 4),)))
    assert orjson.loads(frame[4:])["partitions"] == [["t", 0, 1, 2, 3, 4, 0.0, -1, -1, ""]]


_CLEANER = {"passes": 0, "failures": 0, "bytes_read": 0, "bytes_written": 0, "seconds": 0.0, "max_dirty_ratio": 0.0}


def _frame(**body: object) -> bytes:
    data = orjson.dumps(body)
    return len(data).to_bytes(4, "big") + data


@pytest.mark.parametrize(
    ("frame", "problem", "path"),
    [
        (_frame(type="Applied", v=1), Problem.MISSING_FIELDS, ""),
        (_frame(type="Applied", v=1, offset="1"), Problem.WRONG_TYPE, "offset"),
        (_frame(type="What", v=1), Problem.UNKNOWN_TYPE, ""),
        (_frame(type="Applied", v=7, offset=1), Problem.VERSION, ""),
        (
            _frame(type="Records", v=1, first_offset=0, commands=[{"v": 1, "type": "Nope"}]),
            Problem.BAD_VALUE,
            "commands[0]",
        ),
        (
            _frame(
                type="Records", v=1, first_offset=0, commands=[{"v": 1, "type": "NoOp"}] * (RECORDS_PER_MESSAGE_MAX + 1)
            ),
            Problem.TOO_MANY_ITEMS,
            "commands",
        ),
        (
            _frame(type="Stats", v=2, request_id=1, connections=0, partitions=[["t", 0, 0]], cleaner=_CLEANER),
            Problem.BAD_VALUE,
            "partitions[0]",
        ),
        (
            _frame(
                type="Stats",
                v=2,
                request_id=1,
                connections=0,
                partitions=[["t", 0, 0, 0, 0, "0", 0.0, -1, -1, ""]],
                cleaner=_CLEANER,
            ),
            Problem.WRONG_TYPE,
            "partitions[0].size_bytes",
        ),
        (_frame(type="HeartbeatAck", v=1, request_id=1, status="maybe", message=""), Problem.BAD_VALUE, "status"),
        (
            _frame(type="Heartbeat", v=1, request_id=1, broker_id=0, incarnation=7, offset=3),
            Problem.WRONG_TYPE,
            "incarnation",
        ),
        (_frame(type="Hello", v=1, high_offset=1, image={"v": 99}), Problem.BAD_VALUE, "image"),
    ],
)
def test_channel_refusals_name_the_problem(frame: bytes, problem: Problem, path: str) -> None:
    with pytest.raises(ChannelError) as info:
        ChannelDecoder().feed(frame)
    assert (info.value.problem, info.value.path) == (problem, path)
