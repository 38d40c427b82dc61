"""The supervisor's links to its children: typed messages, some carrying a socket, over SOCK_SEQPACKET pairs.

The supervisor holds one link to the controller process and one to each shard process (the child's end is passed at
spawn). What travels on them is small and rare: which shard runs as which pid, "the controller is caught up", "shard
i is ready", and the controller channels. A controller channel is a stream socket pair the supervisor makes for one
(shard, controller process) pair and hands out, one end down each link (``SCM_RIGHTS``): so the controller process
can be restarted without the shards, which get a fresh channel to the new one and keep their Kafka clients.

A link's end of file means the process at the other end is gone: a child stops when its supervisor's link closes.

Format: one datagram is one message, an orjson object ``{"type": name, ...fields}`` of at most
``MESSAGE_BYTES_MAX`` bytes with at most one file descriptor attached. The peers are the node's own processes, but
a malformed message is still refused with ``LinkError`` (and any descriptor that came with it closed), not trusted.
Bounds: ``QUEUED_MAX`` messages wait for a peer that does not read; past that the link is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

log = logging.getLogger(__name__)

MESSAGE_BYTES_MAX = 16 * 1024
QUEUED_MAX = 4096


class LinkError(Exception):
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


LinkMessage = ShardChannel | ShardState | NodeState | ControllerReady | ShardReady | ChannelClosed
_TYPES: dict[str, type[LinkMessage]] = {
    cls.__name__: cls for cls in (ShardChannel, ShardState, NodeState, ControllerReady, ShardReady, ChannelClosed)
}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "str": (str,), "bool": (bool,), "str | None": (str,)}


def encode(msg: LinkMessage) -> bytes:
    data = orjson.dumps({"type": type(msg).__name__, **dataclasses.asdict(msg)})
    if len(data) > MESSAGE_BYTES_MAX:
        raise LinkError(f"{type(msg).__name__} of {len(data)} bytes is over {MESSAGE_BYTES_MAX}")
    return data


def decode(data: bytes) -> LinkMessage:
    if len(data) > MESSAGE_BYTES_MAX:
        raise LinkError(f"a message of more than {MESSAGE_BYTES_MAX} bytes")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise LinkError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise LinkError("not a JSON object")
    cls = _TYPES.get(obj.pop("type", None))
    if cls is None:
        raise LinkError("unknown message type")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if set(obj) != set(fields):
        raise LinkError(f"{cls.__name__}: fields {sorted(obj)} are not {sorted(fields)}")
    for name, value in obj.items():
        kind = str(fields[name].type)
        if value is None and kind.endswith("| None"):
            continue
        # bool is an int in Python: an int field must not take true/false, nor a bool field 0/1.
        if not isinstance(value, _FIELD_TYPES[kind]) or (kind == "int" and isinstance(value, bool)):
            raise LinkError(f"{cls.__name__}.{name}: expected {kind}, got {type(value).__name__}")
    return cls(**obj)


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
