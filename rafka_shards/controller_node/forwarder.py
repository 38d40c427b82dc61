"""Forwarding between controllers: a follower's requests to the leader, and the leader serving them.

Runs in the controller process on its event loop; the asyncio shell of ``controller.forwarding`` (the typed messages)
over the Raft transport (frame kinds ``KIND_FORWARD`` and ``KIND_FORWARD_RESULT``). As a follower, ``ask`` sends a
request and waits for its answer, giving up (CONTROLLER_UNAVAILABLE) as soon as this node follows another leader or
after ``FORWARD_TIMEOUT_MS``: a leader that died may never answer. As the leader, every request is served by
``LeaderSide`` (the frontend) in a task of its own, and the exception it raises, if any, goes back as a typed
``ForwardError`` that the follower raises again.

Bounds: at most ``FORWARDS_PENDING_MAX`` requests of this node wait for answers, and as many are served at once
(more are dropped and counted as ``forward_overload``). Malformed frames are counted and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from controller.commands import Command, CommandDecodeError
from controller.forwarding import (
    CODEC,
    RESPONSES,
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
from controller.leases import HeartbeatReply
from controller.raft.node import ConfChangeError, ConfChangeOp, ProposalDropped
from controller.raft.types import NodeId
from controller.state_machine import CommandRejected, RejectKind
from controller.topics import TopicProposal, TopicRejected
from rafka_shards.controller_node.backend import Changes
from rafka_shards.controller_node.clock import Clock
from rafka_shards.controller_node.errors import ControllerUnavailable
from rafka_shards.controller_node.raft_transport import KIND_FORWARD, KIND_FORWARD_RESULT, PeerTransport

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_MS = 10_000
FORWARDS_PENDING_MAX = 4096

R = TypeVar("R", bound=ForwardResponse)


class LeaderSide(Protocol):
    """What the leader's frontend does for a follower's request."""

    async def propose(self, cmd: Command) -> int: ...

    async def propose_topic(self, proposal: TopicProposal) -> int: ...

    async def read_index_for_follower(self) -> int: ...

    async def heartbeat(
        self, broker_id: int, incarnation: str, metadata_offset: int, *, forward: bool = True
    ) -> HeartbeatReply: ...

    async def change_membership(self, op: ConfChangeOp, node_id: int) -> int: ...


class Forwarder:
    def __init__(self, transport: PeerTransport, changes: Changes, leader: Callable[[], NodeId], clock: Clock) -> None:
        self.side: LeaderSide | None = None  # set once the frontend exists
        self._transport = transport
        self._changes = changes
        self._leader = leader
        self._clock = clock
        self._waiting: dict[int, asyncio.Future[ForwardResponse]] = {}
        self._next_id = 0
        self._serving: set[asyncio.Task[None]] = set()

    # ---- as a follower ---------------------------------------------------------------------------------------

    async def ask(
        self, leader: NodeId, request_of: Callable[[int], ForwardRequest], expected: type[R]
    ) -> R | ForwardError:
        """Send ``request_of(request_id)`` to ``leader``: its answer, or the error to raise when there is none."""
        if len(self._waiting) >= FORWARDS_PENDING_MAX:
            return unavailable("too many forwarded requests pending")
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[ForwardResponse] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        self._transport.send(leader, KIND_FORWARD, CODEC.encode(request_of(request_id)))
        deadline_ms = self._clock() + FORWARD_TIMEOUT_MS
        try:
            while not fut.done():
                # A leader that died may never answer: give up as soon as this node follows another leader.
                remaining_ms = deadline_ms - self._clock()
                if self._leader() != leader or remaining_ms <= 0:
                    return unavailable(f"leader {leader} is gone")
                await self._changes.wait_or(fut, remaining_ms / 1000)
            answer = fut.result()
        finally:
            self._waiting.pop(request_id, None)
        if not isinstance(answer, expected):
            return unavailable(f"leader {leader} answered {type(answer).__name__} to {expected.__name__}")
        return answer

    def on_response(self, body: bytes) -> None:
        try:
            msg = CODEC.decode(body)
        except ForwardDecodeError:
            self._transport.count("malformed")
            return
        if not isinstance(msg, RESPONSES):
            self._transport.count("malformed")
            return
        fut = self._waiting.get(msg.request_id)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # ---- as the leader ---------------------------------------------------------------------------------------

    def on_request(self, src: int, body: bytes) -> None:
        try:
            msg = CODEC.decode(body)
        except ForwardDecodeError as e:
            self._transport.count("malformed")
            log.warning("malformed forwarded request from node %d: %s", src, e)
            return
        if isinstance(msg, RESPONSES):
            self._transport.count("malformed")
            return
        if len(self._serving) >= FORWARDS_PENDING_MAX:
            self._transport.count("forward_overload")
            return
        task = asyncio.get_running_loop().create_task(self._serve(src, msg))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, src: int, request: ForwardRequest) -> None:
        try:
            answer = await self._answer(request)
        except CommandRejected as e:
            field = e.field if isinstance(e, TopicRejected) else None
            answer = failed(request, ForwardError(ErrorKind.REJECTED, e.rejection.message, e.rejection.kind, field))
        except ConfChangeError as e:
            answer = failed(request, ForwardError(ErrorKind.CONF_CHANGE, str(e)))
        except (CommandDecodeError, ValueError) as e:
            answer = failed(request, ForwardError(ErrorKind.REJECTED, str(e), RejectKind.INVALID_REQUEST))
        except ProposalDropped as e:
            answer = failed(request, ForwardError(ErrorKind.DROPPED, str(e)))  # the caller may retry
        except ControllerUnavailable as e:
            answer = failed(request, unavailable(str(e)))
        self._transport.send(src, KIND_FORWARD_RESULT, CODEC.encode(answer))

    async def _answer(self, request: ForwardRequest) -> ForwardResponse:
        side = self.side
        if side is None:
            raise ControllerUnavailable("the controller is starting")
        if isinstance(request, ProposeRequest):
            return ProposeResponse(request.request_id, await side.propose(request.command), None)
        if isinstance(request, ProposeTopicRequest):
            return ProposeResponse(request.request_id, await side.propose_topic(request.proposal), None)
        if isinstance(request, ReadIndexRequest):
            return ReadIndexResponse(request.request_id, await side.read_index_for_follower(), None)
        if isinstance(request, HeartbeatRequest):
            reply = await side.heartbeat(request.broker_id, request.incarnation, request.metadata_offset, forward=False)
            return HeartbeatResponse(request.request_id, reply.fenced, reply.message, None)
        assert isinstance(request, ConfChangeRequest)
        offset = await side.change_membership(request.op, request.node)
        return ConfChangeResponse(request.request_id, offset, None)

    async def close(self) -> None:
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
