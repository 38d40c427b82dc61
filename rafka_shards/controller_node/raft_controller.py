"""The node's metadata controller: one member of the Raft quorum that replicates the metadata log.

Runs in the controller process (``controller_process``) on its event loop: the thin asyncio shell around
``controller.raft.node.RaftNode``.
It owns ``data_dir/controller/raft`` (``controller.raft.wal``), the Raft transport to the other controllers
(``raft_transport``), the applied metadata image, and the proposals waiting for their entries. The Ready loop is the
only place that touches the disk, and it does so in this order for every Ready: persist (fsync when the Ready must
be synced, in an executor thread), then send the messages, then apply the committed entries. So a vote, a term and
every entry a leader counts are durable before any peer hears of them, and nothing is applied or acknowledged that
is not durable on a quorum.

Proposals: the leader validates each command against its speculative image (the applied image plus its proposals
not yet committed), so a bad command never enters the log, and accepts proposals only once it has applied an entry
of its own term (everything an earlier leader left in its log is then applied and visible to validation). A
follower forwards the command to the leader over the transport and returns once its own image has applied it.
Offsets seen by shards are Raft indexes; Raft no-ops and membership entries reach them as ``NoOp`` commands.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from controller.commands import (
    Command,
    CommandDecodeError,
    FenceBroker,
    NoOp,
    UnfenceBroker,
    command_from_json,
    decode_command,
    encode_command,
)
from controller.image import MetadataImage, decode_image, encode_image
from controller.leases import BrokerLeases, HeartbeatReply
from controller.liveness import BrokerProbes, ProbeOutcome, ProbeTarget
from controller.metadata_log import MetadataLog
from controller.placement import drain_moves
from controller.raft import messages as raft_messages
from controller.raft.node import (
    ConfChangeError,
    ConfChangeOp,
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    Role,
    Status,
)
from controller.raft.types import NO_NODE, ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term
from controller.raft.wal import RaftStorage
from controller.state_machine import CommandRejected, Rejection, RejectKind, apply, validate
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.broker_probe import probe_broker
from rafka_shards.controller_node.raft_transport import KIND_FORWARD, KIND_FORWARD_RESULT, KIND_RAFT, PeerTransport

log = logging.getLogger(__name__)

NOOP_PAYLOAD = encode_command(NoOp())
FORWARD_TIMEOUT_S = 10.0
FORWARDS_PENDING_MAX = 4096
PROPOSALS_PENDING_MAX = 16384
DRAIN_INTERVAL_MS = 1000  # how often the leader looks for replicas to move off decommissioning brokers
DRAIN_MOVES_MAX = 32  # reassignments it proposes at once
# When the leader's connection closes, its port is checked this long after, then after these further delays.
LEADER_GONE_CHECKS_S = (0.01, 0.05, 0.25)
READS_PENDING_MAX = 1024  # ReadIndex requests waiting at a leader (the node itself allows RaftConfig.pending_reads_max)


FSYNC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Cumulative-bucket histogram for /metrics (Prometheus' layout), kept by the one task that observes."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class ControllerUnavailable(Exception):
    """No leader, or leadership moved before the request committed: the caller may retry."""


@dataclass(slots=True)
class _Waiter:
    term: Term
    future: asyncio.Future[int]


def _unavailable(message: str) -> CommandRejected:
    return CommandRejected(Rejection(RejectKind.CONTROLLER_UNAVAILABLE, message))


def bootstrap_snapshot(config: BrokerConfig, voters: frozenset[NodeId]) -> Snapshot:
    """Index 0 of a new quorum: the first voters and an empty image, or the image of a pre-Raft metadata log."""
    directory = config.data_dir / "controller"
    image = MetadataImage(offset=0, cluster_id=config.cluster_id or _default_cluster_id(config, voters))
    legacy = directory / "metadata.log"
    if legacy.exists():
        # Upgrade from the single-node metadata log: its state becomes the quorum's starting point.
        meta = directory / "cluster.json"
        if meta.exists():
            image = MetadataImage(offset=0, cluster_id=str(orjson.loads(meta.read_bytes())["cluster_id"]))
        old = MetadataLog.open(directory)
        for offset, cmd in old.read_from(0):
            image = apply(image, cmd, offset)
        old.close()
        image = dataclasses.replace(image, offset=0)
    return Snapshot(Index(0), Term(0), ConfState(voters), encode_image(image))


def _default_cluster_id(config: BrokerConfig, voters: frozenset[NodeId]) -> str:
    if len(voters) == 1 and not config.controller_voters:
        return str(uuid.uuid4())
    # Every first voter must derive the same id without talking to the others.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "rafka-shards:" + config.controller_voters))


class RaftController:
    def __init__(self, config: BrokerConfig, storage: RaftStorage, node: RaftNode) -> None:
        self.config = config
        self.node = node
        self.storage = storage
        addresses = {n: ep for n, ep in config.controller_addresses()[1].items() if n != config.node_id}
        self.transport = PeerTransport(config.node_id, config.controller_secret.encode(), addresses, self._on_frame)
        self.transport.on_inbound_closed = self._peer_closed
        self._checking: set[int] = set()  # peers whose closed connection is being checked (``_peer_closed``)
        self.image = decode_image(storage.snapshot.data)
        self.on_applied: Callable[[], None] = lambda: None
        self.on_fatal: Callable[[str], None] = lambda _why: None
        self._wake = asyncio.Event()
        self._applied_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[int, _Waiter] = {}
        self._speculative: MetadataImage | None = None
        self._speculative_term = Term(-1)
        self._forwards: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._forward_tasks: set[asyncio.Task[None]] = set()
        self._next_forward = 0
        self._reads: dict[int, asyncio.Future[int]] = {}  # ReadIndex requests of this leader, by ctx
        self._next_read = 0
        self._last_leader = NO_NODE
        self.leader_changes = 0
        self.fsync_seconds = LatencyHistogram(FSYNC_BUCKETS_S)  # each synced Ready: WAL write + fsync
        self.leases: BrokerLeases | None = None  # only while this node leads and has applied an entry of its term
        self._leases_term = Term(-1)
        self._background: set[asyncio.Task[None]] = set()  # the leader's own proposals
        self._draining: set[tuple[str, int]] = set()  # partitions whose drain reassignment is being proposed
        self.probes: BrokerProbes | None = None  # with ``leases``: the liveness probes of the active controller
        self._probe_tasks: dict[ProbeTarget, asyncio.Task[None]] = {}  # one per registered, unfenced broker
        self._fencing: set[int] = set()  # brokers whose death this node reported and is fencing
        self._next_drain_ms = 0

    @classmethod
    async def open(cls, config: BrokerConfig) -> RaftController:
        voters_map, _ = config.controller_addresses()
        voters = frozenset(NodeId(n) for n in voters_map) or frozenset({NodeId(config.node_id)})
        loop = asyncio.get_running_loop()
        boot = await loop.run_in_executor(None, bootstrap_snapshot, config, voters)
        directory = config.data_dir / "controller" / "raft"
        storage, entries = await loop.run_in_executor(None, RaftStorage.open, directory, boot)
        raft_config = RaftConfig(
            NodeId(config.node_id),
            election_timeout_ms=config.raft_election_timeout_ms,
            heartbeat_interval_ms=config.raft_heartbeat_interval_ms,
        )
        now_ms = int(loop.time() * 1000)
        node = RaftNode(raft_config, random.Random(), now_ms, storage.hard_state, storage.snapshot, entries)
        return cls(config, storage, node)

    async def start(self) -> None:
        """Listen for peers, replay the committed log into the image, start ticking."""
        await self.transport.start(self.config.controller_listen_endpoint())
        loop = asyncio.get_running_loop()
        for coro, name in ((self._ready_loop(), "raft-ready"), (self._tick_loop(), "raft-tick")):
            task = loop.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        if self.node.conf.voters == {self.node.id}:
            # A quorum of one would elect itself at its first election timeout; campaign now instead of waiting.
            self.node.campaign()
        self._wake.set()

    async def wait_caught_up(self) -> None:
        """Until this node knows a leader of the current term and has applied everything it knew committed, twice
        a heartbeat apart (so the commit index reflects the leader's). Logs while the quorum is not reachable."""
        interval_s = self.config.raft_heartbeat_interval_ms / 1000
        warn_at = time.monotonic() + 5
        settled = 0
        while settled < 2:
            node = self.node
            known = node.leader != NO_NODE and node.term_at(node.commit) == node.term
            settled = settled + 1 if known and self.image.offset >= node.commit else 0
            await asyncio.sleep(interval_s)
            if settled == 0 and time.monotonic() >= warn_at:
                warn_at += 5
                log.warning(
                    "waiting for the controller quorum (node %d, term %d, leader %s, commit %d of term %s, applied "
                    "%d, dropped frames %s)",
                    node.id,
                    node.term,
                    node.leader if node.leader != NO_NODE else "unknown",
                    node.commit,
                    node.term_at(node.commit),
                    self.image.offset,
                    dict(self.transport.dropped),
                )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """The Ready and tick loops never end: one that failed leaves a controller that neither persists nor
        applies, so the node must stop (exit 1) rather than keep serving stale metadata."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("controller task %s failed", task.get_name(), exc_info=task.exception())
        self.on_fatal(f"controller task {task.get_name()} failed: {task.exception()!r}")

    def now_ms(self) -> int:
        """The controller's clock (monotonic): what the Raft node ticks with and leases are timed by."""
        return int(asyncio.get_running_loop().time() * 1000)

    # ---- what the controller channel and the admin API read --------------------------------------------------

    @property
    def applied_offset(self) -> int:
        return self.image.offset

    @property
    def snapshot_offset(self) -> int:
        return self.node.snapshot.index

    def snapshot_image(self) -> bytes:
        """The encoded image at ``snapshot_offset``: where a shard starts before it reads records."""
        return self.node.snapshot.data

    def payloads(self, first: int, count_max: int) -> list[bytes]:
        """Encoded commands of applied entries from ``first`` (after the snapshot) on."""
        assert first > self.node.snapshot.index, (first, self.node.snapshot.index)
        last = min(self.image.offset, first + count_max - 1)
        if last < first:
            return []
        return [e.data if e.kind == EntryKind.NORMAL else NOOP_PAYLOAD for e in self.node.entries(first, last)]

    def status(self) -> Status:
        return self.node.status()

    # ---- proposals -------------------------------------------------------------------------------------------

    async def propose(self, cmd: Command) -> int:
        """Commit ``cmd`` and return its offset once this node has applied it. Raises CommandRejected (for a
        command that does not validate, or, with CONTROLLER_UNAVAILABLE, when there is no leader to take it)."""
        if isinstance(cmd, NoOp):
            raise CommandRejected(Rejection(RejectKind.INVALID_REQUEST, "NoOp is not proposed"))
        request = {"op": "propose", "command": orjson.loads(encode_command(cmd))}
        return await self._at_leader(lambda deadline: self._propose_local(cmd, deadline), request, "offset")

    async def _at_leader(
        self, local: Callable[[float], Awaitable[int]], request: dict[str, object], answer: str
    ) -> int:
        """An offset decided by the leader: ``local(deadline)`` when this node leads, else ``request`` forwarded to
        the leader (the offset is its ``answer`` field); retried across elections until the deadline. Returns once
        this node has applied that offset too."""
        deadline = time.monotonic() + 2 * self.config.raft_election_timeout_ms / 1000 + FORWARD_TIMEOUT_S
        while True:
            if self.node.role == Role.LEADER:
                if await self._leader_ready(deadline):
                    offset = await local(deadline)
                    break
                continue
            leader = self.node.leader
            if leader == NO_NODE:
                await self._wait_applied_change(deadline, "no controller leader")
                continue
            result = await self._forward(leader, request)
            if answer in result:
                offset = int(str(result[answer]))
                break
            if result.get("kind") == RejectKind.CONTROLLER_UNAVAILABLE.value:
                await self._wait_applied_change(deadline, str(result.get("message")))
                continue
            raise CommandRejected(Rejection(RejectKind(str(result["kind"])), str(result.get("message"))))
        while self.image.offset < offset:
            await self._wait_applied_change(deadline, f"offset {offset} committed but not applied here in time")
        return offset

    # ---- linearizable reads ----------------------------------------------------------------------------------

    async def read_barrier(self) -> int:
        """Linearizable reads (ReadIndex, Raft dissertation 6.4): returns once this node's image has applied
        everything that was committed when the call was made, as confirmed by the leader with a heartbeat round
        (a follower asks the leader for that index). Whatever ``image`` shows afterwards is at least as new as any
        write acknowledged before the call, on any node. Raises CommandRejected (CONTROLLER_UNAVAILABLE) when no
        leader answers in time."""
        return await self._at_leader(self._read_index_local, {"op": "read_index"}, "index")

    async def _read_index_local(self, deadline: float) -> int:
        if len(self._reads) >= READS_PENDING_MAX:
            raise _unavailable(f"{READS_PENDING_MAX} linearizable reads pending")
        self._next_read += 1
        ctx = self._next_read
        try:
            self.node.read_index(ctx)
        except (NotLeader, ProposalDropped) as e:
            raise _unavailable(str(e)) from None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise _unavailable("leadership not confirmed by a quorum in time") from None
        finally:
            self._reads.pop(ctx, None)

    def _fail_reads(self, why: str) -> None:
        """A node that stepped down drops its pending reads: their callers retry with the new leader."""
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(_unavailable(why))
        self._reads.clear()

    async def _leader_ready(self, deadline: float) -> bool:
        """A new leader takes proposals once it applied an entry of its own term; False if it lost leadership."""
        while self.node.role == Role.LEADER and self.node.term_at(self.image.offset) != self.node.term:
            await self._wait_applied_change(deadline, "the new controller leader is catching up")
        return self.node.role == Role.LEADER

    async def _wait_applied_change(self, deadline: float, why: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _unavailable(why)
        event = self._applied_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def _propose_local(self, cmd: Command, deadline: float) -> int:
        node = self.node
        if self._speculative is None or self._speculative_term != node.term:
            self._speculative = self.image
            self._speculative_term = node.term
        rejection = validate(self._speculative, cmd)
        while rejection is not None and self._waiters and validate(self.image, cmd) is None:
            # It conflicts only with proposals still in flight: answer once they are applied, so the requester's
            # image shows why (the topic it could not create exists by then), or take it if they were lost.
            await self._wait_applied_change(deadline, "conflicting proposals still in flight")
            if self._speculative is None or self._speculative_term != node.term:
                raise _unavailable("leadership moved")
            rejection = validate(self._speculative if self._waiters else self.image, cmd)
        if rejection is not None:
            raise CommandRejected(rejection)
        if len(self._waiters) >= PROPOSALS_PENDING_MAX:
            raise _unavailable(f"{PROPOSALS_PENDING_MAX} metadata proposals pending")
        try:
            index = node.propose(encode_command(cmd))
        except (NotLeader, ProposalDropped) as e:
            raise _unavailable(str(e)) from None
        self._speculative = apply(self._speculative, cmd, index)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[index] = _Waiter(node.term, fut)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise _unavailable(f"metadata entry {index} not committed in time") from None

    async def change_membership(self, op: ConfChangeOp, node_id: int) -> int:
        """Add a learner, promote it, or remove a member (leader only; followers forward). Returns the offset."""
        if self.node.role != Role.LEADER:
            leader = self.node.leader
            if leader == NO_NODE:
                raise ControllerUnavailable("no controller leader")
            result = await self._forward(leader, {"op": "conf", "change": op.value, "node": node_id})
            if "offset" not in result:
                self._raise_forward_error(result)
            return int(str(result["offset"]))
        deadline = time.monotonic() + FORWARD_TIMEOUT_S
        if not await self._leader_ready(deadline):
            raise ControllerUnavailable("leadership moved")
        try:
            index = self.node.propose_conf_change(op, NodeId(node_id))
        except NotLeader as e:
            raise ControllerUnavailable(str(e)) from None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[index] = _Waiter(self.node.term, fut)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), FORWARD_TIMEOUT_S)
        except TimeoutError:
            raise ControllerUnavailable(f"membership entry {index} not committed in time") from None

    async def add_voter(self, node_id: int, catch_up_timeout_s: float = 30.0) -> None:
        """Dissertation 4.2.1: join as a learner, wait until it has caught up, then promote it."""
        conf = self.node.conf
        if node_id in conf.voters:
            return
        if node_id not in conf.learners:
            await self.change_membership(ConfChangeOp.ADD_LEARNER, node_id)
        deadline = time.monotonic() + catch_up_timeout_s
        while True:
            try:
                await self.change_membership(ConfChangeOp.PROMOTE, node_id)
                return
            except ProposalDropped:
                pass  # not caught up yet, or the learner's own entry is not committed yet
            if time.monotonic() > deadline:
                raise ControllerUnavailable(f"node {node_id} did not catch up within {catch_up_timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    def _raise_forward_error(self, result: dict[str, object]) -> None:
        kind = str(result.get("kind"))
        message = str(result.get("message"))
        if kind == "conf_change":
            raise ConfChangeError(message)
        if kind == "dropped":
            raise ProposalDropped(message)
        raise ControllerUnavailable(message)

    # ---- broker leases ---------------------------------------------------------------------------------------

    async def heartbeat(
        self, broker_id: int, incarnation: str, metadata_offset: int, *, forward: bool = True
    ) -> HeartbeatReply:
        """Renew a broker's lease with the active controller (forwarded when this node does not lead).
        Raises ControllerUnavailable when no leader keeps leases right now."""
        leases = self.leases
        if leases is not None and self.node.role == Role.LEADER:
            reply, unfence = leases.heartbeat(self.image, broker_id, incarnation, metadata_offset, self.now_ms())
            if unfence is not None:
                self._propose_lease_change(leases, unfence)
            return reply
        leader = self.node.leader
        if leader == NO_NODE or leader == self.node.id or not forward:
            raise ControllerUnavailable("no controller leader keeps broker leases right now")
        request = {"op": "heartbeat", "broker_id": broker_id, "incarnation": incarnation, "offset": metadata_offset}
        result = await self._forward(leader, request)
        if "fenced" not in result:
            raise ControllerUnavailable(str(result.get("message")))
        return HeartbeatReply(bool(result["fenced"]), str(result.get("message")))

    def _tick_leases(self) -> None:
        node = self.node
        if node.role != Role.LEADER or node.term_at(self.image.offset) != node.term:
            self.leases = None  # only a leader that applied everything before its term judges liveness
            self._stop_probes()
            return
        now = self.now_ms()
        if self.leases is None or self._leases_term != node.term:
            self.leases = BrokerLeases(self.config.broker_session_timeout_ms, now)
            self._leases_term = node.term
            self._stop_probes()
            self.probes = BrokerProbes()
        leases = self.leases
        for fence in leases.tick(self.image, now):
            timeout = leases.session_timeout_ms
            log.warning("broker %d missed its heartbeats for %d ms: fencing it", fence.broker_id, timeout)
            self._propose_lease_change(leases, fence)
        self._run_probes()

    # ---- liveness probes (controller.liveness): fence a broker whose node is gone without waiting for its session

    def _run_probes(self) -> None:
        """Exactly one probe task per registered, unfenced broker while this node is the active controller."""
        probes, interval_ms = self.probes, self.config.broker_probe_interval_ms
        if probes is None or interval_ms <= 0:
            return
        wanted = set(probes.targets(self.image))
        for target in [t for t in self._probe_tasks if t not in wanted]:
            self._probe_tasks.pop(target).cancel()
        loop = asyncio.get_running_loop()
        for target in wanted - set(self._probe_tasks):
            task = loop.create_task(
                probe_broker(target, interval_ms, self.config.broker_probe_timeout_ms, self._probe_seen),
                name=f"probe-broker-{target.broker_id}",
            )
            task.add_done_callback(self._task_done)
            self._probe_tasks[target] = task

    def _stop_probes(self) -> None:
        for task in self._probe_tasks.values():
            task.cancel()
        self._probe_tasks.clear()
        self.probes = None

    def _probe_seen(self, target: ProbeTarget, outcome: ProbeOutcome) -> None:
        probes = self.probes
        if probes is None or self.leases is None:
            return
        fence = probes.observe(self.image, target, outcome, self.now_ms())
        if fence is not None:
            log.warning("broker %d's node is gone (its port refuses connections): fencing it", fence.broker_id)
            self._propose_in_background(fence, functools.partial(probes.done, fence.broker_id))

    def broker_died(self, broker_id: int, why: str) -> None:
        """This node's supervisor saw broker ``broker_id``'s shard process exit: fence its registered incarnation
        now (through the leader) rather than when its session times out. Idempotent while the fence is pending."""
        reg = self.image.brokers.get(broker_id)
        if reg is None or reg.fenced or broker_id in self._fencing:
            return
        self._fencing.add(broker_id)
        log.warning("broker %d %s: fencing it", broker_id, why)
        self._propose_in_background(FenceBroker(broker_id, reg.incarnation), lambda: self._fencing.discard(broker_id))

    def _tick_drain(self) -> None:
        """The active controller moves replicas off decommissioning brokers (``placement.drain_moves``), a few at a
        time; each move completes by itself once the new replicas are in sync."""
        if self.leases is None:
            return  # only the leader that applied everything before its term
        now = self.now_ms()
        if now < self._next_drain_ms:
            return
        self._next_drain_ms = now + DRAIN_INTERVAL_MS
        for move in drain_moves(self.image, DRAIN_MOVES_MAX - len(self._draining)):
            key = (move.topic, move.partition)
            if key in self._draining:
                continue
            self._draining.add(key)
            self._propose_in_background(move, functools.partial(self._draining.discard, key))

    def _propose_lease_change(self, leases: BrokerLeases, cmd: FenceBroker | UnfenceBroker) -> None:
        self._propose_in_background(cmd, lambda: leases.done(cmd.broker_id))

    def _propose_in_background(self, cmd: Command, done: Callable[[], None]) -> None:
        """A proposal of the active controller's own (fencing, draining): logged either way, then ``done``."""

        async def run() -> None:
            try:
                offset = await self.propose(cmd)
                log.info("%s committed at offset %d", cmd, offset)
            except CommandRejected as e:
                log.info("%s not committed: %s", cmd, e)
            finally:
                done()

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- a dead leader's process ------------------------------------------------------------------------------

    def _peer_closed(self, src: int) -> None:
        """The leader's connection to this node closed: if its controller port now refuses connections, its process
        is gone, and this node campaigns without waiting out the election timeout (``RaftNode.leader_gone``). A
        leader that merely reconnects still listens; a paused or cut-off one does not refuse: both are left to the
        election timeout as before."""
        if src != self.node.leader or self.node.role == Role.LEADER or src in self._checking:
            return
        address = self.transport.addresses.get(src)
        if address is None:
            return

        async def check() -> None:
            # A dying process may close its connections a moment before its listener: look a few times.
            try:
                for delay_s in LEADER_GONE_CHECKS_S:
                    await asyncio.sleep(delay_s)
                    try:
                        connecting = asyncio.open_connection(address.host, address.port)
                        _, writer = await asyncio.wait_for(connecting, self.config.broker_probe_timeout_ms / 1000)
                        writer.transport.abort()  # it listens (for now)
                    except ConnectionRefusedError:
                        if self.node.leader == src:
                            log.warning("controller leader %d is gone (its port refuses connections): electing", src)
                            self.node.leader_gone(NodeId(src))
                            self._wake.set()
                        return
                    except (TimeoutError, OSError):
                        return  # not proof of death
            finally:
                self._checking.discard(src)

        self._checking.add(src)
        task = asyncio.get_running_loop().create_task(check())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- forwarding to the leader ----------------------------------------------------------------------------

    async def _forward(self, leader: NodeId, request: dict[str, object]) -> dict[str, object]:
        if len(self._forwards) >= FORWARDS_PENDING_MAX:
            return {"kind": RejectKind.CONTROLLER_UNAVAILABLE.value, "message": "too many forwarded requests pending"}
        self._next_forward += 1
        request_id = self._next_forward
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._forwards[request_id] = fut
        self.transport.send(leader, KIND_FORWARD, orjson.dumps({"id": request_id, **request}))
        deadline = time.monotonic() + FORWARD_TIMEOUT_S
        try:
            while not fut.done():
                # A leader that died may never answer: give up as soon as this node follows another leader.
                if self.node.leader != leader or time.monotonic() > deadline:
                    return {"kind": RejectKind.CONTROLLER_UNAVAILABLE.value, "message": f"leader {leader} is gone"}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), 0.05)
            return fut.result()
        finally:
            self._forwards.pop(request_id, None)

    async def _serve_forward(self, src: int, body: dict[str, object]) -> None:
        request_id = body.get("id")
        answer: dict[str, object]
        try:
            if body.get("op") == "propose":
                answer = {"offset": await self.propose(command_from_json(body.get("command")))}
            elif body.get("op") == "heartbeat":
                incarnation = body.get("incarnation")
                if not isinstance(incarnation, str):
                    raise ValueError("heartbeat without an incarnation")
                broker_id, offset = int(str(body.get("broker_id"))), int(str(body.get("offset")))
                reply = await self.heartbeat(broker_id, incarnation, offset, forward=False)
                answer = {"fenced": reply.fenced, "message": reply.message}
            elif body.get("op") == "read_index":
                if self.node.role != Role.LEADER:
                    raise ControllerUnavailable(f"node {self.node.id} no longer leads")
                deadline = time.monotonic() + FORWARD_TIMEOUT_S
                if not await self._leader_ready(deadline):
                    raise ControllerUnavailable("leadership moved")
                answer = {"index": await self._read_index_local(deadline)}
            elif body.get("op") == "conf":
                op = ConfChangeOp(str(body.get("change")))
                answer = {"offset": await self.change_membership(op, int(str(body.get("node"))))}
            else:
                answer = {"kind": RejectKind.INVALID_REQUEST.value, "message": "unknown forwarded operation"}
        except CommandRejected as e:
            answer = {"kind": e.rejection.kind.value, "message": e.rejection.message}
        except (CommandDecodeError, ValueError) as e:
            answer = {"kind": "conf_change" if isinstance(e, ConfChangeError) else "invalid_request", "message": str(e)}
        except ProposalDropped as e:
            answer = {"kind": "dropped", "message": str(e)}  # the leader cannot take it now; the caller may retry
        except ControllerUnavailable as e:
            answer = {"kind": RejectKind.CONTROLLER_UNAVAILABLE.value, "message": str(e)}
        self.transport.send(src, KIND_FORWARD_RESULT, orjson.dumps({"id": request_id, **answer}))

    def _on_frame(self, kind: int, src: int, body: bytes) -> None:
        if kind == KIND_RAFT:
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
            return
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.transport.count("malformed")
            return
        if not isinstance(parsed, dict):
            self.transport.count("malformed")
            return
        if kind == KIND_FORWARD:
            if len(self._forward_tasks) >= FORWARDS_PENDING_MAX:
                self.transport.count("forward_overload")
                return
            task = asyncio.get_running_loop().create_task(self._serve_forward(src, parsed))
            self._forward_tasks.add(task)
            task.add_done_callback(self._forward_tasks.discard)
        else:
            fut = self._forwards.get(parsed.get("id"))  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                fut.set_result(parsed)

    # ---- the loops -------------------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        interval_s = self.config.raft_heartbeat_interval_ms / 2000
        while True:
            await asyncio.sleep(interval_s)
            self.node.tick(self.now_ms())
            self._tick_leases()
            self._tick_drain()
            if self.node.has_ready():
                self._wake.set()

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.node.has_ready():
                rd = self.node.ready()
                if rd.must_sync or rd.snapshot is not None:
                    started = time.perf_counter()
                    await loop.run_in_executor(None, self.storage.save, rd)
                    self.fsync_seconds.observe(time.perf_counter() - started)
                elif rd.hard_state is not None:
                    self.storage.save(rd)  # only the commit index moved: a small unsynced write
                for msg in rd.messages:
                    self.transport.send(msg.dst, KIND_RAFT, raft_messages.encode(msg))
                if rd.snapshot is not None:
                    self.image = decode_image(rd.snapshot.data)
                    assert self.image.offset == rd.snapshot.index, (self.image.offset, rd.snapshot.index)
                    self._fail_waiters_up_to(rd.snapshot.index)
                for entry in rd.committed:
                    self._apply(entry)
                for rs in rd.read_states:
                    fut = self._reads.get(rs.ctx)
                    if fut is not None and not fut.done():
                        fut.set_result(rs.index)
                self._after_apply()
                await self._maybe_compact()

    def _apply(self, entry: Entry) -> None:
        assert entry.index == self.image.offset + 1, (entry.index, self.image.offset)
        if entry.kind == EntryKind.NORMAL:
            self.image = apply(self.image, decode_command(entry.data), entry.index)
        else:
            self.image = apply(self.image, NoOp(), entry.index)
        waiter = self._waiters.pop(entry.index, None)
        if waiter is not None and not waiter.future.done():
            if waiter.term == entry.term:
                waiter.future.set_result(entry.index)
            else:
                waiter.future.set_exception(_unavailable("leadership moved before the entry committed; retry"))

    def _fail_waiters_up_to(self, index: int) -> None:
        for at in [i for i in self._waiters if i <= index]:
            waiter = self._waiters.pop(at)
            if not waiter.future.done():
                waiter.future.set_exception(_unavailable("replaced by the leader's snapshot; retry"))

    def _after_apply(self) -> None:
        if self.node.role != Role.LEADER:
            self._speculative = None
            if self._reads:
                self._fail_reads("leadership moved before the read was confirmed; retry")
        leader = self.node.leader
        if leader != self._last_leader and leader != NO_NODE:
            self.leader_changes += 1
            log.info("controller leader is node %d (term %d)", leader, self.node.term)
        if leader != NO_NODE:
            self._last_leader = leader
        self._applied_event.set()
        self._applied_event = asyncio.Event()
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
        self._stop_probes()
        for task in [*self._forward_tasks, *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._forward_tasks, *self._background, return_exceptions=True)
        await self.transport.close()
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.cancel()
        self.storage.close()
