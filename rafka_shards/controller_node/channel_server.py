"""The controller's end of the controller channels: one session per shard process, over a socket pair.

Runs in the controller process on its event loop; the thin asyncio shell around ``rafka_shards.ipc.channel`` and the
node's ``RaftController`` (whose clock it times its waits by). What it guarantees shards:

- every shard receives the controller's snapshot image and then every applied record after it, in order;
- a record is sent only after the controller applied it, so after it was committed by the Raft quorum;
- a proposal is answered after the record is committed AND every ready shard (and the proposer) has applied it, or
  after ``metadata_propagation_timeout_ms``: so once CreateTopics answers, the new partitions are open on their
  shards and a client that goes straight to the leader is served, not refused.

Bounds: a shard whose unread channel data passes
``SESSION_BUFFER_BYTES_MAX`` is disconnected (the supervisor then hands it a new channel, which starts over
from a fresh image).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine

from controller.commands import Command
from controller.state_machine import CommandRejected
from controller.topics import TopicProposal, TopicRejected
from rafka_shards import event_loop
from rafka_shards.controller_node.raft_controller import ControllerUnavailable, RaftController
from rafka_shards.ipc.channel import (
    HEARTBEAT_FENCED,
    HEARTBEAT_OK,
    HEARTBEAT_UNAVAILABLE,
    RECORDS_PER_MESSAGE_MAX,
    Applied,
    ChannelDecoder,
    ChannelError,
    Heartbeat,
    HeartbeatAck,
    Message,
    Propose,
    Proposed,
    ProposeTopic,
    Ready,
    Rejected,
    Stats,
    StatsRequest,
    encode,
    encode_hello,
    encode_image_message,
    encode_records,
)

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
SESSION_BUFFER_BYTES_MAX = 256 * 1024 * 1024
STATS_PENDING_MAX = 64
TASKS_MAX = 2048  # proposals (the shard sends at most 1024) and heartbeats of one shard in flight


class ShardSession:
    """One shard process's channel, seen from the controller."""

    def __init__(self, server: ControllerServer, index: int, sock: socket.socket) -> None:
        self.server = server
        self.index = index
        self._sock = sock
        self.sent_offset = -1  # the last record offset pushed to this shard
        self.applied_offset = -1  # the last offset the shard says it applied and reconciled
        self.ready = False
        self.ready_event = asyncio.Event()
        self.broker_id = -1
        self.port = -1
        self._writer: asyncio.StreamWriter | None = None
        self._stats: dict[int, asyncio.Future[Stats]] = {}
        self._next_stats_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(self) -> None:
        """Serve the shard until it disconnects (it stopped or died) or misbehaves."""
        reader, self._writer = await asyncio.open_connection(sock=self._sock, limit=READ_CHUNK_BYTES)
        controller = self.server.controller
        self._write(encode_hello(controller.applied_offset, controller.snapshot_image()))
        self.sent_offset = controller.snapshot_offset
        self.push()
        decoder = ChannelDecoder()
        try:
            while True:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    return
                for msg in decoder.feed(data):
                    self._handle(msg)
        except ChannelError as e:
            log.error("shard %d sent a bad controller message, disconnecting it: %s", self.index, e)
        except ConnectionError:
            if self._writer is not None:
                await event_loop.close_quietly(self._writer)
            return
        finally:
            self.close()

    @property
    def metadata_lag(self) -> int:
        """Metadata records the controller applied that this shard has not applied yet."""
        return max(0, self.server.controller.applied_offset - self.applied_offset)

    def push(self) -> None:
        """Send every committed record this shard has not been sent yet, in order."""
        controller = self.server.controller
        if not self._closed and self.sent_offset < controller.snapshot_offset:
            self._write(encode_image_message(controller.snapshot_image()))
            self.sent_offset = controller.snapshot_offset
        while not self._closed and self.sent_offset < controller.applied_offset:
            first = self.sent_offset + 1
            payloads = controller.payloads(first, RECORDS_PER_MESSAGE_MAX)
            self._write(encode_records(first, payloads))
            self.sent_offset += len(payloads)

    async def stats(self, timeout_s: float) -> Stats | None:
        if self._closed or not self.ready or len(self._stats) >= STATS_PENDING_MAX:
            return None
        self._next_stats_id += 1
        request_id = self._next_stats_id
        fut: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._stats[request_id] = fut
        self._write(encode(StatsRequest(request_id)))
        try:
            return await event_loop.within(fut, timeout_s)
        except TimeoutError:
            log.warning("shard %d did not answer a stats request within %.1fs", self.index, timeout_s)
            return None
        finally:
            self._stats.pop(request_id, None)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Applied):
            if msg.offset > self.sent_offset:
                raise ChannelError(f"applied offset {msg.offset} beyond the last record sent {self.sent_offset}")
            self.applied_offset = max(self.applied_offset, msg.offset)
            self.server.progress()
        elif isinstance(msg, Propose | ProposeTopic):
            self._spawn(self._propose(msg))
        elif isinstance(msg, Heartbeat):
            if len(self._tasks) >= TASKS_MAX:
                raise ChannelError(f"more than {TASKS_MAX} requests in flight")
            self._spawn(self._heartbeat(msg))
        elif isinstance(msg, Ready):
            self.broker_id, self.port = msg.broker_id, msg.port
            self.ready = True
            self.ready_event.set()
            self.server.progress()
        elif isinstance(msg, Stats):
            fut = self._stats.get(msg.request_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            raise ChannelError(f"unexpected {type(msg).__name__} from a shard")

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat(self, msg: Heartbeat) -> None:
        try:
            reply = await self.server.controller.heartbeat(msg.broker_id, msg.incarnation, msg.offset)
        except ControllerUnavailable as e:
            self._write(encode(HeartbeatAck(msg.request_id, HEARTBEAT_UNAVAILABLE, str(e))))
            return
        status = HEARTBEAT_FENCED if reply.fenced else HEARTBEAT_OK
        self._write(encode(HeartbeatAck(msg.request_id, status, reply.message)))

    async def _propose(self, msg: Propose | ProposeTopic) -> None:
        try:
            if isinstance(msg, Propose):
                offset = await self.server.propose(msg.command, self)
            else:
                offset = await self.server.propose_topic(msg.proposal, self)
        except CommandRejected as e:
            # The reason (say, the topic exists) must be visible in the shard's image when it reads the answer.
            await self.server.wait_applied(self.server.controller.applied_offset, self)
            field = e.field if isinstance(e, TopicRejected) else None
            self._write(encode(Rejected(msg.request_id, e.rejection.kind.value, e.rejection.message, field)))
            return
        self._write(encode(Proposed(msg.request_id, offset)))

    def _write(self, frame: bytes) -> None:
        writer = self._writer
        if writer is None or self._closed or writer.transport.is_closing():
            return  # the shard is gone (uvloop raises on a write to a closed transport)
        if writer.transport.get_write_buffer_size() > SESSION_BUFFER_BYTES_MAX:
            log.error("shard %d is not reading its controller channel; disconnecting it", self.index)
            self.close()
            return
        writer.write(frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready = False
        for fut in self._stats.values():
            fut.cancel()
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()
        self.server.forget(self)


class ControllerServer:
    def __init__(self, controller: RaftController, propagation_timeout_s: float) -> None:
        self.controller = controller
        controller.on_applied = self.push_all
        self.sessions: set[ShardSession] = set()
        self._propagation_timeout_s = propagation_timeout_s
        self._progress = asyncio.Event()  # set (and replaced) whenever a shard applies, becomes ready or leaves

    def open_session(self, index: int, sock: socket.socket) -> ShardSession:
        session = ShardSession(self, index, sock)
        self.sessions.add(session)
        return session

    def forget(self, session: ShardSession) -> None:
        self.sessions.discard(session)
        self.progress()

    def progress(self) -> None:
        """A shard applied records, became ready or left: wake proposals waiting for propagation."""
        self._progress.set()
        self._progress = asyncio.Event()

    def push_all(self) -> None:
        """The controller applied records: send them to every shard."""
        for session in list(self.sessions):
            session.push()

    async def propose(self, cmd: Command, requester: ShardSession | None = None) -> int:
        """Commit ``cmd`` through the quorum, then wait until every ready shard of this node applied it."""
        offset = await self.controller.propose(cmd)  # applied here, so on_applied already pushed it to every shard
        await self.wait_applied(offset, requester)
        return offset

    async def propose_topic(self, proposal: TopicProposal, requester: ShardSession | None = None) -> int:
        """Carry out a topic request planned on the Raft leader's image, then wait until every ready shard of this
        node applied its last command."""
        offset = await self.controller.propose_topic(proposal)
        await self.wait_applied(offset, requester)
        return offset

    async def wait_applied(self, offset: int, requester: ShardSession | None) -> None:
        deadline_ms = self.controller.now_ms() + self._propagation_timeout_s * 1000

        def behind() -> list[ShardSession]:
            return [s for s in self.sessions if (s.ready or s is requester) and s.applied_offset < offset]

        while True:
            progress = self._progress
            late = behind()
            if not late:
                return
            remaining_s = (deadline_ms - self.controller.now_ms()) / 1000
            if remaining_s <= 0:
                shards = ", ".join(str(s.index) for s in late)
                log.warning("metadata offset %d not applied by shard(s) %s within the timeout", offset, shards)
                return
            with contextlib.suppress(TimeoutError):
                await event_loop.within(progress.wait(), remaining_s)
