"""A shard's end of the controller channel: the metadata image it applies, the changes it proposes.

Runs in a shard process on its event loop; the thin asyncio shell around ``controller.channel``. The supervisor passes
one end of a socket pair at spawn; the controller pushes every metadata record in order. For each ``Records`` message
the link applies the commands to its image (``controller.state_machine.apply``, the same pure code the controller
runs), hands the new image to ``on_image`` (the partition manager reconciles: opens, closes, deletes partition logs)
and only then reports ``Applied``. So when the controller answers a proposal, which it does after every ready shard
has applied it, the proposing shard's partitions already reflect it.

End of file on the channel means the supervisor is gone: ``on_lost`` stops the shard (no orphan shard keeps serving
without its supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from controller.channel import (
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
    Ready,
    Records,
    Rejected,
    Stats,
    StatsRequest,
    encode,
)
from controller.commands import Command
from controller.image import MetadataImage
from controller.state_machine import CommandRejected, Rejection, RejectKind, apply

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
PROPOSALS_IN_FLIGHT_MAX = 1024
HEARTBEATS_IN_FLIGHT_MAX = 16


class ControllerLost(Exception):
    """The channel to the controller closed or carried garbage."""


class ControllerLink:
    def __init__(
        self,
        sock: socket.socket,
        on_image: Callable[[MetadataImage], None],
        stats: Callable[[int], Stats],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._sock = sock
        self._on_image = on_image
        self._stats = stats
        self._on_lost = on_lost
        self._image: MetadataImage | None = None
        self._high_at_hello = -1
        self._caught_up = asyncio.Event()
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

    async def connect(self) -> MetadataImage:
        """Open the channel and apply every record the controller has; returns the caught-up image."""
        reader, self._writer = await asyncio.open_connection(sock=self._sock, limit=READ_CHUNK_BYTES)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader), name="controller-link")
        self._reader_task.add_done_callback(self._read_loop_done)
        await self._caught_up.wait()
        if self._reader_task.done():
            raise ControllerLost(f"the controller channel failed during catch-up: {self._reader_task.exception()}")
        return self.image

    def _writable(self) -> asyncio.StreamWriter | None:
        """The channel's writer while it can be written (uvloop raises on a write to a transport that closed)."""
        writer = self._writer
        if self._closing or writer is None or writer.transport.is_closing():
            return None
        return writer

    async def propose(self, cmd: Command) -> int:
        """The offset of ``cmd`` once the controller committed it and this shard applied it; CommandRejected if it
        does not validate against the controller's newest image."""
        writer = self._writable()
        if writer is None:
            raise ControllerLost("the controller channel is closed")
        if len(self._pending) >= PROPOSALS_IN_FLIGHT_MAX:
            raise RuntimeError(f"{PROPOSALS_IN_FLIGHT_MAX} metadata proposals already in flight")
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        writer.write(encode(Propose(request_id, cmd)))
        # Shielded: a requester that goes away must not lose the answer (the reader resolves and drops it).
        return await asyncio.shield(fut)

    async def heartbeat(self, broker_id: int, incarnation: str) -> HeartbeatAck:
        """Send one heartbeat with this shard's metadata offset; the controller's answer."""
        writer = self._writable()
        if writer is None:
            raise ControllerLost("the controller channel is closed")
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
        self._send(Ready(broker_id, port))

    def _send(self, msg: Message) -> None:
        writer = self._writable()
        if writer is not None:
            writer.write(encode(msg))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = ChannelDecoder()
        while True:
            data = await reader.read(READ_CHUNK_BYTES)
            if not data:
                raise ControllerLost("the supervisor closed the controller channel")
            try:
                messages = decoder.feed(data)
            except ChannelError as e:
                raise ControllerLost(f"bad message from the controller: {e}") from None
            for msg in messages:
                self._handle(msg)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Records):
            image = self._image
            if image is None or msg.first_offset != image.offset + 1:
                raise ControllerLost(f"records from {msg.first_offset} do not follow offset {image and image.offset}")
            for i, cmd in enumerate(msg.commands):
                image = apply(image, cmd, msg.first_offset + i)
            self._image = image
            self._on_image(image)
            self._send(Applied(image.offset))
            if image.offset >= self._high_at_hello:
                self._caught_up.set()
        elif isinstance(msg, Proposed | Rejected):
            fut = self._pending.pop(msg.request_id, None)
            if fut is None or fut.done():
                return
            if isinstance(msg, Proposed):
                fut.set_result(msg.offset)
            else:
                fut.set_exception(CommandRejected(Rejection(RejectKind(msg.kind), msg.message)))
        elif isinstance(msg, HeartbeatAck):
            hb = self._heartbeats.get(msg.request_id)
            if hb is not None and not hb.done():
                hb.set_result(msg)
        elif isinstance(msg, StatsRequest):
            self._send(self._stats(msg.request_id))
        elif isinstance(msg, Hello):
            if self._image is not None:
                raise ControllerLost("a second hello on the controller channel")
            self._high_at_hello = msg.high_offset
            self._replace_image(msg.image)
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
        exc: BaseException = ControllerLost("the controller link was cancelled")
        if not task.cancelled():
            exc = task.exception() or exc
        futures: list[asyncio.Future[int] | asyncio.Future[HeartbeatAck]] = [
            *self._pending.values(),
            *self._heartbeats.values(),
        ]
        for fut in futures:
            if not fut.done():
                fut.set_exception(ControllerLost(str(exc)))
                fut.exception()  # a requester that left must not turn this into a "never retrieved" warning
        self._pending.clear()
        self._caught_up.set()  # a shard still starting sees the image is missing and fails
        if not self._closing:
            self._on_lost(exc)

    async def close(self) -> None:
        self._closing = True
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
