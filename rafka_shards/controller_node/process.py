"""The controller process: the node's member of the Raft quorum, the shards' controller channels, the admin API.

The supervisor spawns it (multiprocessing ``spawn``: a fresh interpreter) before any shard, restarts it when it dies,
and talks to it over a ``process_link``. It runs:

- the ``RaftController`` (owner of ``data_dir/controller``, the Raft transport on ``--controller-listen``);
- the ``ControllerServer``: one session per shard over the channel the supervisor hands it for that shard;
- the HTTP admin API and ``/metrics`` on the socket the supervisor bound (``--admin-listen``), so connections made
  while this process restarts wait in the backlog instead of being refused.

Start-up: open and replay the Raft log, wait until the image holds everything committed (``wait_caught_up``), remove
stray partition directories if no shard has started yet, serve the admin API, then tell the supervisor
(``ControllerReady``), which answers with a channel per shard. A shard whose session becomes ready is reported
(``ShardReady``). This process keeps no state of its own outside the Raft log: a restart replays it, and the
shards, which kept serving meanwhile with the image they had, catch up from the new process's hello.

Exit codes: 0 after SIGTERM or when the supervisor's link closes (the supervisor died), 1 on a fatal error (the Raft
log could not be written), 2 when it cannot start (the controller port is taken, the log does not open).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rafka_shards import event_loop
from rafka_shards.admin.app import admin_tls, start_admin, start_catching_up
from rafka_shards.admin.ports import AdminSecurity
from rafka_shards.config import BrokerConfig, ConfigError
from rafka_shards.controller_node import controlled_shutdown
from rafka_shards.controller_node.admin_ports import admin_ports
from rafka_shards.controller_node.channel_server import ControllerServer, ShardSession
from rafka_shards.controller_node.raft_controller import RaftController
from rafka_shards.ipc.audit_log import (
    AuditLog,
    RemoteAuditTopic,
    create_audit_topic,
    open_audit_log,
    sink,
    wall_clock_ms,
)
from rafka_shards.ipc.channel import Stats
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
)
from rafka_shards.security.client_security import inter_broker_security
from rafka_shards.storage.partition_dirs import remove_stray_partition_dirs

log = logging.getLogger(__name__)

STATS_TIMEOUT_S = 2.0
PROCESS_NAME = "controller"  # in its audit file's name (audit-controller.jsonl) and every line's "process"
EXIT_FATAL = 1
EXIT_STARTUP = 2


@dataclass
class ShardPlace:
    """One shard of the node as the controller process knows it: the supervisor's view plus the channel session."""

    index: int
    broker_id: int
    listen: str
    pid: int | None = None
    alive: bool = False
    restarts_total: int = 0
    last_exit: str | None = None
    session: ShardSession | None = None

    @property
    def ready(self) -> bool:
        return self.alive and self.session is not None and self.session.ready


class ControllerHost:
    """What the admin API and /metrics see of the node, from inside the controller process."""

    def __init__(self, config: BrokerConfig, metrics_dir: Path, restarts: int) -> None:
        self.config = config
        self.metrics_dir = metrics_dir
        self.shard_count = config.shard_count
        self.slots = [ShardPlace(i, config.broker_id + i, "") for i in range(self.shard_count)]
        self.controller: RaftController | None = None
        self.server: ControllerServer | None = None
        self.pid = os.getpid()
        self.restarts = restarts  # times the supervisor restarted this process (it says so at spawn)
        self.started = False  # every shard has started once (the supervisor says)
        self.stopping = False
        self.link: Link | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._restore_started = False

    @property
    def ready(self) -> bool:
        return self.started and not self.stopping and all(s.ready for s in self.slots)

    async def gather_stats(self, timeout_s: float = STATS_TIMEOUT_S) -> dict[int, Stats]:
        """The live state of every ready shard (log offsets and sizes, connections), by shard index."""
        sessions = [(s.index, s.session) for s in self.slots if s.ready and s.session is not None]
        answers = await asyncio.gather(*(session.stats(timeout_s) for _, session in sessions))
        return {index: st for (index, _), st in zip(sessions, answers, strict=True) if st is not None}

    def on_message(self, msg: LinkMessage, attached: socket.socket | None) -> None:
        if isinstance(msg, ShardChannel) and attached is not None:
            self._open_session(msg, attached)
        elif isinstance(msg, ShardState) and 0 <= msg.index < self.shard_count:
            place = self.slots[msg.index]
            if not msg.alive and self.controller is not None:
                # The supervisor saw the process exit (its sentinel): fence the broker now, so its partitions get
                # new leaders and its ISRs shrink at once instead of after broker_session_timeout_ms.
                why = f"exited ({msg.last_exit})" if msg.last_exit else "has no process yet (the node restarted)"
                self.controller.broker_died(msg.broker_id, why)
            place.broker_id, place.listen = msg.broker_id, msg.listen
            place.pid = msg.pid or None
            place.alive, place.restarts_total, place.last_exit = msg.alive, msg.restarts, msg.last_exit
        elif isinstance(msg, NodeState):
            self.started, self.stopping = msg.started, msg.stopping
            if self.started and not self.stopping and not self._restore_started and self.controller is not None:
                self._restore_started = True  # once per process: the marker is gone after a restore
                self._spawn(controlled_shutdown.restore(self.controller, self.config.data_dir), "restore")
        elif isinstance(msg, ControlledShutdown):
            self._spawn(self._controlled_shutdown(msg.timeout_ms), "controlled-shutdown")
        else:
            if attached is not None:
                attached.close()
            log.error("unexpected %s from the supervisor", msg)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _controlled_shutdown(self, timeout_ms: int) -> None:
        """The node stops: move its leadership away (``controlled_shutdown.drain``), then tell the supervisor."""
        outcome = "no controller yet"
        if self.controller is not None:
            outcome = await controlled_shutdown.drain(
                self.controller,
                self.config.data_dir,
                [s.broker_id for s in self.slots],
                self._applied_by_shards,
                timeout_ms / 1000,
            )
        log.info("controlled shutdown: %s", outcome)
        if self.link is not None:
            self.link.send(ControlledShutdownDone(outcome))

    def _applied_by_shards(self) -> int:
        """The lowest metadata offset the node's live shards applied (they refuse what they no longer lead then)."""
        offsets = [s.session.applied_offset for s in self.slots if s.alive and s.session is not None]
        return min(offsets, default=2**63 - 1)

    def _open_session(self, msg: ShardChannel, sock: socket.socket) -> None:
        if self.server is None or not 0 <= msg.index < self.shard_count:
            log.error("a channel for shard %d before the controller was ready", msg.index)
            sock.close()
            return
        place = self.slots[msg.index]
        if place.session is not None:
            place.session.close()  # an earlier process of that shard
        session = self.server.open_session(msg.index, sock)
        place.session = session
        loop = asyncio.get_running_loop()
        for task in (
            loop.create_task(self._run_session(session, msg), name=f"shard-{msg.index}-session"),
            loop.create_task(self._report_ready(session, msg), name=f"shard-{msg.index}-ready"),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_session(self, session: ShardSession, msg: ShardChannel) -> None:
        await session.run()
        if self.link is not None and not self.stopping:
            self.link.send(ChannelClosed(msg.index, msg.pid))

    async def _report_ready(self, session: ShardSession, msg: ShardChannel) -> None:
        await session.ready_event.wait()
        if self.link is not None:
            self.link.send(ShardReady(msg.index, msg.pid))


def run_controller(
    config: BrokerConfig,
    link: socket.socket,
    admin_listener: socket.socket | None,
    parent_pid: int,
    first_start: bool,
    restarts: int,
) -> None:
    """The spawn target: serve until SIGTERM, the supervisor's death or a fatal error; exits with the code."""
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s controller %(name)s: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us in order
    raft = config.controller_listen_endpoint() or "single node"
    event_loop.name_process(f"node {config.node_id} controller (admin {config.admin_endpoint or 'off'}, Raft {raft})")
    sys.exit(event_loop.run(_serve(config, link, admin_listener, parent_pid, first_start, restarts)))


async def _serve(
    config: BrokerConfig,
    link_sock: socket.socket,
    admin_listener: socket.socket | None,
    parent_pid: int,
    first_start: bool,
    restarts: int,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fatal: list[str] = []

    def on_fatal(message: str) -> None:
        log.critical("%s", message)
        fatal.append(message)
        stop.set()

    def supervisor_gone(reason: str) -> None:
        log.warning("stopping: the supervisor's link closed (%s)", reason)
        stop.set()

    event_loop.stop_on_sigterm(loop, stop.set)
    host = ControllerHost(config, config.metrics_dir, restarts)
    host.link = Link(link_sock, host.on_message, supervisor_gone)
    host.link.start()
    watch = loop.create_task(_parent_watch(parent_pid, stop))
    admin = None
    starting = None  # the admin port's answers until the node has caught up
    controller = None
    audit_log: AuditLog | None = None
    try:
        controller = await RaftController.open(config)
        controller.on_fatal = on_fatal
        try:
            await controller.start()
        except OSError as e:
            log.error("cannot listen on %s for the controller quorum: %s", config.controller_listen_endpoint(), e)
            return EXIT_STARTUP
        host.controller = controller
        try:
            security = AdminSecurity.from_config(config)
            tls = admin_tls(security)
        except ConfigError as e:
            log.error("cannot serve the admin API: %s", e)
            return EXIT_STARTUP
        if security.require_auth and not security.super_users:
            log.warning("admin API: authentication is required but super_users is empty: no change can be made")
        if admin_listener is not None:
            starting = await start_catching_up(admin_listener, tls)
        caught_up = loop.create_task(controller.wait_caught_up())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait((caught_up, stopped), return_when=asyncio.FIRST_COMPLETED)
        for t in (caught_up, stopped):
            t.cancel()
        await asyncio.gather(caught_up, stopped, return_exceptions=True)
        if stop.is_set():
            return EXIT_FATAL if fatal else 0
        if first_start:
            image = controller.image
            local = {b for b, reg in image.brokers.items() if reg.node_id == config.node_id}
            local.update(range(config.broker_id, config.broker_id + config.shard_count))
            remove_stray_partition_dirs(config.data_dir / "kafka", image, local)
        server = host.server = ControllerServer(controller, config.metadata_propagation_timeout_ms / 1000)
        raft = controller

        def audit_topic() -> RemoteAuditTopic:
            create = lambda: create_audit_topic(server.propose_topic, lambda: raft.image)  # noqa: E731
            security = inter_broker_security(config)  # the brokers' inter-broker listener, as the probes
            return RemoteAuditTopic(lambda: raft.image, create, PROCESS_NAME.encode(), wall_clock_ms, security=security)

        # This process's audit log: the admin API's requests and the active controller's own changes.
        audit_log = open_audit_log(config, PROCESS_NAME, wall_clock_ms, audit_topic)
        if audit_log is not None:
            audit_log.start()
            controller.audit_sink = audit_log
        if starting is not None:
            await starting.cleanup()
            starting = None
        if admin_listener is not None:
            ports = admin_ports(config, host, controller, host.server, host.metrics_dir, security)
            admin = await start_admin(ports, admin_listener, tls, sink(audit_log))
            log.info(
                "admin API and /metrics on %s://%s%s",
                security.scheme,
                config.admin_endpoint,
                " (authentication required)" if security.require_auth else "",
            )
        event_loop.settle_heap()
        event_loop.quick_thread_handoff()
        host.link.send(ControllerReady(os.getpid()))
        await stop.wait()
        return EXIT_FATAL if fatal else 0
    finally:
        host.stopping = True
        watch.cancel()
        for runner in (starting, admin):
            if runner is not None:
                await runner.cleanup()
        if audit_log is not None:
            await audit_log.close()  # after the admin API's last request, before the controller stops
        for place in host.slots:
            if place.session is not None:
                place.session.close()
        if controller is not None:
            await controller.close()
        host.link.close()


async def _parent_watch(parent_pid: int, stop: asyncio.Event) -> None:
    await event_loop.parent_gone(parent_pid)
    log.warning("stopping: the supervisor (pid %d) is gone", parent_pid)
    stop.set()
