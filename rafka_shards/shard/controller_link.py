"""A shard's end of the controller channel: the metadata image it applies, the changes it proposes.

Runs in a shard process on its event loop; the thin asyncio shell around ``rafka_shards.ipc.channel``. The
supervisor hands the shard one end of a socket pair whose other end the controller process holds (``attach``); the
controller pushes every metadata record in order. For each ``Records`` message the link applies the commands to its
image (``controller.state_machine.apply``, the same pure code the controller runs), hands the new image to ``on_image``
(the partition manager reconciles: opens, closes, deletes partition logs) and only then reports ``Applied``. So when
the controller answers a proposal, which it does after every ready shard has applied it, the proposing shard's
partitions already reflect it.

End of file on the channel means the controller process is gone (it died, or the node is stopping). The shard keeps
serving with the image it has; proposals fail with CONTROLLER_UNAVAILABLE (Kafka's NOT_CONTROLLER, which clients
retry) until the supervisor has restarted the controller and attached a new channel, whose hello image must not be
older than the shard's. A channel that carries garbage is ``on_lost``: the shard stops and is restarted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from controller.commands import Command
from controller.image import MetadataImage
from controller.state_machine import CommandRejected, Rejection, RejectKind, apply
from controller.topics import TopicProposal, TopicRejected
from rafka_shards import event_loop
from rafka_shards.ipc.channel import (
    Applied,
    ChannelDecoder,
    ChannelError,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Image,
    Message,
    Propose,
    Proposed,
    ProposeTopic,
    Ready,
    Records,
    Rejected,
    Stats,
    StatsRequest,
    encode,
)
from rafka_shards.shard.limits import HEARTBEATS_IN_FLIGHT_MAX, PROPOSALS_IN_FLIGHT_MAX, READ_CHUNK_BYTES

log = logging.getLogger(__name__)


class ControllerLost(Exception):
    """The channel to the controller closed or carried garbage."""


class ControllerLink:
    def __init__(
        self,
        on_image: Callable[[MetadataImage], None],
        stats: Callable[[int], Stats],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._on_image = on_image
        self._stats = stats
        self._on_lost = on_lost
        self._image: MetadataImage | None = None
        self._high_at_hello = -1
        self._hello_seen = False  # on the current channel
        self._caught_up = asyncio.Event()  # set once, when the first channel's hello image is applied
        self.channels = 0  # channels attached so far: 1 + restarts of the controller process seen
        self._ready: Ready | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._heartbeats: dict[int, asyncio.Future[HeartbeatAck]] = {}
        self._next_id = 0
        self._closing = False

    @property
    def image(self) -> MetadataImage:
        assert self._image is not None, "not connected"
        return self._image

    @property
    def connected(self) -> bool:
        return self._writable() is not None and self._hello_seen

    async def attach(self, sock: socket.socket) -> None:
        """Use ``sock`` as the channel from now on (a first channel, or one to a restarted controller process)."""
        if self._closing:
            sock.close()
            return
        await self._drop_channel()
        self.channels += 1
        self._hello_seen = False
        reader, self._writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK_BYTES)
        task = asyncio.get_running_loop().create_task(self._read_loop(reader, self._writer), name="controller-link")
        task.add_done_callback(self._read_loop_done)
        self._reader_task = task

    async def connect(self) -> MetadataImage:
        """Wait for the first channel and apply every record the controller has; returns the caught-up image."""
        await self._caught_up.wait()
        if self._image is None:
            raise ControllerLost("the shard stopped before the controller channel came")
        return self.image

    def abort(self) -> None:
        """Stop waiting in ``connect`` (the node is stopping)."""
        self._closing = True
        self._caught_up.set()

    def _writable(self) -> asyncio.StreamWriter | None:
        """The channel's writer while it can be written (uvloop raises on a write to a transport that closed)."""
        writer = self._writer
        if self._closing or writer is None or writer.transport.is_closing():
            return None
        return writer

    async def propose(self, cmd: Command) -> int:
        """The offset of ``cmd`` once the controller committed it and this shard applied it; CommandRejected if it
        does not validate against the controller's newest image."""
        return await self._ask(lambda request_id: Propose(request_id, cmd))

    async def propose_topic(self, proposal: TopicProposal) -> int:
        """The offset of the last command of a topic request the Raft leader planned and committed, once this shard
        applied it; TopicRejected or CommandRejected if it cannot be carried out."""
        return await self._ask(lambda request_id: ProposeTopic(request_id, proposal))

    async def _ask(self, message: Callable[[int], Propose | ProposeTopic]) -> int:
        writer = self._writable()
        if writer is None or not self._hello_seen:
            raise _unavailable("the controller process is restarting; retry")
        if len(self._pending) >= PROPOSALS_IN_FLIGHT_MAX:
            raise RuntimeError(f"{PROPOSALS_IN_FLIGHT_MAX} metadata proposals already in flight")
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        writer.write(encode(message(request_id)))
        # Shielded: a requester that goes away must not lose the answer (the reader resolves and drops it).
        return await asyncio.shield(fut)

    async def heartbeat(self, broker_id: int, incarnation: str) -> HeartbeatAck:
        """Send one heartbeat with this shard's metadata offset; the controller's answer."""
        writer = self._writable()
        if writer is None or not self._hello_seen:
            raise ControllerLost("no controller channel")
        if len(self._heartbeats) >= HEARTBEATS_IN_FLIGHT_MAX:
            raise ControllerLost(f"{HEARTBEATS_IN_FLIGHT_MAX} heartbeats unanswered")
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[HeartbeatAck] = asyncio.get_running_loop().create_future()
        self._heartbeats[request_id] = fut
        writer.write(encode(Heartbeat(request_id, broker_id, incarnation, self.image.offset)))
        try:
            return await fut
        finally:
            self._heartbeats.pop(request_id, None)

    def ready(self, broker_id: int, port: int) -> None:
        """Tell the controller this shard serves clients (again on every later channel)."""
        self._ready = Ready(broker_id, port)
        self._send(self._ready)

    def _send(self, msg: Message) -> None:
        writer = self._writable()
        if writer is not None:
            writer.write(encode(msg))

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = ChannelDecoder()
        while True:
            try:
                data = await reader.read(READ_CHUNK_BYTES)
            except ConnectionError:
                await event_loop.close_quietly(writer)
                return
            if not data:
                return  # the controller process is gone
            try:
                messages = decoder.feed(data)
            except ChannelError as e:
                raise ControllerLost(f"bad message from the controller: {e}") from None
            for msg in messages:
                self._handle(msg)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            if self._hello_seen:
                raise ControllerLost("a second hello on the controller channel")
            self._hello_seen = True
            self._high_at_hello = msg.high_offset
            if self._image is None or msg.image.offset > self._image.offset:
                self._replace_image(msg.image)
            else:
                # A new channel (a restarted controller process) starts at a snapshot this shard is past: the
                # records that follow are the same committed log, and those it applied already are skipped. Say
                # how far it is now (never past what this channel will have sent: its high offset).
                self._send(Applied(min(self._image.offset, msg.high_offset)))
            if self._ready is not None:
                self._send(self._ready)
            return
        if not self._hello_seen:
            raise ControllerLost(f"{type(msg).__name__} before the hello")
        if isinstance(msg, Records):
            image = self._image
            if image is None or msg.first_offset > image.offset + 1:
                raise ControllerLost(f"records from {msg.first_offset} do not follow offset {image and image.offset}")
            last = msg.first_offset + len(msg.commands) - 1
            skip = max(0, image.offset + 1 - msg.first_offset)  # applied before, from an earlier channel
            for offset, cmd in enumerate(msg.commands[skip:], start=msg.first_offset + skip):
                image = apply(image, cmd, offset)
            if image is not self._image:
                self._image = image
                self._on_image(image)
            self._send(Applied(min(image.offset, last)))  # never past what this channel sent
            if image.offset >= self._high_at_hello:
                self._caught_up.set()
        elif isinstance(msg, Proposed | Rejected):
            fut = self._pending.pop(msg.request_id, None)
            if fut is None or fut.done():
                return
            if isinstance(msg, Proposed):
                fut.set_result(msg.offset)
            elif msg.field is not None:
                fut.set_exception(TopicRejected(RejectKind(msg.kind), msg.message, msg.field))
            else:
                fut.set_exception(CommandRejected(Rejection(RejectKind(msg.kind), msg.message)))
        elif isinstance(msg, HeartbeatAck):
            hb = self._heartbeats.get(msg.request_id)
            if hb is not None and not hb.done():
                hb.set_result(msg)
        elif isinstance(msg, StatsRequest):
            self._send(self._stats(msg.request_id))
        elif isinstance(msg, Image):
            if self._image is None or msg.image.offset <= self._image.offset:
                raise ControllerLost("an image that does not move the shard forward")
            self._replace_image(msg.image)
        else:
            raise ControllerLost(f"unexpected {type(msg).__name__} from the controller")

    def _replace_image(self, image: MetadataImage) -> None:
        self._image = image
        self._on_image(image)
        self._send(Applied(image.offset))
        if image.offset >= self._high_at_hello:
            self._caught_up.set()

    def _read_loop_done(self, task: asyncio.Task[None]) -> None:
        if task is not self._reader_task:
            return  # a channel already replaced by a newer one
        exc = None if task.cancelled() else task.exception()
        self._hello_seen = False
        if self._writer is not None:
            self._writer.close()
        self._fail_pending("the controller process went away; retry")
        if exc is not None and not self._closing:
            self._caught_up.set()  # a shard still starting sees the image is missing and fails
            self._on_lost(exc)
        elif not self._closing:
            log.warning(
                "the controller channel closed; serving with metadata offset %s until a new one comes",
                self._image.offset if self._image is not None else None,
            )

    def _fail_pending(self, reason: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_unavailable(reason))
                fut.exception()  # a requester that left must not turn this into a "never retrieved" warning
        for hb in self._heartbeats.values():
            if not hb.done():
                hb.set_exception(ControllerLost(reason))
                hb.exception()
        self._pending.clear()

    async def _drop_channel(self) -> None:
        task, writer = self._reader_task, self._writer
        self._reader_task, self._writer = None, None
        self._hello_seen = False
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if writer is not None:
            writer.close()
        self._fail_pending("the controller process was replaced; retry")

    async def close(self) -> None:
        self._closing = True
        self._caught_up.set()
        await self._drop_channel()


def _unavailable(message: str) -> CommandRejected:
    return CommandRejected(Rejection(RejectKind.CONTROLLER_UNAVAILABLE, message))
