"""Controller-to-controller transport: authenticated frames over TCP, one outbound connection per peer.

Runs in the controller process on its event loop (the thin asyncio shell around ``controller.raft``). A frame is
``[u32 length][32-byte HMAC-SHA256(secret, rest)][u8 kind][u32 src][body]``: every frame carries the MAC of the
shared secret (an empty secret still MACs, so a node with a secret never accepts a node without one). A node writes
only on its own outbound connections and reads only on inbound ones, so each direction has one ordered stream.

Bounds: a frame larger than ``FRAME_BYTES_MAX`` closes the connection; at most ``QUEUE_BYTES_MAX`` of frames wait for
one peer (Raft retransmits what is dropped; a forwarded proposal times out). Frames from unknown nodes, with a bad
MAC, or of an unknown kind are dropped and counted in ``dropped`` by reason, never handed on.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import struct
from collections.abc import Callable

from controller.raft.messages import SNAPSHOT_BYTES_MAX
from rafka_shards import event_loop
from rafka_shards.config import Endpoint

log = logging.getLogger(__name__)

KIND_RAFT = 1
KIND_FORWARD = 2  # a follower's request to the leader (``controller.forwarding``)
KIND_FORWARD_RESULT = 3  # the leader's answer (``controller.forwarding``)
KINDS = {KIND_RAFT, KIND_FORWARD, KIND_FORWARD_RESULT}
FRAME_BYTES_MAX = SNAPSHOT_BYTES_MAX + 4096
QUEUE_BYTES_MAX = 128 * 1024 * 1024
CONNECTIONS_INBOUND_MAX = 64
_HEAD = struct.Struct(">I32sBI")
_MAC_FROM = 4 + 32

Handler = Callable[[int, int, bytes], None]  # (kind, src, body)


def _mac(secret: bytes, rest: bytes) -> bytes:
    return hmac.new(secret, rest, hashlib.sha256).digest()


def encode_frame(secret: bytes, kind: int, src: int, body: bytes) -> bytes:
    rest = struct.pack(">BI", kind, src) + body
    return struct.pack(">I", 32 + len(rest)) + _mac(secret, rest) + rest


RECONNECT_AFTER_CLOSE_S = 0.01  # after a connection ended, before the next attempt


class _PeerLink:
    """Frames queued for one peer and the task that connects and writes them."""

    def __init__(self, transport: PeerTransport, node: int, address: Endpoint) -> None:
        self.node = node
        self.address = address
        self._transport = transport
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self.state = "connecting"
        self.connects = 0
        self.failures = 0
        self.frames_sent = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-peer-{node}")
        self._task.add_done_callback(self._died)

    def _died(self, task: asyncio.Task[None]) -> None:
        """The link never ends but by ``close``: say so loudly if it did (Raft would silently lose the peer)."""
        if not task.cancelled() and task.exception() is not None:
            self.state = "dead"
            log.critical("link to controller node %d died", self.node, exc_info=task.exception())

    def send(self, frame: bytes) -> None:
        if self._queued_bytes + len(frame) > QUEUE_BYTES_MAX:
            self._transport.count("queue_full")
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._wake.set()

    async def _run(self) -> None:
        backoff_s = 0.05
        while True:
            try:
                reader, writer = await event_loop.within(
                    asyncio.open_connection(self.address.host, self.address.port), 2
                )
            except (OSError, TimeoutError):
                self.state = "backoff"
                self.failures += 1
                self._drop_queue()  # Raft resends; nothing queued may wait for a peer that is down
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 1.0)
                continue
            backoff_s = 0.05
            self.connects += 1
            # The peer never writes on this connection: a read ends only when it closes (its process died or it
            # restarted). Noticing that while idle matters: two followers exchange nothing until an election, and a
            # vote request written into a connection to a dead incarnation is lost, costing an election timeout.
            closed = asyncio.ensure_future(reader.read(1))
            try:
                await self._write_until_closed(writer, closed)
            except (OSError, ConnectionError, RuntimeError):
                # RuntimeError: uvloop's write on a transport that closed under it (the peer reset the connection)
                # raises instead of dropping the data as asyncio does; either way, reconnect.
                self.failures += 1
            finally:
                if closed.done() and not closed.cancelled():
                    closed.exception()  # a reset ends the read with an error: it is the news, not a failure
                closed.cancel()
                writer.transport.abort()  # nothing queued here is worth waiting for: Raft resends
            self.state = "backoff"
            await asyncio.sleep(RECONNECT_AFTER_CLOSE_S)  # a peer that accepts and closes at once is not hammered

    async def _write_until_closed(self, writer: asyncio.StreamWriter, closed: asyncio.Future[bytes]) -> None:
        """Write queued frames as they come; raises ConnectionError once the peer closes the connection (what is
        still queued then goes out on the next connection)."""
        while True:
            if closed.done():
                raise ConnectionError("the peer closed the connection")
            while self._queue:
                frame = self._queue.popleft()
                self._queued_bytes -= len(frame)
                writer.write(frame)
                self.frames_sent += 1
            self.state = "draining"
            await writer.drain()
            self._wake.clear()
            self.state = "idle"
            if not self._queue:
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait((woken, closed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class PeerTransport:
    def __init__(self, node_id: int, secret: bytes, addresses: dict[int, Endpoint], handler: Handler) -> None:
        self.node_id = node_id
        self._secret = secret
        self.addresses = dict(addresses)
        self._handler = handler
        self._links: dict[int, _PeerLink] = {}
        self._server: asyncio.Server | None = None
        self._inbound: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.dropped: collections.Counter[str] = collections.Counter()
        # An inbound connection that carried valid frames from this node closed (the peer reconnects, or died).
        self.on_inbound_closed: Callable[[int], None] = lambda _node: None

    def links(self) -> dict[str, dict[str, object]]:
        """Each outgoing link's state and counters (for ``/v1/controller``)."""
        return {
            str(n): {
                "state": link.state,
                "connects": link.connects,
                "failures": link.failures,
                "sent": link.frames_sent,
            }
            for n, link in self._links.items()
        }

    def count(self, reason: str) -> None:
        self.dropped[reason] += 1

    async def start(self, listen: Endpoint | None) -> None:
        if listen is not None:
            self._server = await asyncio.start_server(self._serve, listen.host, listen.port, limit=1024 * 1024)

    def send(self, dst: int, kind: int, body: bytes) -> None:
        link = self._links.get(dst)
        if link is None:
            address = self.addresses.get(dst)
            if address is None:
                self.count("no_address")
                return
            link = self._links[dst] = _PeerLink(self, dst, address)
        link.send(encode_frame(self._secret, kind, self.node_id, body))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._inbound) >= CONNECTIONS_INBOUND_MAX:
            self.count("too_many_connections")
            writer.close()
            return
        self._inbound[task] = writer
        peer = -1  # the node whose valid frames this connection carried
        try:
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                if not 37 <= length <= FRAME_BYTES_MAX:
                    self.count("bad_frame")
                    return
                data = await reader.readexactly(length)
                mac, rest = data[:32], data[32:]
                if not hmac.compare_digest(mac, _mac(self._secret, rest)):
                    self.count("bad_secret")
                    log.warning("controller frame with a bad MAC from %s: closing", writer.get_extra_info("peername"))
                    return
                kind, src = struct.unpack_from(">BI", rest)
                if kind not in KINDS:
                    self.count("unknown_kind")
                    continue
                if src not in self.addresses or src == self.node_id:
                    self.count("unknown_node")
                    continue
                peer = src
                self._handler(kind, src, rest[5:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            self._inbound.pop(task, None)
            writer.close()
            if peer >= 0:
                self.on_inbound_closed(peer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closing the connections ends their readers (cancelling a start_server handler makes asyncio log an error).
        tasks = list(self._inbound)
        for writer in list(self._inbound.values()):
            writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(link.close() for link in self._links.values()))
        if self._server is not None:
            await self._server.wait_closed()
