"""A shard: one process, one event loop, one Kafka listener, one broker id, the partitions it leads.

Runs in a shard process spawned by the supervisor (``rafka_shards.supervisor``), which made the listening socket and
the controller channel and passes both. Owns the client connections, the group-commit flusher task, the retention
task and the partition manager. Start-up order: catch up with the controller's metadata (opening and
recovering the logs this shard leads as the records arrive), register this broker, start accepting on the listener,
tell the supervisor it is ready. Shutdown order: stop accepting, stop reading, let in-flight requests finish
(bounded by shutdown_timeout_ms), a last group commit, close the logs (flush + clean-shutdown marker), close the
channel. The shard also stops, gracefully, when its supervisor goes away (the channel closes or its parent changes).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from controller.image import MetadataImage
from rafka_shards import event_loop
from rafka_shards.config import SSL_PREFIX, BrokerConfig, ConfigError, Durability, Listener
from rafka_shards.ipc.audit_log import AuditLog, open_audit_log
from rafka_shards.ipc.channel import HEARTBEAT_OK, CleanerTotals, PartitionStats, Stats
from rafka_shards.ipc.process_link import Link, LinkMessage, ShardChannel
from rafka_shards.model import TopicPartition
from rafka_shards.protocol import kio_codec
from rafka_shards.protocol.framing import RequestHeader
from rafka_shards.security.audit import AuditEvent, AuthorizationDenial
from rafka_shards.security.sasl_session import SaslSession, SaslSettings
from rafka_shards.security.scram_users import LocalUser, SaslCredentials, local_user, sasl_credentials, with_local_user
from rafka_shards.security.tls import (
    TLS_HANDSHAKE_TIMEOUT_S,
    PrincipalMapper,
    Reloaded,
    ReloadFailed,
    ReloadingContext,
    parse_principal_rules,
    parse_tls_settings,
)
from rafka_shards.shard.audit_topic import ShardAuditTopic
from rafka_shards.shard.authz import Denial, ShardAuthorization
from rafka_shards.shard.cleaner import LogCleaner
from rafka_shards.shard.connection import ConnectionLimits, KafkaConnection
from rafka_shards.shard.controller_link import ControllerLink, ControllerLost
from rafka_shards.shard.flusher import GroupCommitFlusher
from rafka_shards.shard.group_coordinator import GroupCoordinator
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext
from rafka_shards.shard.kafka.registry import HANDLERS
from rafka_shards.shard.limits import HEARTBEATS_IN_FLIGHT_MAX, LISTEN_BACKLOG, PROBE_FLUSH_INTERVAL_S
from rafka_shards.shard.manager import PartitionManager
from rafka_shards.shard.partition import Partition
from rafka_shards.shard.probe import Probe
from rafka_shards.shard.quotas import ShardQuotas
from rafka_shards.shard.tls_audit import audit_failed_handshakes
from rafka_shards.storage.deleter import GradualDeleter

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The shard cannot start (data dir unusable, controller gone); the message says what to change."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Shard:
    def __init__(
        self,
        config: BrokerConfig,
        listener: socket.socket,
        supervisor_link: socket.socket,
        parent_pid: int,
        apis: Mapping[int, ApiHandler] = HANDLERS,
        extra_listeners: Sequence[socket.socket] = (),
    ) -> None:
        self.config = config
        self._extra_listeners = extra_listeners  # the sockets of config.listener_specs()[1:], in that order
        self._extra_servers: list[asyncio.Server] = []
        self._tls: list[tuple[str, ReloadingContext]] = []
        self._inter_broker_user: LocalUser | None = None  # SASL listeners: the inter-broker login, from the config
        self.apis = apis
        self.probe = Probe()
        # ACL decisions for this shard's requests; each denial is counted and audited (``_denied``).
        self.authorization = ShardAuthorization(config, self._denied)
        self.connections: set[KafkaConnection] = set()
        self.quotas: ShardQuotas | None = None  # client quotas, over the manager's image (made in start)
        self.connection_limits = ConnectionLimits(
            request_bytes_max=config.socket_request_max_bytes,
            inflight_requests_max=config.inflight_requests_per_connection_max,
            connections_max=config.connections_max,
        )
        self.ready = False
        self._listener = listener
        self._supervisor_link = Link(supervisor_link, self._from_supervisor, self._supervisor_gone)
        self._parent_pid = parent_pid
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._link: ControllerLink | None = None
        self._manager: PartitionManager | None = None
        self._groups: GroupCoordinator | None = None
        self._flusher: GroupCommitFlusher | None = None
        self.cleaner: LogCleaner | None = None
        self.deleter = GradualDeleter(config.log_delete_max_bytes_per_second)
        self._delete_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="delete")
        self._fatal: BaseException | None = None
        self._stopped = asyncio.Event()
        self.audit_log: AuditLog | None = None  # with audit_enabled: this shard's (rafka_shards.ipc.audit_log)

    @property
    def manager(self) -> PartitionManager:
        assert self._manager is not None, "shard not started"
        return self._manager

    async def start(self) -> None:
        config = self.config
        interval = config.flush_interval_ms if config.durability is Durability.FLUSH else None
        self._flusher = GroupCommitFlusher(
            config.fsync_threads, interval_ms=interval, observe_fsync_seconds=self.probe.fsync
        )
        manager = PartitionManager(
            config, MetadataImage(offset=-1, cluster_id=""), self._flusher, wall_clock_ms, self.probe, monotonic_ms
        )
        self._manager = manager
        self.quotas = ShardQuotas(config, lambda: manager.image, monotonic_ms, self.probe)
        process = f"broker-{config.broker_id}"
        self.audit_log = open_audit_log(
            config,
            process,
            wall_clock_ms,
            lambda: ShardAuditTopic(manager, process.encode(), wall_clock_ms, lambda: self.ready),
        )
        if self.audit_log is not None:
            manager.audit_sink = self.audit_log
            self.audit_log.start()
        groups = self._groups = GroupCoordinator(manager, config, wall_clock_ms, self.probe)

        def reconcile(image: MetadataImage) -> None:
            manager.reconcile(image)
            groups.reconcile(image)

        self._link = ControllerLink(reconcile, self._stats, self._controller_lost)
        self._supervisor_link.start()
        try:
            await self._link.connect()
        except (ControllerLost, OSError) as e:
            raise StartupError(f"no controller channel: {e}") from None
        manager.attach(self._link)
        await manager.register()
        self._spawn(self._flusher.run(), "flusher")
        self._spawn(self._retention_loop(), "retention")
        self.cleaner = LogCleaner(config, lambda: manager.partitions, wall_clock_ms, self.free_files)
        self._spawn(self.cleaner.run(), "cleaner")
        self._spawn(self._probe_loop(), "probe")
        self._spawn(self._parent_watch(), "parent-watch")
        self._spawn(self._heartbeat_loop(), "heartbeat")
        self._spawn(manager.replication.isr_loop(), "isr")
        self._spawn(groups.run(), "groups")
        inter, *extras = config.listener_specs()
        self._server = await self._serve_listener(inter, self._listener)
        for spec, sock in zip(extras, self._extra_listeners, strict=True):
            self._extra_servers.append(await self._serve_listener(spec, sock))
        if self._tls:
            self._spawn(self._tls_reload_loop(), "tls-reload")
        event_loop.settle_heap()
        event_loop.quick_thread_handoff()
        self.ready = True
        self._link.ready(config.broker_id, self.bound_port)
        log.info(
            "broker %d ready: Kafka listener on %s (advertised %s), data in %s, durability=%s",
            config.broker_id,
            config.listen_endpoint,
            config.advertise_endpoint,
            config.data_dir,
            config.durability.value,
        )

    async def _serve_listener(self, spec: Listener, sock: socket.socket) -> asyncio.Server:
        """Serve one more named listener on ``sock``: plain or TLS (the ``ssl_*`` settings), with or without SASL (a
        ``SaslSession`` per connection; on SASL_SSL the principal comes from SASL, not from a client certificate)."""
        loop = asyncio.get_running_loop()
        sasl: SaslSettings | None = None
        if spec.protocol.sasl:
            sasl = SaslSettings(
                self.config.sasl_mechanisms(),
                self.config.connections_max_reauth_ms,
                self.config.connection_failed_authentication_delay_ms,
            )
            config = self.config
            # The inter-broker login exists only where brokers use it: a SASL inter-broker listener.
            if self._inter_broker_user is None and config.listener_specs()[0].protocol.sasl:
                # PBKDF2 twice, once per process: in a thread, the loop serves the controller channel meanwhile.
                self._inter_broker_user = await asyncio.to_thread(
                    local_user, config.inter_broker_sasl_username, config.inter_broker_sasl_password
                )
        local = self._inter_broker_user

        def credentials() -> SaslCredentials:
            # The current image: new users and passwords count at once; the inter-broker user is this process's
            # own (see docs/architecture.md, "Inter-broker connections"), so brokers log in before any metadata.
            return with_local_user(sasl_credentials(self.manager.image), local)

        def connection(rules: PrincipalMapper | None) -> KafkaConnection:
            session = None if sasl is None else SaslSession(sasl, credentials)
            return KafkaConnection(self, spec.name, None if sasl is not None else rules, session)

        if not spec.protocol.tls:
            return await loop.create_server(lambda: connection(None), sock=sock, backlog=LISTEN_BACKLOG)
        try:
            settings = parse_tls_settings(self.config.ssl_settings(), prefix=SSL_PREFIX)
        except ConfigError as e:
            raise StartupError(f"listener {spec.name}: {e}") from None
        tls = ReloadingContext(settings, monotonic_ms())
        if self.audit_log is not None:
            audit_failed_handshakes(tls.context, spec.name, self.audit)
        rules = parse_principal_rules(settings.principal_mapping_rules)
        self._tls.append((spec.name, tls))
        return await loop.create_server(
            lambda: connection(rules),
            sock=sock,
            backlog=LISTEN_BACKLOG,
            ssl=tls.context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
        )

    async def _tls_reload_loop(self) -> None:
        """New handshakes of SSL listeners use the certificate files as they are now (rotated without a restart)."""
        while True:
            await asyncio.sleep(min(tls.next_check_ms for _, tls in self._tls) / 1000 - monotonic_ms() / 1000)
            now = monotonic_ms()
            for name, tls in self._tls:
                outcome = tls.maybe_reload(now)
                if isinstance(outcome, Reloaded):
                    log.info("listener %s: reloaded %s (reload %d)", name, ", ".join(outcome.changed), outcome.reloads)
                elif isinstance(outcome, ReloadFailed):
                    log.error("listener %s: keeping the certificate in use: %s", name, outcome.error)

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _spawn(self, coro: collections.abc.Coroutine[None, None, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.fatal(exc)

    def fatal(self, exc: BaseException) -> None:
        """An invariant broke or the disk failed: stop serving now; the process exits non-zero."""
        if self._fatal is None:
            log.critical("shard %d stopping on a fatal error", self.config.broker_id, exc_info=exc)
            self._fatal = exc
        self._stopped.set()

    async def wait_stopped(self) -> BaseException | None:
        await self._stopped.wait()
        return self._fatal

    def request_stop(self) -> None:
        self._stopped.set()

    def _stats(self, request_id: int) -> Stats:
        self.probe.flush()  # /metrics reads the counters right after this answer
        cleaner = self.cleaner
        now = wall_clock_ms()
        partitions = tuple(
            self._partition_stats(tp, p, now)
            for tp, p in self.manager.partitions.items()
            if p.is_leader  # what the admin API shows of a partition is its leader's
        )
        totals = CleanerTotals() if cleaner is None else cleaner.totals
        return Stats(request_id, len(self.connections), partitions, totals)

    def _partition_stats(self, tp: TopicPartition, p: Partition, now_ms: int) -> PartitionStats:
        log_ = p.log
        base = (tp.topic, tp.partition, log_.log_start_offset, log_.high_watermark, log_.log_end_offset)
        if not log_.config.compact:
            return PartitionStats(*base, log_.size_bytes())
        ratio, _, _ = log_.dirty_ratio(now_ms)
        error = "" if self.cleaner is None else self.cleaner.failed.get(tp, "")
        cleaned_ms = log_.cleaner.last_cleaned_ms
        return PartitionStats(*base, log_.size_bytes(), ratio, log_.first_dirty_offset, cleaned_ms, error)

    def _from_supervisor(self, msg: LinkMessage, attached: socket.socket | None) -> None:
        if isinstance(msg, ShardChannel) and attached is not None and self._link is not None:
            if self._link.channels:
                log.info("shard %d: a new controller channel (the controller process restarted)", msg.index)
            self._spawn(self._link.attach(attached), "attach-channel")
            return
        if attached is not None:
            attached.close()
        log.error("shard %d: unexpected %s from the supervisor", self.config.broker_id, type(msg).__name__)

    def _supervisor_gone(self, reason: str) -> None:
        log.warning("shard %d stopping: the supervisor's link closed (%s)", self.config.broker_id, reason)
        if self._link is not None:
            self._link.abort()
        self.request_stop()

    def _controller_lost(self, exc: BaseException) -> None:
        if isinstance(exc, AssertionError | OSError | RuntimeError):
            self.fatal(exc)  # applying a record failed: an invariant or the disk broke
            return
        log.warning("shard %d stopping: %s", self.config.broker_id, exc)
        self.request_stop()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_FLUSH_INTERVAL_S)
            self.probe.flush()
            if self.quotas is not None:
                self.quotas.expire()  # quota sensors of clients gone quiet

    async def _parent_watch(self) -> None:
        await event_loop.parent_gone(self._parent_pid)
        log.warning("shard %d stopping: its supervisor (pid %d) is gone", self.config.broker_id, self._parent_pid)
        self.request_stop()

    async def _heartbeat_loop(self) -> None:
        """Renew the lease every heartbeat interval; each heartbeat runs on its own, so one the controller answers
        late (a leader election) does not hold back the next."""
        interval_s = self.config.broker_heartbeat_interval_ms / 1000
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(pending) < HEARTBEATS_IN_FLIGHT_MAX:
                    task = asyncio.get_running_loop().create_task(self._heartbeat_once())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(interval_s)
        finally:
            for task in pending:
                task.cancel()

    async def _heartbeat_once(self) -> None:
        assert self._link is not None
        manager = self.manager
        sent_ms = monotonic_ms()
        was_valid = manager.lease_valid()
        try:
            ack = await event_loop.within(
                self._link.heartbeat(manager.broker_id, manager.incarnation),
                self.config.broker_session_timeout_ms / 1000,
            )
        except (TimeoutError, ControllerLost):
            return
        if ack.status == HEARTBEAT_OK:
            manager.lease.renewed(sent_ms)
            if not was_valid:
                log.info("broker %d: lease with the controller renewed, serving again", manager.broker_id)
        elif was_valid and not manager.lease_valid():
            log.warning("broker %d: lease lapsed (%s: %s)", manager.broker_id, ack.status, ack.message)

    async def _retention_loop(self) -> None:
        interval = self.config.log_retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            aside = self.manager.apply_retention()
            if aside:
                log.info("retention removed %d segment file(s)", len(aside))
                await self.free_files(aside)

    async def free_files(self, paths: Sequence[Path]) -> None:
        """Free files no longer part of any log (renamed ``*.deleted``), paced, one deletion at a time, off the
        loop (``GradualDeleter``: a burst of freed blocks stalls every fsync behind it)."""
        await asyncio.get_running_loop().run_in_executor(self._delete_executor, self.deleter.delete, paths)

    def request_context(self, header: RequestHeader, conn: KafkaConnection) -> RequestContext:
        assert self._groups is not None, "shard not started"
        manager = self.manager
        api = kio_codec.api_name(header.api_key) or str(header.api_key)
        access = self.authorization.access(manager.image.acls, conn.principal, conn.acl_host, conn.listener, api)
        return RequestContext(
            header,
            manager,
            self.config,
            self.apis,
            self._groups,
            conn.host,
            conn.listener,
            conn.principal,
            access,
            quotas=self.quotas,
        )

    def _denied(self, denial: Denial) -> None:
        self.probe.authorization_denied(denial.api, denial.resource_type.name)
        log.debug(
            "denied: %s from %s on %s: %s %s %s:%s",
            denial.principal,
            denial.host,
            denial.listener,
            denial.api,
            denial.operation.name,
            denial.resource_type.name,
            denial.resource_name,
        )
        if self.audit_log is not None:
            self.audit_log.audit(
                AuthorizationDenial(
                    denial.principal,
                    denial.host,  # the client's address, without a port
                    denial.listener,
                    denial.api,
                    denial.operation.name,
                    denial.resource_type.name,
                    denial.resource_name,
                )
            )

    def audit(self, event: AuditEvent) -> None:
        """Record an audit event (``rafka_shards.security.audit``) in this shard's audit log; nothing when it is
        off. The same sink as ``PartitionManager.audit``, which request handlers reach through their context."""
        self.manager.audit(event)

    def connection_opened(self, conn: KafkaConnection) -> bool:
        if len(self.connections) >= self.config.connections_max or not self.ready:
            return False
        self.connections.add(conn)
        return True

    def connection_closed(self, conn: KafkaConnection) -> None:
        self.connections.discard(conn)

    async def stop(self) -> None:
        self.ready = False
        deadline = time.monotonic() + self.config.shutdown_timeout_ms / 1000
        if self._server is not None:
            self._server.close()
        for server in self._extra_servers:
            server.close()
        for conn in list(self.connections):
            conn.stop_reading()
        if self._groups is not None:
            self._groups.close()  # joins and syncs waiting for a rebalance are answered NOT_COORDINATOR now
        in_flight = [t for c in self.connections for t in c.pending_tasks()]
        if in_flight:
            await asyncio.wait(in_flight, timeout=max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(0)  # let the done-callbacks write those responses
        for conn in list(self.connections):
            conn.close()
        if self.audit_log is not None:
            await self.audit_log.close()  # while the logs still take its last batch
        if self._manager is not None:
            await self._manager.replication.close()  # no follower appends after this
        flusher_task = None
        for task in self._tasks:
            if task.get_name() == "flusher":
                flusher_task = task
            else:
                task.cancel()
        if self._flusher is not None and flusher_task is not None and not flusher_task.done():
            self._flusher.stop()
            try:
                await event_loop.within(asyncio.shield(flusher_task), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.error("the last group commit did not finish before the shutdown deadline")
        if self.cleaner is not None:
            self.cleaner.close()  # a pass in flight is dropped: its cleaned files go when the log next opens
        self.deleter.stop()  # files not freed yet go when their log next opens
        self._delete_executor.shutdown(wait=True)
        if self._manager is not None:
            self._manager.close()  # flush_now + clean-shutdown marker per partition
        self.probe.flush()
        if self._link is not None:
            await self._link.close()
        self._supervisor_link.close()
        if self._server is not None:
            await self._server.wait_closed()
        for server in self._extra_servers:
            await server.wait_closed()
        log.info("broker %d stopped", self.config.broker_id)
