"""The node's listening sockets, made by the supervisor and kept for the node's life, and resets while a shard is down.

Runs in the supervisor process. The supervisor binds every shard's Kafka listener and the admin API's before any
child exists and passes them to the children, so a port can never be taken by another program between restarts.
From a shard's death until its next process is ready, ``DownPortResetter`` accepts that port's connections and
resets them at once: a client learns the broker is down as it would from a Kafka broker that died, and goes to the
other brokers, instead of waiting in the accept backlog for a restart that may take seconds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct

from rafka_shards.supervisor.limits import LISTEN_BACKLOG, RESET_PER_WAKEUP_MAX

log = logging.getLogger(__name__)

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST, the client fails at once
EXIT_STARTUP = 2


class StartupError(Exception):
    """The node cannot start; the message says what to change. ``exit_code`` is what ``serve`` returns."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, purpose: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; StartupError (naming ``purpose``) if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {host_port(host, port)}{purpose}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {host_port(host, port)}{purpose}: port {port} is already in use", EXIT_STARTUP
            ) from None
        raise StartupError(f"cannot listen on {host_port(host, port)}{purpose}: {e.strerror}") from None
    return sock


class DownPortResetter:
    """Resets every connection to one shard's ports (one per listener) while no ready process serves them (asyncio
    readers)."""

    def __init__(self, index: int, *listeners: socket.socket) -> None:
        self.index = index
        self.listeners = listeners
        self.active = False

    def start(self) -> None:
        if self.active:
            return
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            listener.setblocking(False)  # shared with the shards, whose asyncio servers make it non-blocking too
            loop.add_reader(listener.fileno(), self._reset_pending, listener)
        self.active = True

    def stop(self) -> None:
        if self.active:
            loop = asyncio.get_running_loop()
            for listener in self.listeners:
                loop.remove_reader(listener.fileno())
            self.active = False

    def _reset_pending(self, listener: socket.socket) -> None:
        for _ in range(RESET_PER_WAKEUP_MAX):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # drained (or a starting shard took it)
            except OSError as e:
                log.warning("shard %d's port: accept failed while it is down: %s", self.index, e)
                return
            with conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
