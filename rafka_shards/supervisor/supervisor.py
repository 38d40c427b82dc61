"""The node supervisor: runs the controller process and one shard process per partition group, and keeps them running.

Runs in the process ``python -m rafka_shards serve`` starts. Owns the data directory's lock, every shard's listening
socket, the admin API's listening socket and the metrics directory; it serves no request itself. Children are
spawned with multiprocessing's ``spawn`` method (a fresh interpreter: no fork after threads or event loops exist):

- the controller process (``rafka_shards.controller_node``): the node's Raft member, the shards' controller
  channels, the admin API on the socket passed to it;
- one shard process per partition group (``rafka_shards.shard``), with its listening socket.

Their entry points come from the composition root (``rafka_shards.cli``, as ``ChildTargets``): this package imports
neither process package.

Each child gets one end of a ``process_link``; a child whose link closes knows its supervisor is gone and stops. The
supervisor makes a controller channel (a stream socket pair) for each (shard process, controller process) pair and
hands one end to each over their links, once the controller says its image is caught up. The parent keeps its copy
of every listening socket, so a port can never be taken by another program. From a shard's death until its next
process is ready (registered with the controller and caught up), the supervisor accepts that port's connections
and resets them at once (``listeners.DownPortResetter``): a client learns the broker is down as it would from a
Kafka broker that died, and goes to the other brokers (where the dead one's partitions already moved), instead of
waiting in the accept backlog for a restart that may take seconds.

Supervision, the same for the controller and for each shard: a child that dies (SIGKILL, crash, OOM) is restarted
after a delay that doubles from ``shard_restart_backoff_ms`` up to ``shard_restart_backoff_max_ms`` (reset once it
has stayed up for the cap); more than ``shard_restarts_max`` deaths of one child within ``shard_restart_window_ms``
make the node give up (exit 1), as a crash loop will not heal by itself. That rule is ``restart_policy``, sans-IO;
this module is the asyncio shell that spawns, waits on sentinels and routes link messages. Shards keep serving
while the controller process restarts (metadata changes are refused meanwhile with NOT_CONTROLLER) and get a channel
to the new one.
SIGTERM/SIGINT: first a controlled shutdown (the controller process moves the node's partition and Raft leadership to
other nodes, bounded by ``controlled_shutdown_timeout_ms``), then SIGTERM to every shard (each stops accepting,
finishes in-flight requests, flushes, fsyncs and closes its segments), then to the controller; wait up to
``shutdown_timeout_ms`` each time, SIGKILL stragglers.
A child that stops on SIGTERM by itself (exit 0, or killed by SIGTERM while it started) was stopped on purpose, not
killed: the node stops the same way and exits 0. That is the case when SIGTERM goes to the whole process group
(systemd, ``kill -TERM -PGID``) and a child's exit is seen before the supervisor's own signal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig
from rafka_shards.ipc.process_link import (
    ChannelClosed,
    ControlledShutdown,
    ControlledShutdownDone,
    ControllerReady,
    Link,
    LinkMessage,
    NodeState,
    ShardChannel,
    ShardReady,
    ShardState,
    describe_exit,
    socket_pair,
)
from rafka_shards.supervisor.children import Child, ShardSlot, terminate, wait_exit
from rafka_shards.supervisor.listeners import EXIT_STARTUP, DownPortResetter, StartupError, host_port, listen
from rafka_shards.supervisor.restart_policy import GiveUp, RestartPolicy

__all__ = ["EXIT_STARTUP", "ChildTargets", "StartupError", "Supervisor"]

log = logging.getLogger(__name__)


class ControllerTarget(Protocol):
    """The controller process's entry point (``rafka_shards.controller_node.process.run_controller``)."""

    def __call__(
        self,
        config: BrokerConfig,
        link: socket.socket,
        admin_listener: socket.socket | None,
        parent_pid: int,
        first_start: bool,
        restarts: int,
        /,
    ) -> None: ...


class ShardTarget(Protocol):
    """A shard process's entry point (``rafka_shards.shard.process.run_shard``)."""

    def __call__(
        self,
        config: BrokerConfig,
        index: int,
        listener: socket.socket,
        supervisor_link: socket.socket,
        parent_pid: int,
        /,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ChildTargets:
    """What the children run, given by the composition root (``rafka_shards.cli``), so this package imports no
    process package. Both must be top-level functions: multiprocessing's ``spawn`` pickles a target by reference
    (module and name) and the fresh interpreter imports it from there."""

    controller: ControllerTarget
    shard: ShardTarget


class Supervisor:
    def __init__(self, config: BrokerConfig, targets: ChildTargets) -> None:
        self.config = config
        self.shard_count = config.shard_count
        self.slots: list[ShardSlot] = []
        self.controller = Child(name="controller", restart_policy=RestartPolicy.from_config(config))
        self._targets = targets
        self.admin_listener: socket.socket | None = None
        self.metrics_dir = config.metrics_dir
        self.started = False
        self._context = multiprocessing.get_context("spawn")
        self._lock_fd: int | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self._controller_ready = asyncio.Event()  # the current controller process is caught up and takes channels
        self._monitors: list[asyncio.Task[None]] = []
        self._controlled_shutdown_done: asyncio.Future[str] | None = None

    # ---- start-up ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the data directory, bind every listener, start the controller process and wait until it is caught
        up with the quorum (the image must hold everything committed before this start, or a topic created
        meanwhile would look stray to it)."""
        config = self.config
        self._lock_data_dir()
        self._bind_listeners()
        # Every child writes its metric values under this directory (prometheus-client multiprocess mode); values
        # of an earlier run of the node are not this run's.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        self._spawn_controller(first_start=True)
        process = self.controller.process
        assert process is not None
        if not await self._until(self._controller_ready.wait(), process):
            code = process.exitcode
            raise StartupError(
                f"the controller process failed to start: {describe_exit(code)} (its log says why)",
                exit_code=EXIT_STARTUP if code == EXIT_STARTUP else 1,
            )
        self._monitors.append(asyncio.get_running_loop().create_task(self._supervise_controller()))
        admin = (
            f", admin API on {_admin_scheme(config)}://{config.admin_endpoint}"
            if self.admin_listener is not None
            else ""
        )
        log.info("controller process (pid %d) ready, node %d%s", process.pid, config.node_id, admin)

    async def start_shards(self) -> None:
        """Spawn every shard and wait until all are listening; a shard that exits meanwhile fails the start."""
        for slot in self.slots:
            self._spawn_shard(slot)
        for slot in self.slots:
            assert slot.process is not None
            if not await self._until(slot.ready_event.wait(), slot.process):
                code = slot.process.exitcode
                raise StartupError(
                    f"shard {slot.index} (broker {slot.config.broker_id}) failed to start: {describe_exit(code)}",
                    exit_code=EXIT_STARTUP if code == EXIT_STARTUP else 1,
                )
        self.started = True
        self._send_node_state()
        loop = asyncio.get_running_loop()
        self._monitors += [loop.create_task(self._supervise_shard(slot)) for slot in self.slots]
        log.info(
            "node ready: %d shard(s), brokers %d..%d on %s",
            self.shard_count,
            self.slots[0].config.broker_id,
            self.slots[-1].config.broker_id,
            ", ".join(str(s.config.listen_endpoint) for s in self.slots),
        )

    async def _until(
        self, event: collections.abc.Awaitable[object], process: multiprocessing.process.BaseProcess
    ) -> bool:
        """Wait for ``event``; False if ``process`` exits first. A stop request raises StartupError (exit 0)."""
        done = asyncio.ensure_future(event)
        exited = asyncio.ensure_future(wait_exit(process))
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((done, exited, stop), return_when=asyncio.FIRST_COMPLETED)
        for f in (done, exited, stop):
            f.cancel()
        # Let the cancelled exit-waiter run its finally (remove_reader on the sentinel) now: later, it would remove
        # the reader the child's monitor adds for the same sentinel.
        await asyncio.gather(done, exited, stop, return_exceptions=True)
        if self._stop.is_set():
            raise StartupError("stopped during start-up", exit_code=0)
        return done.done() and not done.cancelled()

    def _lock_data_dir(self) -> None:
        data_dir = self.config.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StartupError(f"data directory {data_dir}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"data directory {data_dir} is in use by another rafka_shards node") from None
        self._lock_fd = fd

    def _bind_listeners(self) -> None:
        config = self.config
        ep = config.listen_endpoint
        advertise = config.advertise_endpoint if config.advertise else None
        rack = config.rack or socket.gethostname()
        inter, *extras = config.listener_specs()
        for i in range(self.shard_count):
            port = ep.port + i if ep.port else 0
            sock = listen(ep.host, port, "")
            bound = sock.getsockname()[1]
            extra_socks, extra_specs = [], [inter.for_shard(i, bound)]
            for li in extras:
                extra = listen(li.bind.host, li.bind.port + i if li.bind.port else 0, f" for listener {li.name}")
                extra_socks.append(extra)
                extra_specs.append(li.for_shard(i, extra.getsockname()[1]))
            shard_config = dataclasses.replace(
                config,
                broker_id=config.broker_id + i,
                listen=host_port(ep.host, bound),
                advertise=host_port(advertise.host, advertise.port + i) if advertise is not None else "",
                rack=rack,
                shards="1",
            )
            if config.listeners:  # the shard's own ports, in the same syntax
                shard_config = dataclasses.replace(
                    shard_config,
                    listeners=",".join(li.spec() for li in extra_specs),
                    advertised_listeners=",".join(li.advertised_spec() for li in extra_specs),
                    inter_broker_listener_name=inter.name,
                )
            self.slots.append(
                ShardSlot(
                    name=f"shard {i}",
                    restart_policy=RestartPolicy.from_config(config),
                    index=i,
                    config=shard_config,
                    listener=sock,
                    resetter=DownPortResetter(i, sock, *extra_socks),
                    extra_listeners=tuple(extra_socks),
                )
            )
        admin = config.admin_endpoint
        if admin is not None:
            self.admin_listener = listen(admin.host, admin.port, " for the admin API")

    # ---- children ----------------------------------------------------------------------------------------------

    def _spawn_controller(self, first_start: bool) -> None:
        child = self.controller
        parent_end, child_end = socket_pair()
        self._controller_ready.clear()
        process = self._context.Process(
            target=self._targets.controller,
            args=(self.config, child_end, self.admin_listener, os.getpid(), first_start, child.restarts_total),
            name="rafka-controller",
        )
        process.start()
        child_end.close()
        child.process = process
        child.restart_policy.started(monotonic_ms())
        child.link = Link(parent_end, self._from_controller, self._controller_link_closed)
        child.link.start()
        log.info("controller process started as pid %d", process.pid)

    def _spawn_shard(self, slot: ShardSlot) -> None:
        parent_end, child_end = socket_pair()
        process = self._context.Process(
            target=self._targets.shard,
            args=(slot.config, slot.index, slot.listener, child_end, os.getpid(), slot.extra_listeners),
            name=f"rafka-shard-{slot.index}",
        )
        process.start()
        child_end.close()
        slot.process = process
        slot.restart_policy.started(monotonic_ms())
        slot.ready_event.clear()
        slot.link = Link(parent_end, self._from_shard(slot), lambda reason: None)  # its death is seen on the sentinel
        slot.link.start()
        log.info("shard %d (broker %d) started as pid %d", slot.index, slot.config.broker_id, process.pid)
        self._send_shard_state(slot)
        if self._controller_ready.is_set():
            self._hand_channel(slot)

    def _hand_channel(self, slot: ShardSlot) -> None:
        """A new controller channel for the shard's current process, one end to it and one to the controller."""
        link, pid = self.controller.link, slot.pid
        if link is None or slot.link is None or pid is None or not slot.alive:
            return
        controller_end, shard_end = socket.socketpair()
        link.send(ShardChannel(slot.index, pid), controller_end)
        slot.link.send(ShardChannel(slot.index, pid), shard_end)

    def _from_controller(self, msg: LinkMessage, attached: socket.socket | None) -> None:
        if attached is not None:
            attached.close()
        if isinstance(msg, ControllerReady):
            if msg.pid != self.controller.pid:
                return
            self._controller_ready.set()
            self._send_node_state()
            for slot in self.slots:
                self._send_shard_state(slot)
                self._hand_channel(slot)
        elif isinstance(msg, ShardReady | ChannelClosed):
            known = self.slots[msg.index] if 0 <= msg.index < len(self.slots) else None
            if known is None or known.pid != msg.pid:
                return  # about a process of that shard that is gone
            if isinstance(msg, ShardReady):
                known.ready_event.set()
                known.resetter.stop()
            elif not self._stopping:
                self._hand_channel(known)
        elif isinstance(msg, ControlledShutdownDone):
            if self._controlled_shutdown_done is not None and not self._controlled_shutdown_done.done():
                self._controlled_shutdown_done.set_result(msg.outcome)
        else:
            log.error("unexpected %s from the controller process", type(msg).__name__)

    def _from_shard(self, slot: ShardSlot) -> Callable[[LinkMessage, socket.socket | None], None]:
        def on_message(msg: LinkMessage, attached: socket.socket | None) -> None:
            if attached is not None:
                attached.close()
            log.error("unexpected %s from shard %d", type(msg).__name__, slot.index)

        return on_message

    def _controller_link_closed(self, reason: str) -> None:
        self._controller_ready.clear()
        if self._controlled_shutdown_done is not None and not self._controlled_shutdown_done.done():
            self._controlled_shutdown_done.set_result(f"the controller process's link closed: {reason}")
        if not self._stopping:
            log.warning("the controller process's link closed: %s", reason)

    def _send_node_state(self) -> None:
        if self.controller.link is not None:
            self.controller.link.send(NodeState(self.started, self._stopping))

    def _send_shard_state(self, slot: ShardSlot) -> None:
        link = self.controller.link
        if link is None or not self._controller_ready.is_set():
            return  # the whole state goes out when it is ready
        last_exit = None if slot.last_exit_code is None else describe_exit(slot.last_exit_code)
        state = ShardState(
            slot.index,
            slot.config.broker_id,
            slot.config.listen,
            slot.pid or 0,
            slot.alive,
            slot.restarts_total,
            last_exit,
        )
        link.send(state)

    # ---- supervision -------------------------------------------------------------------------------------------

    async def _supervise_controller(self) -> None:
        def died() -> None:
            if self.controller.link is not None:
                self.controller.link.close()
            self._controller_ready.clear()

        await self._supervise(self.controller, died, lambda: self._spawn_controller(first_start=False))

    async def _supervise_shard(self, slot: ShardSlot) -> None:
        def died() -> None:
            if slot.link is not None:
                slot.link.close()
            slot.ready_event.clear()
            self._send_shard_state(slot)
            if not self._stopping:
                slot.resetter.start()

        await self._supervise(slot, died, lambda: self._spawn_shard(slot))

    async def _supervise(self, child: Child, died: Callable[[], None], respawn: Callable[[], None]) -> None:
        """Restart ``child`` each time it dies, as its restart policy says, until the node stops or gives up."""
        while True:
            assert child.process is not None
            code = await wait_exit(child.process)
            child.last_exit_code = code
            died()
            if self._stopping:
                return
            if code in STOPPED_ON_PURPOSE:
                # Somebody asked this child to stop: SIGTERM to the node's process group (systemd's
                # KillMode=control-group, a terminal's job control) reaches every process at once, and this
                # process may see the child's exit before its own SIGTERM. Or an operator stopped the child by
                # itself. Either way a restart would undo the stop, so the node stops, cleanly.
                log.info(
                    "%s (pid %d) stopped on SIGTERM (%s): stopping the node",
                    child.name,
                    child.process.pid,
                    describe_exit(code),
                )
                self.request_stop()
                return
            log.error("%s (pid %d) died: %s", child.name, child.process.pid, describe_exit(code))
            decision = child.restart_policy.died(monotonic_ms())
            if isinstance(decision, GiveUp):
                self.fatal(
                    f"{child.name} died {decision.deaths} times within {decision.window_ms / 1000:.0f}s "
                    f"(shard_restarts_max {decision.restarts_max}); giving up"
                )
                return
            log.warning("restarting %s in %.2fs", child.name, decision.delay_ms / 1000)
            with contextlib.suppress(TimeoutError):
                await event_loop.within(self._stop.wait(), decision.delay_ms / 1000)
            if self._stopping:
                return
            child.restarts_total += 1
            respawn()

    def fatal(self, message: str) -> None:
        log.critical("%s", message)
        if self._fatal is None:
            self._fatal = message
        self.request_stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> str | None:
        await self._stop.wait()
        return self._fatal

    # ---- shutdown ----------------------------------------------------------------------------------------------

    async def stop(self) -> bool:
        """Stop every shard, then the controller, each within the deadline (SIGKILL the rest); True if all stopped
        cleanly."""
        self._stopping = True
        self._stop.set()
        self._send_node_state()
        for task in self._monitors:
            task.cancel()
        await asyncio.gather(*self._monitors, return_exceptions=True)
        await self._controlled_shutdown()
        timeout_s = self.config.shutdown_timeout_ms / 1000
        clean = await terminate(self.slots, timeout_s)
        clean = await terminate([self.controller], timeout_s) and clean
        for child in [*self.slots, self.controller]:
            if child.link is not None:
                child.link.close()
        for slot in self.slots:
            slot.resetter.stop()
            slot.listener.close()
            for extra in slot.extra_listeners:
                extra.close()
        if self.admin_listener is not None:
            self.admin_listener.close()
        if self._lock_fd is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)  # in memory: nothing of it outlives the node
            os.close(self._lock_fd)
            self._lock_fd = None
        return clean

    async def _controlled_shutdown(self) -> None:
        """Before any shard stops, ask the controller process to move this node's partition and Raft leadership
        to other nodes (``controller_node.controlled_shutdown``), waiting at most ``controlled_shutdown_timeout_ms``
        (and a second for its answer). Skipped when off, before the node has started, or without a controller."""
        timeout_ms = self.config.controlled_shutdown_timeout_ms
        link = self.controller.link
        if timeout_ms == 0 or not self.started or link is None or not self._controller_ready.is_set():
            return
        started_ns = time.monotonic_ns()
        self._controlled_shutdown_done = asyncio.get_running_loop().create_future()
        link.send(ControlledShutdown(timeout_ms))
        try:
            outcome = await event_loop.within(asyncio.shield(self._controlled_shutdown_done), timeout_ms / 1000 + 1)
        except TimeoutError:
            outcome = "no answer from the controller process in time"
        log.info("controlled shutdown in %.2fs: %s", (time.monotonic_ns() - started_ns) / 1e9, outcome)


# Exits of a child that was asked to stop: 0 after its clean stop on SIGTERM; killed by SIGTERM if the signal came
# before its handler was installed (while it started). Every other exit is a death, restarted by the policy.
STOPPED_ON_PURPOSE = (0, -signal.SIGTERM)


def _admin_scheme(config: BrokerConfig) -> str:
    return "https" if config.admin_ssl_cert_file else "http"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000
