"""The node supervisor: runs the controller and one shard process per partition group, and keeps them running.

Runs in the process ``python -m rafka_shards serve`` starts. Owns the data directory's lock, the metadata controller
(the only writer of ``data_dir/controller``), every shard's listening socket, the controller channels, the HTTP admin
endpoint and the metrics directory. Shards are spawned with multiprocessing's ``spawn`` method (a fresh interpreter:
no fork after threads or event loops exist); each gets its listening socket and one end of a socket pair for the
controller channel. The parent keeps its copy of each listening socket, so while a shard restarts its clients'
connections wait in the accept backlog instead of being refused, and a port can never be taken by another program.

Supervision: a shard that dies (SIGKILL, crash, OOM) is restarted after a delay that doubles from
``shard_restart_backoff_ms`` up to ``shard_restart_backoff_max_ms`` (reset once a shard has stayed up for the cap);
more than ``shard_restarts_max`` deaths of one shard within ``shard_restart_window_ms`` make the node give up
(exit 1), as a crash loop will not heal by itself. SIGTERM/SIGINT: SIGTERM to every shard (each stops accepting,
finishes in-flight requests, flushes, fsyncs and closes its segments), wait up to ``shutdown_timeout_ms``, SIGKILL
stragglers. Shards watch the supervisor in turn (their channel closes when it dies), so none outlives it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import fcntl
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field

from controller.channel import Stats
from rafka_shards.broker.manager import remove_stray_partition_dirs
from rafka_shards.config import BrokerConfig
from rafka_shards.node.controller_server import ControllerServer, ShardSession
from rafka_shards.node.raft_controller import RaftController
from rafka_shards.server.shard_process import run_shard

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
STATS_TIMEOUT_S = 2.0
EXIT_STARTUP = 2


class StartupError(Exception):
    """The node cannot start; the message says what to change. ``exit_code`` is what ``serve`` returns."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ShardSlot:
    """One shard's place on the node: fixed broker id and socket, a process that comes and goes."""

    index: int
    config: BrokerConfig
    listener: socket.socket
    process: multiprocessing.process.BaseProcess | None = None
    session: ShardSession | None = None
    session_task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    restarts_total: int = 0
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    consecutive_failures: int = 0
    last_exit_code: int | None = None

    @property
    def ready(self) -> bool:
        return self.session is not None and self.session.ready

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.shard_count = config.shard_count
        self.slots: list[ShardSlot] = []
        self.controller: RaftController | None = None
        self.server: ControllerServer | None = None
        self.metrics_dir = config.data_dir / "metrics"
        self.started = False
        self._context = multiprocessing.get_context("spawn")
        self._lock_fd: int | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self._monitors: list[asyncio.Task[None]] = []

    # ---- start-up ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        self._lock_data_dir()
        self.controller = await RaftController.open(config)
        self.controller.on_fatal = self.fatal
        await self.controller.start()
        self.server = ControllerServer(self.controller, config.metadata_propagation_timeout_ms / 1000)
        # The image must hold everything committed before this start, or a topic created meanwhile would look stray.
        caught_up = asyncio.ensure_future(self.controller.wait_caught_up())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((caught_up, stop), return_when=asyncio.FIRST_COMPLETED)
        for f in (caught_up, stop):
            f.cancel()
        await asyncio.gather(caught_up, stop, return_exceptions=True)
        if self._stop.is_set():
            raise StartupError("stopped while waiting for the controller quorum", exit_code=0)
        remove_stray_partition_dirs(config.data_dir / "kafka", self.controller.image)
        self._bind_listeners()
        # Every shard process writes its metric values under this directory (prometheus-client multiprocess mode);
        # values of an earlier run of the node are not this run's.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)

    async def start_shards(self) -> None:
        """Spawn every shard and wait until all are listening; a shard that exits meanwhile fails the start."""
        for slot in self.slots:
            self._spawn(slot)
        for slot in self.slots:
            assert slot.session is not None and slot.process is not None
            ready = asyncio.ensure_future(slot.session.ready_event.wait())
            exited = asyncio.ensure_future(self._wait_exit(slot.process))
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait((ready, exited, stop), return_when=asyncio.FIRST_COMPLETED)
            for f in (ready, exited, stop):
                f.cancel()
            # Let the cancelled exit-waiter run its finally (remove_reader on the sentinel) now: later, it would
            # remove the reader the shard's monitor adds for the same sentinel.
            await asyncio.gather(ready, exited, stop, return_exceptions=True)
            if self._stop.is_set():
                raise StartupError("stopped during start-up", exit_code=0)
            if not slot.ready:
                code = slot.process.exitcode
                raise StartupError(
                    f"shard {slot.index} (broker {slot.config.broker_id}) failed to start: {describe_exit(code)}",
                    exit_code=EXIT_STARTUP if code == EXIT_STARTUP else 1,
                )
        self.started = True
        self._monitors = [asyncio.get_running_loop().create_task(self._supervise(slot)) for slot in self.slots]
        log.info(
            "node ready: %d shard(s), brokers %d..%d on %s",
            self.shard_count,
            self.slots[0].config.broker_id,
            self.slots[-1].config.broker_id,
            ", ".join(str(s.config.listen_endpoint) for s in self.slots),
        )

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
        for i in range(self.shard_count):
            port = ep.port + i if ep.port else 0
            sock = _listen(ep.host, port)
            bound = sock.getsockname()[1]
            shard_config = dataclasses.replace(
                config,
                broker_id=config.broker_id + i,
                listen=_host_port(ep.host, bound),
                advertise=_host_port(advertise.host, advertise.port + i) if advertise is not None else "",
                rack=rack,
                shards="1",
            )
            self.slots.append(ShardSlot(i, shard_config, sock))

    def _spawn(self, slot: ShardSlot) -> None:
        assert self.server is not None
        parent_end, child_end = socket.socketpair()
        process = self._context.Process(
            target=run_shard,
            args=(slot.config, slot.index, slot.listener, child_end, os.getpid()),
            name=f"rafka-shard-{slot.index}",
        )
        process.start()
        child_end.close()
        slot.process = process
        slot.started_at = time.monotonic()
        slot.session = self.server.open_session(slot.index, parent_end)
        slot.session_task = asyncio.get_running_loop().create_task(slot.session.run())
        log.info("shard %d (broker %d) started as pid %d", slot.index, slot.config.broker_id, process.pid)

    # ---- supervision -------------------------------------------------------------------------------------------

    async def _wait_exit(self, process: multiprocessing.process.BaseProcess) -> int | None:
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

    async def _supervise(self, slot: ShardSlot) -> None:
        config = self.config
        window_s = config.shard_restart_window_ms / 1000
        backoff_max_s = config.shard_restart_backoff_max_ms / 1000
        while True:
            assert slot.process is not None
            code = await self._wait_exit(slot.process)
            slot.last_exit_code = code
            await self._end_session(slot)
            if self._stopping:
                return
            now = time.monotonic()
            log.error("shard %d (pid %d) died: %s", slot.index, slot.process.pid, describe_exit(code))
            slot.deaths.append(now)
            while slot.deaths and slot.deaths[0] < now - window_s:
                slot.deaths.popleft()
            if len(slot.deaths) > config.shard_restarts_max:
                self.fatal(
                    f"shard {slot.index} died {len(slot.deaths)} times within {window_s:.0f}s "
                    f"(shard_restarts_max {config.shard_restarts_max}); giving up"
                )
                return
            if now - slot.started_at >= max(backoff_max_s, 1.0):
                slot.consecutive_failures = 0  # it ran fine for a while: this death is not part of a loop
            slot.consecutive_failures += 1
            delay = min(backoff_max_s, config.shard_restart_backoff_ms / 1000 * 2 ** (slot.consecutive_failures - 1))
            log.warning("restarting shard %d in %.2fs", slot.index, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stopping:
                return
            slot.restarts_total += 1
            self._spawn(slot)

    async def _end_session(self, slot: ShardSlot) -> None:
        if slot.session is not None:
            slot.session.close()
        if slot.session_task is not None:
            await asyncio.gather(slot.session_task, return_exceptions=True)
            slot.session_task = None

    async def gather_stats(self, timeout_s: float = STATS_TIMEOUT_S) -> dict[int, Stats]:
        """The live state of every ready shard (log offsets and sizes, connections), by shard index."""
        slots = [s for s in self.slots if s.session is not None and s.ready]
        answers = await asyncio.gather(*(s.session.stats(timeout_s) for s in slots if s.session is not None))
        return {slot.index: stats for slot, stats in zip(slots, answers, strict=True) if stats is not None}

    @property
    def ready(self) -> bool:
        return self.started and not self._stopping and all(s.ready for s in self.slots)

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
        """Stop every shard gracefully within the deadline, SIGKILL the rest; True if all stopped cleanly."""
        self._stopping = True
        self._stop.set()
        for task in self._monitors:
            task.cancel()
        await asyncio.gather(*self._monitors, return_exceptions=True)
        live = [s for s in self.slots if s.process is not None and s.process.exitcode is None]
        for slot in live:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)
        clean = True
        waits = {
            asyncio.ensure_future(self._wait_exit(slot.process)): slot for slot in live if slot.process is not None
        }
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.config.shutdown_timeout_ms / 1000)
            for fut in pending:
                slot = waits[fut]
                assert slot.process is not None and slot.process.pid is not None
                log.error("shard %d did not stop within shutdown_timeout_ms; killing it", slot.index)
                clean = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending)
        for slot in self.slots:
            if slot in live and slot.process is not None and slot.process.exitcode != 0:
                log.error("shard %d stopped with %s", slot.index, describe_exit(slot.process.exitcode))
                clean = False
            await self._end_session(slot)
            slot.listener.close()
        if self.controller is not None:
            await self.controller.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return clean


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {_host_port(host, port)}: {e.strerror}") from None
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
                f"cannot listen on {_host_port(host, port)}: port {port} is already in use", EXIT_STARTUP
            ) from None
        raise StartupError(f"cannot listen on {_host_port(host, port)}: {e.strerror}") from None
    return sock
