"""The controller's frontend: proposals, linearizable reads, membership changes and broker heartbeats, taken here
when this node leads and forwarded to the leader when it does not.

Runs in the controller process on its event loop. The leader validates each command against its speculative image
(the applied image plus its proposals not yet committed), so a bad command never enters the log, and accepts
proposals only once it has applied an entry of its own term (everything an earlier leader left in its log is then
applied and visible to validation). A follower forwards the request (``forwarder``) and returns once its own image
has applied the answer's offset. Requests are retried across elections until their deadline; waiting is on the
backend's ``changes`` (an applied entry, a new role, leader or term), not on a polling timer (only ``add_voter``
asks again every ``PROMOTE_RETRY_S`` until the learner has caught up). Offsets seen by shards are Raft indexes.

Bounds: ``PROPOSALS_PENDING_MAX`` proposals and ``READS_PENDING_MAX`` ReadIndex reads wait at a leader at once (the
node itself allows ``RaftConfig.pending_reads_max``); past that a request is refused as CONTROLLER_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from controller import topics
from controller.commands import Command, NoOp, encode_command
from controller.forwarding import (
    ConfChangeRequest,
    ConfChangeResponse,
    ErrorKind,
    ForwardError,
    HeartbeatRequest,
    HeartbeatResponse,
    ProposeRequest,
    ProposeResponse,
    ProposeTopicRequest,
    ReadIndexRequest,
    ReadIndexResponse,
)
from controller.image import MetadataImage
from controller.leases import HeartbeatReply
from controller.raft.node import ConfChangeError, ConfChangeOp, NotLeader, ProposalDropped, RaftNode, Role
from controller.raft.types import NO_NODE, NodeId
from controller.state_machine import CommandRejected, Rejection, RejectKind, validate
from controller.topics import TopicProposal, TopicRejected
from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.backend import RaftBackend
from rafka_shards.controller_node.clock import Clock
from rafka_shards.controller_node.duties import DutiesRunner
from rafka_shards.controller_node.errors import ControllerUnavailable, unavailable
from rafka_shards.controller_node.forwarder import FORWARD_TIMEOUT_MS, Forwarder
from rafka_shards.controller_node.pending import Pending
from rafka_shards.controller_node.speculative import SpeculativeImage

PROPOSALS_PENDING_MAX = 16384
READS_PENDING_MAX = 1024  # ReadIndex requests waiting at a leader (the node itself allows RaftConfig.pending_reads_max)
PROMOTE_RETRY_S = 0.1  # add_voter asks again this often until the learner has caught up

Answer = ProposeResponse | ReadIndexResponse | ConfChangeResponse


def _is_unavailable(error: ForwardError) -> bool:
    return error.kind is ErrorKind.REJECTED and error.reject_kind is RejectKind.CONTROLLER_UNAVAILABLE


def _raise(error: ForwardError) -> NoReturn:
    """The exception the leader raised, raised again here."""
    if error.kind is ErrorKind.CONF_CHANGE:
        raise ConfChangeError(error.message)
    if error.kind is ErrorKind.DROPPED:
        raise ProposalDropped(error.message)
    if error.field is not None:
        raise TopicRejected(error.reject_kind, error.message, error.field)
    raise CommandRejected(Rejection(error.reject_kind, error.message))


def _result(answer: Answer | ForwardError) -> int | ForwardError:
    if isinstance(answer, ForwardError):
        return answer
    if answer.error is not None:
        return answer.error
    return answer.index if isinstance(answer, ReadIndexResponse) else answer.offset


def _planned(image: MetadataImage, proposal: TopicProposal) -> tuple[Command, ...]:
    commands = topics.plan(image, proposal.request, proposal.topic_id)
    if proposal.validate_only:
        topics.check(image, commands)
    return commands


def _plans(image: MetadataImage, proposal: TopicProposal) -> bool:
    try:
        _planned(image, proposal)
    except CommandRejected:
        return False
    return True


class RaftFrontend:
    def __init__(
        self,
        config: BrokerConfig,
        node: RaftNode,
        backend: RaftBackend,
        pending: Pending,
        forwarder: Forwarder,
        duties: DutiesRunner,
        clock: Clock,
    ) -> None:
        self._config = config
        self._node = node
        self._backend = backend
        self._pending = pending
        self._forwarder = forwarder
        self._duties = duties
        self._clock = clock
        self._speculative = SpeculativeImage()
        backend.after_ready = self._after_ready
        forwarder.side = self

    @property
    def _image(self) -> MetadataImage:
        return self._backend.image

    def _after_ready(self) -> None:
        if self._node.role != Role.LEADER:
            self._speculative.reset()

    # ---- proposals -------------------------------------------------------------------------------------------

    async def propose(self, cmd: Command) -> int:
        """Commit ``cmd`` and return its offset once this node has applied it. Raises CommandRejected (for a
        command that does not validate, or, with CONTROLLER_UNAVAILABLE, when there is no leader to take it)."""
        if isinstance(cmd, NoOp):
            raise CommandRejected(Rejection(RejectKind.INVALID_REQUEST, "NoOp is not proposed"))

        async def forward(leader: NodeId) -> int | ForwardError:
            return _result(await self._forwarder.ask(leader, lambda rid: ProposeRequest(rid, cmd), ProposeResponse))

        return await self._at_leader(lambda deadline_ms: self._propose_local(cmd, deadline_ms), forward)

    async def propose_topic(self, proposal: TopicProposal) -> int:
        """Carry out a topic request: the leader plans it on its speculative image (``controller.topics``: replicas
        placed on the newest state there is) and commits its commands in order. Returns the last command's offset
        once this node applied it; for ``validate_only`` (or a request that needs no command), the leader's applied
        offset, nothing proposed. Raises TopicRejected or CommandRejected as ``propose`` does."""

        async def forward(leader: NodeId) -> int | ForwardError:
            ask = self._forwarder.ask(leader, lambda rid: ProposeTopicRequest(rid, proposal), ProposeResponse)
            return _result(await ask)

        return await self._at_leader(lambda deadline_ms: self._propose_topic_local(proposal, deadline_ms), forward)

    async def read_barrier(self) -> int:
        """Linearizable reads (ReadIndex, Raft dissertation 6.4): returns once this node's image has applied
        everything that was committed when the call was made, as confirmed by the leader with a heartbeat round
        (a follower asks the leader for that index). Whatever ``image`` shows afterwards is at least as new as any
        write acknowledged before the call, on any node. Raises CommandRejected (CONTROLLER_UNAVAILABLE) when no
        leader answers in time."""

        async def forward(leader: NodeId) -> int | ForwardError:
            return _result(await self._forwarder.ask(leader, ReadIndexRequest, ReadIndexResponse))

        return await self._at_leader(self._read_index_local, forward)

    async def read_index_for_follower(self) -> int:
        """A follower's ReadIndex request, served by the leader."""
        if self._node.role != Role.LEADER:
            raise ControllerUnavailable(f"node {self._node.id} no longer leads")
        deadline_ms = self._clock() + FORWARD_TIMEOUT_MS
        if not await self._leader_ready(deadline_ms):
            raise ControllerUnavailable("leadership moved")
        return await self._read_index_local(deadline_ms)

    async def _at_leader(
        self, local: Callable[[float], Awaitable[int]], forward: Callable[[NodeId], Awaitable[int | ForwardError]]
    ) -> int:
        """An offset decided by the leader: ``local(deadline_ms)`` when this node leads, else ``forward(leader)``;
        retried across elections until the deadline. Returns once this node has applied that offset too."""
        node = self._node
        deadline_ms = self._clock() + 2 * self._config.raft_election_timeout_ms + FORWARD_TIMEOUT_MS
        while True:
            if node.role == Role.LEADER:
                if await self._leader_ready(deadline_ms):
                    offset = await local(deadline_ms)
                    break
                continue
            leader = node.leader
            if leader == NO_NODE:
                await self._wait_change(deadline_ms, "no controller leader")
                continue
            result = await forward(leader)
            if isinstance(result, int):
                offset = result
                break
            if not _is_unavailable(result):
                _raise(result)
            if node.leader == leader:
                await self._wait_change(deadline_ms, result.message)  # until something moves (a heartbeat at least)
            elif self._clock() >= deadline_ms:
                raise unavailable(result.message)
        while self._image.offset < offset:
            await self._wait_change(deadline_ms, f"offset {offset} committed but not applied here in time")
        return offset

    async def _leader_ready(self, deadline_ms: float) -> bool:
        """A new leader takes proposals once it applied an entry of its own term; False if it lost leadership."""
        node = self._node
        while node.role == Role.LEADER and node.term_at(self._image.offset) != node.term:
            await self._wait_change(deadline_ms, "the new controller leader is catching up")
        return node.role == Role.LEADER

    async def _wait_change(self, deadline_ms: float, why: str) -> None:
        """Until the backend's state moves; CommandRejected(CONTROLLER_UNAVAILABLE, ``why``) past the deadline."""
        remaining_ms = deadline_ms - self._clock()
        if remaining_ms <= 0:
            raise unavailable(why)
        await self._backend.changes.wait(remaining_ms / 1000)

    async def _settled(self, fut: asyncio.Future[int], deadline_ms: float, why: str) -> int:
        try:
            return await event_loop.within(asyncio.shield(fut), max(0.0, (deadline_ms - self._clock()) / 1000))
        except TimeoutError:
            raise unavailable(why) from None

    async def _propose_local(self, cmd: Command, deadline_ms: float) -> int:
        node = self._node
        speculative: MetadataImage | None = self._speculative.begin(self._image, node.term)
        assert speculative is not None
        rejection = validate(speculative, cmd)
        while rejection is not None and self._pending.proposals and validate(self._image, cmd) is None:
            # It conflicts only with proposals still in flight: answer once they are applied, so the requester's
            # image shows why (the topic it could not create exists by then), or take it if they were lost.
            await self._wait_change(deadline_ms, "conflicting proposals still in flight")
            speculative = self._speculative.current(node.term)
            if speculative is None:
                raise unavailable("leadership moved")
            rejection = validate(speculative if self._pending.proposals else self._image, cmd)
        if rejection is not None:
            raise CommandRejected(rejection)
        if self._pending.proposals >= PROPOSALS_PENDING_MAX:
            raise unavailable(f"{PROPOSALS_PENDING_MAX} metadata proposals pending")
        try:
            index = node.propose(encode_command(cmd))
        except (NotLeader, ProposalDropped) as e:
            raise unavailable(str(e)) from None
        self._speculative.proposed(speculative, cmd, index)
        fut = self._pending.proposed(index, node.term)
        self._backend.wake()
        return await self._settled(fut, deadline_ms, f"metadata entry {index} not committed in time")

    async def _propose_topic_local(self, proposal: TopicProposal, deadline_ms: float) -> int:
        commands = await self._plan_topic(proposal, deadline_ms)
        offset = self._image.offset
        if proposal.validate_only:
            return offset
        for cmd in commands:
            offset = await self._propose_local(cmd, deadline_ms)
        return offset

    async def _plan_topic(self, proposal: TopicProposal, deadline_ms: float) -> tuple[Command, ...]:
        """The commands of ``proposal`` planned on the speculative image. A refusal caused only by proposals still
        in flight (the request succeeds on the applied image) is given once they are applied, as ``_propose_local``
        does for one command, so the requester's image shows why."""
        node = self._node
        speculative = self._speculative.begin(self._image, node.term)
        while True:
            try:
                return _planned(speculative, proposal)
            except CommandRejected:
                if not self._pending.proposals or not _plans(self._image, proposal):
                    raise
            await self._wait_change(deadline_ms, "conflicting proposals still in flight")
            current = self._speculative.current(node.term)
            if current is None:
                raise unavailable("leadership moved")
            speculative = current if self._pending.proposals else self._image

    async def _read_index_local(self, deadline_ms: float) -> int:
        if self._pending.reads >= READS_PENDING_MAX:
            raise unavailable(f"{READS_PENDING_MAX} linearizable reads pending")
        ctx = self._pending.next_read_ctx()
        try:
            self._node.read_index(ctx)
        except (NotLeader, ProposalDropped) as e:
            raise unavailable(str(e)) from None
        fut = self._pending.read(ctx)
        self._backend.wake()
        try:
            return await self._settled(fut, deadline_ms, "leadership not confirmed by a quorum in time")
        finally:
            self._pending.forget_read(ctx)

    # ---- membership ------------------------------------------------------------------------------------------

    async def change_membership(self, op: ConfChangeOp, node_id: int) -> int:
        """Add a learner, promote it, or remove a member (leader only; followers forward). Returns the offset."""
        node = self._node
        if node.role != Role.LEADER:
            leader = node.leader
            if leader == NO_NODE:
                raise ControllerUnavailable("no controller leader")
            answer = await self._forwarder.ask(
                leader, lambda rid: ConfChangeRequest(rid, op, node_id), ConfChangeResponse
            )
            result = _result(answer)
            if isinstance(result, int):
                return result
            if result.kind is ErrorKind.REJECTED:
                raise ControllerUnavailable(result.message)
            _raise(result)
        deadline_ms = self._clock() + FORWARD_TIMEOUT_MS
        if not await self._leader_ready(deadline_ms):
            raise ControllerUnavailable("leadership moved")
        try:
            index = node.propose_conf_change(op, NodeId(node_id))
        except NotLeader as e:
            raise ControllerUnavailable(str(e)) from None
        fut = self._pending.proposed(index, node.term)
        self._backend.wake()
        try:
            return await event_loop.within(asyncio.shield(fut), FORWARD_TIMEOUT_MS / 1000)
        except TimeoutError:
            raise ControllerUnavailable(f"membership entry {index} not committed in time") from None

    async def add_voter(self, node_id: int, catch_up_timeout_s: float = 30.0) -> None:
        """Dissertation 4.2.1: join as a learner, wait until it has caught up, then promote it."""
        conf = self._node.conf
        if node_id in conf.voters:
            return
        if node_id not in conf.learners:
            await self.change_membership(ConfChangeOp.ADD_LEARNER, node_id)
        deadline_ms = self._clock() + catch_up_timeout_s * 1000
        while True:
            try:
                await self.change_membership(ConfChangeOp.PROMOTE, node_id)
                return
            except ProposalDropped:
                pass  # not caught up yet, or the learner's own entry is not committed yet
            if self._clock() > deadline_ms:
                raise ControllerUnavailable(f"node {node_id} did not catch up within {catch_up_timeout_s:.0f} s")
            await asyncio.sleep(PROMOTE_RETRY_S)

    # ---- broker leases ---------------------------------------------------------------------------------------

    async def heartbeat(
        self, broker_id: int, incarnation: str, metadata_offset: int, *, forward: bool = True
    ) -> HeartbeatReply:
        """Renew a broker's lease with the active controller (forwarded when this node does not lead).
        Raises ControllerUnavailable when no leader keeps leases right now."""
        reply = self._duties.heartbeat_local(broker_id, incarnation, metadata_offset)
        if reply is not None:
            return reply
        leader = self._node.leader
        if leader == NO_NODE or leader == self._node.id or not forward:
            raise ControllerUnavailable("no controller leader keeps broker leases right now")
        answer = await self._forwarder.ask(
            leader, lambda rid: HeartbeatRequest(rid, broker_id, incarnation, metadata_offset), HeartbeatResponse
        )
        if isinstance(answer, ForwardError):
            raise ControllerUnavailable(answer.message)
        if answer.error is not None:
            raise ControllerUnavailable(answer.error.message)
        return HeartbeatReply(answer.fenced, answer.message)
