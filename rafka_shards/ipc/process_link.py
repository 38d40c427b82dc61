"""The supervisor's links to its children: typed messages, some carrying a socket, over SOCK_SEQPACKET pairs.

The supervisor holds one link to the controller process and one to each shard process (the child's end is passed at
spawn). What travels on them is small and rare: which shard runs as which pid, "the controller is caught up", "shard
i is ready", and the controller channels. A controller channel is a stream socket pair the supervisor makes for one
(shard, controller process) pair and hands out, one end down each link (``SCM_RIGHTS``): so the controller process
can be restarted without the shards, which get a fresh channel to the new one and keep their Kafka clients.

A link's end of file means the process at the other end is gone: a child stops when its supervisor's link closes.

Format: one datagram is one message in the link's ``controller.wire`` codec (a JSON object with the message's type
and schema version) of at most ``MESSAGE_BYTES_MAX`` bytes, with at most one file descriptor attached. The peers are
the node's own processes, but a malformed message is still refused with ``LinkError`` (and any descriptor that came
with it closed), not trusted. Nothing persists these messages.
Bounds: ``QUEUED_MAX`` messages wait for a peer that does not read; past that the link is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from controller.wire import Codec, WireError

log = logging.getLogger(__name__)

MESSAGE_BYTES_MAX = 16 * 1024
QUEUED_MAX = 4096


class LinkError(WireError):
    """A message that does not parse, or a link that cannot be used any more."""


@dataclass(frozen=True, slots=True)
class ShardChannel:
    """Carries one end of a controller channel: to the controller for shard ``index`` (process ``pid``), or to it."""

    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class ShardState:
    """Supervisor -> controller: a shard process as the supervisor sees it (for /v1/shards and /metrics)."""

    index: int
    broker_id: int
    listen: str
    pid: int  # 0: not running
    alive: bool
    restarts: int
    last_exit: str | None


@dataclass(frozen=True, slots=True)
class NodeState:
    """Supervisor -> controller: whether every shard has started once, and whether the node is stopping."""

    started: bool
    stopping: bool


@dataclass(frozen=True, slots=True)
class ControllerReady:
    """Controller -> supervisor: its image holds everything committed before it started; channels can come."""

    pid: int


@dataclass(frozen=True, slots=True)
class ShardReady:
    """Controller -> supervisor: shard ``index`` (process ``pid``) applied the image and listens for clients."""

    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Controller -> supervisor: the channel of shard ``index`` (process ``pid``) ended; if that process still
    runs, it needs a new one."""

    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class ControlledShutdown:
    """Supervisor -> controller: the node is stopping; move partition and Raft leadership away from it within
    ``timeout_ms``, then answer ``ControlledShutdownDone``."""

    timeout_ms: int


@dataclass(frozen=True, slots=True)
class ControlledShutdownDone:
    """Controller -> supervisor: the controlled shutdown is over (``outcome`` says what it did, for the log)."""

    outcome: str


LinkMessage = (
    ShardChannel
    | ShardState
    | NodeState
    | ControllerReady
    | ShardReady
    | ChannelClosed
    | ControlledShutdown
    | ControlledShutdownDone
)
CODEC: Codec[LinkMessage] = Codec(
    "process link",
    {
        ShardChannel: 1,
        ShardState: 1,
        NodeState: 1,
        ControllerReady: 1,
        ShardReady: 1,
        ChannelClosed: 1,
        ControlledShutdown: 1,
        ControlledShutdownDone: 1,
    },
    bytes_max=MESSAGE_BYTES_MAX,
    error=LinkError,
)


def encode(msg: LinkMessage) -> bytes:
    return CODEC.encode(msg)


def decode(data: bytes) -> LinkMessage:
    """The message in one datagram; ``LinkError`` (a ``controller.wire.WireError``) says what is wrong."""
    return CODEC.decode(data)


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected ends of a new link."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Link:
    """One end of a link on the running event loop: ``on_message(msg, sock)`` for each message (``sock`` is the
    socket it carried, now owned by the callee, or None); ``on_closed(reason)`` once, when the peer is gone or sent
    garbage. Sending never blocks: messages wait in a bounded queue while the peer's buffer is full."""

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[LinkMessage, socket.socket | None], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self._sock = sock
        self._on_message = on_message
        self._on_closed = on_closed
        self._queue: deque[tuple[bytes, socket.socket | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.closed = False

    def start(self) -> None:
        self._sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def send(self, msg: LinkMessage, attached: socket.socket | None = None) -> None:
        """Queue ``msg``; the link owns ``attached`` from now on and closes it once sent (the peer has a copy)."""
        if self.closed:
            if attached is not None:
                attached.close()
            return
        if len(self._queue) >= QUEUED_MAX:
            if attached is not None:
                attached.close()
            self._close(f"more than {QUEUED_MAX} messages queued: the peer is not reading")
            return
        self._queue.append((encode(msg), attached))
        self._flush()

    def _flush(self) -> None:
        while self._queue and not self.closed:
            data, attached = self._queue[0]
            try:
                if attached is None:
                    self._sock.send(data)
                else:
                    socket.send_fds(self._sock, [data], [attached.fileno()])
            except BlockingIOError:
                if not self._writing and self._loop is not None:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._writable)
                return
            except OSError as e:
                self._close(f"send failed: {e}")
                return
            self._queue.popleft()
            if attached is not None:
                attached.close()

    def _writable(self) -> None:
        if self._loop is not None and self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _ = socket.recv_fds(self._sock, MESSAGE_BYTES_MAX + 1, 1)
            except BlockingIOError:
                return
            except OSError as e:
                self._close(f"receive failed: {e}")
                return
            attached = socket.socket(fileno=fds[0]) if fds else None
            if not data and attached is None:
                self._close("the peer closed the link")
                return
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise LinkError("a truncated message")
                msg = decode(data)
                if (attached is not None) != isinstance(msg, ShardChannel):
                    raise LinkError(f"{type(msg).__name__} {'with' if attached else 'without'} a socket")
            except LinkError as e:
                if attached is not None:
                    attached.close()
                self._close(f"bad message: {e}")
                return
            self._on_message(msg, attached)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.close()
        self._on_closed(reason)

    def close(self) -> None:
        """Close without calling ``on_closed`` (this end chose to)."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_writer(self._sock.fileno())
        for _, attached in self._queue:
            if attached is not None:
                attached.close()
        self._queue.clear()
        self._sock.close()


def describe_exit(code: int | None) -> str:
    """A child's exit status in words: "exit code 1", "killed by SIGKILL"."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
