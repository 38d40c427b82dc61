"""The supervisor's children: each one's place on the node, waiting for a process to exit, stopping processes.

Runs in the supervisor process. A child's role (the controller process, shard i with its broker id and listener) is
fixed for the node's life; the process filling it comes and goes. Exits are seen on the process's sentinel, read by
the event loop (hypercorn's way), never by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.process
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from rafka_shards.config import BrokerConfig
from rafka_shards.ipc.process_link import Link, describe_exit
from rafka_shards.supervisor.limits import STOP_STACKS_AFTER_S
from rafka_shards.supervisor.listeners import DownPortResetter
from rafka_shards.supervisor.restart_policy import RestartPolicy

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Child:
    """A child process's place on the node: a fixed role, a process that comes and goes."""

    name: str
    restart_policy: RestartPolicy
    process: multiprocessing.process.BaseProcess | None = None
    link: Link | None = None
    restarts_total: int = 0
    last_exit_code: int | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


@dataclass(kw_only=True)
class ShardSlot(Child):
    """One shard: fixed broker id and listening socket."""

    index: int
    config: BrokerConfig
    listener: socket.socket  # the inter-broker listener's (the first of config.listener_specs())
    resetter: DownPortResetter  # resets its ports' connections while no ready process is behind them
    extra_listeners: tuple[socket.socket, ...] = ()  # the other listeners', in config.listener_specs() order
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)  # the current process is ready

    @property
    def ready(self) -> bool:
        return self.alive and self.ready_event.is_set()


async def wait_exit(process: multiprocessing.process.BaseProcess) -> int | None:
    """Wait until ``process`` exits (its sentinel becomes readable); its exit code."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    sentinel = process.sentinel

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(sentinel, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(sentinel)
    process.join()
    return process.exitcode


async def terminate(children: Sequence[Child], timeout_s: float) -> bool:
    """SIGTERM every live child, SIGKILL those still running after ``timeout_s``; True if all stopped cleanly."""
    live = [c for c in children if c.process is not None and c.process.exitcode is None]
    for child in live:
        assert child.process is not None and child.process.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signal.SIGTERM)
    clean = True
    waits = {asyncio.ensure_future(wait_exit(c.process)): c for c in live if c.process is not None}
    if waits:
        _, pending = await asyncio.wait(waits, timeout=min(timeout_s, STOP_STACKS_AFTER_S))
        for fut in pending:  # a slow stop is read in the log, not guessed at (faulthandler, event_loop.run)
            child = waits[fut]
            assert child.process is not None and child.process.pid is not None
            log.warning(
                "%s is still stopping after %.0f s; its threads' stacks follow", child.name, STOP_STACKS_AFTER_S
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGUSR1)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=max(0.0, timeout_s - STOP_STACKS_AFTER_S))
        for fut in pending:
            child = waits[fut]
            assert child.process is not None and child.process.pid is not None
            log.error("%s did not stop within shutdown_timeout_ms; killing it", child.name)
            clean = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending)
    for child in live:
        if child.process is not None and child.process.exitcode != 0:
            log.error("%s stopped with %s", child.name, describe_exit(child.process.exitcode))
            clean = False
    return clean
