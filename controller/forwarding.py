"""What a follower's controller asks the leader's, and the answers: typed messages (frozen dataclasses).

Runs in every controller process; pure. A follower cannot propose, confirm a linearizable read or keep broker leases
itself, so it forwards the request to the leader over the Raft transport (frame kinds ``KIND_FORWARD`` and
``KIND_FORWARD_RESULT`` of ``rafka_shards.controller_node.raft_transport``) and matches the answer by
``request_id``. Every response carries either its result or a ``ForwardError`` whose ``kind`` says which exception
the leader raised, so the follower raises the same one: no error travels as a string to be parsed back.

Encoding: ``CODEC`` (``controller.wire``: one JSON object per message, the command in its metadata-log encoding),
safe on untrusted bytes: anything that is not a well-formed message of a known type and schema version raises
``ForwardDecodeError``. A frame carries one message; the transport bounds its size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.commands import Command
from controller.raft.node import ConfChangeOp
from controller.state_machine import RejectKind
from controller.topics import TopicProposal
from controller.wire import Codec, WireError


class ForwardDecodeError(WireError):
    """Bytes that are not a well-formed forwarding message of a known type and version."""


class ErrorKind(enum.Enum):
    REJECTED = "rejected"  # CommandRejected: ``reject_kind`` says why (CONTROLLER_UNAVAILABLE: retry)
    CONF_CHANGE = "conf_change"  # ConfChangeError: a membership change that makes no sense now
    DROPPED = "dropped"  # ProposalDropped: the leader cannot take it now (a learner not caught up); retry


@dataclass(frozen=True, slots=True)
class ForwardError:
    kind: ErrorKind
    message: str
    reject_kind: RejectKind = RejectKind.INVALID_REQUEST  # meaningful with REJECTED only
    field: str | None = None  # the request field at fault (a topic request's ``TopicRejected.field``), if one is


def unavailable(message: str) -> ForwardError:
    """No leader, or leadership moved before the request was served: the caller may retry."""
    return ForwardError(ErrorKind.REJECTED, message, RejectKind.CONTROLLER_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class ProposeRequest:
    """Commit ``command``, validated against the leader's image."""

    request_id: int
    command: Command


@dataclass(frozen=True, slots=True)
class ProposeResponse:
    request_id: int
    offset: int  # the committed command's offset; -1 with an error
    error: ForwardError | None


@dataclass(frozen=True, slots=True)
class ProposeTopicRequest:
    """Plan a topic request on the leader's newest image and commit its commands (``controller.topics``); answered
    with a ``ProposeResponse`` holding the last command's offset (the leader's applied offset for ``validate_only``
    or a request that needs no command)."""

    request_id: int
    proposal: TopicProposal


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """The leader's commit index, confirmed by a quorum (ReadIndex, Raft dissertation 6.4)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    request_id: int
    index: int  # -1 with an error
    error: ForwardError | None


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """Renew a broker's lease with the active controller (``controller.leases``)."""

    request_id: int
    broker_id: int
    incarnation: str
    metadata_offset: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    request_id: int
    fenced: bool
    message: str
    error: ForwardError | None  # the leader keeps no leases right now (CONTROLLER_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class ConfChangeRequest:
    """Add a learner, promote it, or remove a member (Raft dissertation 4.1)."""

    request_id: int
    op: ConfChangeOp
    node: int


@dataclass(frozen=True, slots=True)
class ConfChangeResponse:
    request_id: int
    offset: int  # -1 with an error
    error: ForwardError | None


ForwardRequest = ProposeRequest | ProposeTopicRequest | ReadIndexRequest | HeartbeatRequest | ConfChangeRequest
ForwardResponse = ProposeResponse | ReadIndexResponse | HeartbeatResponse | ConfChangeResponse


def failed(request: ForwardRequest, error: ForwardError) -> ForwardResponse:
    """The answer to ``request`` that carries ``error`` instead of a result."""
    if isinstance(request, ProposeRequest | ProposeTopicRequest):
        return ProposeResponse(request.request_id, -1, error)
    if isinstance(request, ReadIndexRequest):
        return ReadIndexResponse(request.request_id, -1, error)
    if isinstance(request, HeartbeatRequest):
        return HeartbeatResponse(request.request_id, True, error.message, error)
    return ConfChangeResponse(request.request_id, -1, error)


REQUESTS = (ProposeRequest, ProposeTopicRequest, ReadIndexRequest, HeartbeatRequest, ConfChangeRequest)
RESPONSES = (ProposeResponse, ReadIndexResponse, HeartbeatResponse, ConfChangeResponse)
# Responses are at version 2 since ForwardError carries the request field at fault.
CODEC: Codec[ForwardRequest | ForwardResponse] = Codec(
    "controller forwarding", {**{cls: 1 for cls in REQUESTS}, **{cls: 2 for cls in RESPONSES}}, error=ForwardDecodeError
)
