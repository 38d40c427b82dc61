"""Forwarding between controllers (controller/forwarding.py): the typed messages round-trip through the codec, and
refuse malformed bytes."""

from __future__ import annotations

import uuid

import pytest

from controller.commands import (
    FenceBroker,
    RegisterBroker,
)
from controller.forwarding import (
    CODEC,
    ConfChangeRequest,
    ConfChangeResponse,
    ErrorKind,
    ForwardDecodeError,
    ForwardError,
    ForwardRequest,
    ForwardResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    ProposeRequest,
    ProposeResponse,
    ProposeTopicRequest,
    ReadIndexRequest,
    ReadIndexResponse,
    failed,
    unavailable,
)
from controller.raft.node import ConfChangeOp
from controller.state_machine import RejectKind
from controller.topics import NewTopic, RemoveTopic, TopicProposal

MESSAGES = [
    ProposeRequest(1, RegisterBroker(0, "127.0.0.1", 9092, None, "inc")),
    ProposeResponse(1, 42, None),
    ProposeTopicRequest(8, TopicProposal(NewTopic("t", 2, 3, {"retention.ms": "1"}, None), uuid.UUID(int=5))),
    ProposeTopicRequest(9, TopicProposal(RemoveTopic("t"), uuid.UUID(int=6), validate_only=True)),
    ProposeResponse(
        9, -1, ForwardError(ErrorKind.REJECTED, "too many", RejectKind.INVALID_PARTITIONS, field="partitions")
    ),
    ProposeResponse(2, -1, ForwardError(ErrorKind.REJECTED, "exists", RejectKind.TOPIC_ALREADY_EXISTS)),
    ReadIndexRequest(3),
    ReadIndexResponse(3, 17, None),
    ReadIndexResponse(4, -1, unavailable("leadership moved")),
    HeartbeatRequest(5, 2, "inc-2", 99),
    HeartbeatResponse(5, False, "ok", None),
    ConfChangeRequest(6, ConfChangeOp.PROMOTE, 4),
    ConfChangeResponse(6, -1, ForwardError(ErrorKind.DROPPED, "not caught up")),
    ConfChangeResponse(7, -1, ForwardError(ErrorKind.CONF_CHANGE, "already a voter")),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_forwarding_messages_round_trip(msg: ForwardRequest | ForwardResponse) -> None:
    assert CODEC.decode(CODEC.encode(msg)) == msg


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type": "ProposeRequest", "v": 1, "request_id": 1}',
        b'{"type": "ReadIndexRequest", "v": 2, "request_id": 1}',
        b'{"type": "Nope", "v": 1}',
        b'{"type": "ConfChangeRequest", "v": 1, "request_id": 1, "op": "demote", "node": 2}',
        b'{"type": "ProposeResponse", "v": 1, "request_id": 1, "offset": 1, "error": {"kind": "odd", "message": ""}}',
    ],
)
def test_malformed_forwarding_messages_are_refused(body: bytes) -> None:
    with pytest.raises(ForwardDecodeError):
        CODEC.decode(body)


def test_a_failed_request_gets_the_answer_of_its_own_type() -> None:
    error = unavailable("no leader")
    assert failed(ProposeRequest(1, FenceBroker(1, "i")), error) == ProposeResponse(1, -1, error)
    assert failed(ReadIndexRequest(2), error) == ReadIndexResponse(2, -1, error)
    assert failed(HeartbeatRequest(3, 0, "i", 0), error) == HeartbeatResponse(3, True, "no leader", error)
    assert failed(ConfChangeRequest(4, ConfChangeOp.REMOVE, 2), error) == ConfChangeResponse(4, -1, error)
