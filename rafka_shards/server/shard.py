"""A shard: one process, one event loop, one Kafka listener, one broker id, the partitions it leads.

Runs in the serving process (with ``--shards`` a supervisor will run several). Owns the listener socket, the client
connections, the group-commit flusher task, the retention task and the partition manager. Start-up order: open the
metadata log (replay), register this broker, open the logs it leads (recovery), then listen. Shutdown order: stop
accepting, stop reading, let in-flight requests finish (bounded by shutdown_timeout_ms), a last group commit, close
the logs (flush + clean-shutdown marker), close the metadata log.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import time
from collections.abc import Mapping

from controller.local import LocalController
from rafka_shards.broker.flusher import GroupCommitFlusher
from rafka_shards.broker.manager import PartitionManager
from rafka_shards.config import BrokerConfig, Durability
from rafka_shards.kafka.api import ApiHandler
from rafka_shards.kafka.registry import HANDLERS
from rafka_shards.server.connection import KafkaConnection

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The shard cannot start (port in use, data dir unusable); the message says what to change."""


class Probe:
    """Counters of this shard, kept apart from the logic (Redpanda's probe pattern); exported by the admin API."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.protocol_errors = 0
        self.fsync_rounds = 0
        self.fsync_seconds_total = 0.0

    def request(self, api: str) -> None:
        self.requests[api] += 1

    def protocol_error(self) -> None:
        self.protocol_errors += 1

    def fsync(self, seconds: float) -> None:
        self.fsync_rounds += 1
        self.fsync_seconds_total += seconds


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Shard:
    def __init__(self, config: BrokerConfig, apis: Mapping[int, ApiHandler] = HANDLERS) -> None:
        self.config = config
        self.apis = apis
        self.probe = Probe()
        self.connections: set[KafkaConnection] = set()
        self.ready = False
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._controller: LocalController | None = None
        self._manager: PartitionManager | None = None
        self._flusher: GroupCommitFlusher | None = None
        self._fatal: BaseException | None = None
        self._stopped = asyncio.Event()

    @property
    def manager(self) -> PartitionManager:
        assert self._manager is not None, "shard not started"
        return self._manager

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._controller = await loop.run_in_executor(None, LocalController.open, config.data_dir / "controller")
        interval = config.flush_interval_ms if config.durability is Durability.FLUSH else None
        self._flusher = GroupCommitFlusher(
            config.fsync_threads, interval_ms=interval, observe_fsync_seconds=self.probe.fsync
        )
        self._manager = PartitionManager(config, self._controller, self._flusher, wall_clock_ms)
        self._manager.reconcile(self._controller.image)
        await self._manager.register()
        self._spawn(self._flusher.run(), "flusher")
        self._spawn(self._retention_loop(), "retention")
        ep = config.listen_endpoint
        try:
            self._server = await loop.create_server(
                lambda: KafkaConnection(self), ep.host, ep.port, reuse_address=True, backlog=1024
            )
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartupError(f"cannot listen on {ep}: port {ep.port} is already in use") from None
            raise StartupError(f"cannot listen on {ep}: {e.strerror}") from None
        self.ready = True
        log.info(
            "broker %d ready: Kafka listener on %s (advertised %s), data in %s, durability=%s",
            config.broker_id,
            ep,
            config.advertise_endpoint,
            config.data_dir,
            config.durability.value,
        )

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

    async def _retention_loop(self) -> None:
        interval = self.config.log_retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            deleted = self.manager.apply_retention()
            if deleted:
                log.info("retention deleted %d segment(s)", deleted)

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
        for conn in list(self.connections):
            conn.stop_reading()
        in_flight = [t for c in self.connections for t in c.pending_tasks()]
        if in_flight:
            await asyncio.wait(in_flight, timeout=max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(0)  # let the done-callbacks write those responses
        for conn in list(self.connections):
            conn.close()
        flusher_task = None
        for task in self._tasks:
            if task.get_name() == "flusher":
                flusher_task = task
            else:
                task.cancel()
        if self._flusher is not None and flusher_task is not None and not flusher_task.done():
            self._flusher.stop()
            try:
                await asyncio.wait_for(asyncio.shield(flusher_task), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.error("the last group commit did not finish before the shutdown deadline")
        if self._manager is not None:
            await self._manager.drain_proposals()
            self._manager.close()  # flush_now + clean-shutdown marker per partition
        if self._controller is not None:
            self._controller.close()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("broker %d stopped", self.config.broker_id)
