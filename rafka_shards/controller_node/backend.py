"""The controller's backend: the Ready loop and the tick loop around the sans-IO ``controller.raft.node.RaftNode``.

Runs in the controller process on its event loop. It is the only place that touches the Raft log on disk
(``controller.raft.wal``), and it does so in this order for every Ready: persist (fsync when the Ready must be
synced, in an executor thread), then send the messages, then apply the committed entries to the image. So a vote, a
term and every entry a leader counts are durable before any peer hears of them, and nothing is applied or
acknowledged that is not durable on a quorum. It resolves what the frontend waits for (``pending``), compacts the
log into a snapshot every ``controller_snapshot_entries`` applied entries, and wakes every waiter (``changes``)
after each Ready and whenever the node's role, leader or term changed.

The tick loop ticks the node every half heartbeat with the one clock and hands the same ``now_ms`` to ``on_tick``
(the leader duties). Both loops run until ``close``; one that fails calls ``on_fatal``, since a controller that
neither persists nor applies must stop the node rather than serve stale metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from controller.commands import NoOp, decode_command
from controller.image import decode_image, encode_image
from controller.raft import messages as raft_messages
from controller.raft.node import RaftNode, Ready, Role
from controller.raft.types import Entry, EntryKind, NodeId, Term
from controller.raft.wal import RaftStorage
from controller.state_machine import apply
from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.clock import Clock
from rafka_shards.controller_node.pending import Pending
from rafka_shards.controller_node.probe import ControllerProbe
from rafka_shards.controller_node.raft_transport import KIND_RAFT, PeerTransport

log = logging.getLogger(__name__)


class Changes:
    """Wakes everyone waiting for the controller's state to move (an entry applied, a new leader or term)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Until the next ``notify`` or ``timeout_s``, whichever comes first. Check the condition waited for before
        calling (nothing can change between that check and this call: no await in between)."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await event_loop.within(event.wait(), max(0.0, timeout_s))

    async def wait_or(self, fut: asyncio.Future[Any], timeout_s: float) -> None:
        """Until ``fut`` is done, the next ``notify`` or ``timeout_s``, whichever comes first (``fut`` is left
        alone)."""
        notified = asyncio.get_running_loop().create_task(self._event.wait())
        try:
            await asyncio.wait((fut, notified), timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)
        finally:
            notified.cancel()


class RaftBackend:
    def __init__(
        self,
        config: BrokerConfig,
        node: RaftNode,
        storage: RaftStorage,
        transport: PeerTransport,
        pending: Pending,
        probe: ControllerProbe,
        clock: Clock,
    ) -> None:
        self.config = config
        self.node = node
        self.storage = storage
        self.transport = transport
        self.image = decode_image(storage.snapshot.data)
        self.changes = Changes()
        self.on_tick: Callable[[int], None] = lambda _now_ms: None
        self.after_ready: Callable[[], None] = lambda: None  # the frontend's, before waiters wake
        self.on_applied: Callable[[], None] = lambda: None  # the channel server's, after waiters wake
        self.on_fatal: Callable[[str], None] = lambda _why: None
        self._pending = pending
        self._probe = probe
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._observed = self._observe()

    def now_ms(self) -> int:
        return int(self._clock())

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for coro, name in ((self._ready_loop(), "raft-ready"), (self._tick_loop(), "raft-tick")):
            task = loop.create_task(coro, name=name)
            task.add_done_callback(self.task_done)
            self._tasks.append(task)
        self._wake.set()

    def wake(self) -> None:
        """The node may have a Ready (a proposal, a read, a campaign): run the Ready loop."""
        self._wake.set()

    def step(self, body: bytes, src: int) -> None:
        """A Raft message from peer ``src``: malformed or spoofed ones are counted and dropped."""
        try:
            msg = raft_messages.decode(body)
        except raft_messages.MessageDecodeError as e:
            self.transport.count("malformed")
            log.warning("malformed Raft message from node %d: %s", src, e)
            return
        if msg.src != src:
            self.transport.count("spoofed_source")
            return
        self.node.step(msg)
        self._wake.set()

    def task_done(self, task: asyncio.Task[None]) -> None:
        """A controller task that must never end failed: tell ``on_fatal``."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("controller task %s failed", task.get_name(), exc_info=task.exception())
        self.on_fatal(f"controller task {task.get_name()} failed: {task.exception()!r}")

    def _observe(self) -> tuple[Role, NodeId, Term]:
        return self.node.role, self.node.leader, self.node.term

    async def _tick_loop(self) -> None:
        interval_s = self.config.raft_heartbeat_interval_ms / 2000
        while True:
            await asyncio.sleep(interval_s)
            now_ms = self.now_ms()
            self.node.tick(now_ms)
            self.on_tick(now_ms)
            if self.node.has_ready() or self._observed != self._observe():
                self._wake.set()

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.node.has_ready():
                rd = self.node.ready()
                await self._persist(rd)
                for msg in rd.messages:
                    self.transport.send(msg.dst, KIND_RAFT, raft_messages.encode(msg))
                self._apply_ready(rd)
                self._settle()
                await self._maybe_compact()
            if self._observed != self._observe():
                self._settle()  # the role, leader or term moved without a Ready

    async def _persist(self, rd: Ready) -> None:
        if rd.must_sync or rd.snapshot is not None:
            started_ms = self._clock()
            await asyncio.get_running_loop().run_in_executor(None, self.storage.save, rd)
            now_ms = self._clock()
            self._probe.observe_fsync((now_ms - started_ms) / 1000, now_ms / 1000)
        elif rd.hard_state is not None:
            self.storage.save(rd)  # only the commit index moved: a small unsynced write

    def _apply_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.image = decode_image(rd.snapshot.data)
            assert self.image.offset == rd.snapshot.index, (self.image.offset, rd.snapshot.index)
            self._pending.replaced_up_to(rd.snapshot.index)
        for entry in rd.committed:
            self._apply(entry)
        for rs in rd.read_states:
            self._pending.read_confirmed(rs.ctx, rs.index)

    def _apply(self, entry: Entry) -> None:
        assert entry.index == self.image.offset + 1, (entry.index, self.image.offset)
        cmd = decode_command(entry.data) if entry.kind == EntryKind.NORMAL else NoOp()
        self.image = apply(self.image, cmd, entry.index)
        self._pending.applied(entry)

    def _settle(self) -> None:
        """After a Ready: a node that no longer leads drops its reads, then everyone waiting is woken."""
        self._observed = self._observe()
        if self.node.role != Role.LEADER and self._pending.reads:
            self._pending.fail_reads("leadership moved before the read was confirmed; retry")
        self.after_ready()
        self._probe.observe_leader(self.node.leader, self.node.term)
        self._probe.observe_role(self.node.role, self.node.term)
        self.changes.notify()
        self.on_applied()

    async def _maybe_compact(self) -> None:
        node = self.node
        if node.applied - node.snapshot.index < self.config.controller_snapshot_entries:
            return
        assert self.image.offset == node.applied
        data = encode_image(self.image)
        snap = node.compact(node.applied, data)
        after = node.entries(snap.index + 1, node.last_index) if node.last_index > snap.index else []
        await asyncio.get_running_loop().run_in_executor(None, self.storage.compact, snap, after)
        log.info("controller snapshot at offset %d (%d bytes)", snap.index, len(data))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
