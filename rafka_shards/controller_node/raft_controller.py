"""The node's metadata controller: one member of the Raft quorum that replicates the metadata log.

Runs in the controller process (``process``) on its event loop. ``RaftController`` puts together, as Redpanda splits
a subsystem into frontend, backend and probe:

- ``backend.RaftBackend``: the Ready loop (persist, send, apply, compaction) and the tick loop around the sans-IO
  ``controller.raft.node.RaftNode``; it owns ``data_dir/controller/raft`` (``controller.raft.wal``) and the applied
  image;
- ``frontend.RaftFrontend``: proposals validated against the speculative image, ReadIndex reads, membership
  changes and broker heartbeats, forwarded to the leader by ``forwarder.Forwarder`` (``controller.forwarding``'s
  typed messages) when this node does not lead;
- ``duties.DutiesRunner``: the active controller's own proposals (``controller.leader_duties``: leases, fencing,
  liveness probes, draining), and the fencing of a broker whose shard this node saw die;
- ``probe.ControllerProbe``: the fsync histogram and the leader-change count;
- ``leader_gone.LeaderGoneCheck``: campaigning at once when the leader's process is gone;
- ``raft_transport.PeerTransport``: the authenticated TCP frames to the other controllers.

One clock (``clock``: monotonic milliseconds, injected) times all of them. The first snapshot of a new quorum comes
from ``bootstrap`` (which upgrades a pre-Raft metadata log, ``legacy_upgrade``). What the channel server, the admin
API and ``/metrics`` use is the surface of this class.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from controller.commands import Command, NoOp, encode_command
from controller.image import MetadataImage
from controller.leases import BrokerLeases, HeartbeatReply
from controller.raft.membership import ConfChangeError
from controller.raft.node import ConfChangeOp, NotLeader, RaftConfig, RaftNode, Status
from controller.raft.types import NO_NODE, EntryKind, NodeId
from controller.raft.wal import RaftStorage
from controller.topics import TopicProposal
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.backend import RaftBackend
from rafka_shards.controller_node.bootstrap import bootstrap_snapshot
from rafka_shards.controller_node.clock import Clock, monotonic_ms
from rafka_shards.controller_node.duties import DutiesRunner
from rafka_shards.controller_node.errors import ControllerUnavailable
from rafka_shards.controller_node.forwarder import Forwarder
from rafka_shards.controller_node.frontend import PROPOSALS_PENDING_MAX, READS_PENDING_MAX, RaftFrontend
from rafka_shards.controller_node.leader_gone import LeaderGoneCheck
from rafka_shards.controller_node.pending import Pending
from rafka_shards.controller_node.probe import ControllerProbe, LatencyHistogram
from rafka_shards.controller_node.raft_transport import KIND_FORWARD, KIND_RAFT, PeerTransport
from rafka_shards.security.audit import NULL_SINK, Actor, AuditSink, Source, describe_command, mutation

__all__ = ["ControllerUnavailable", "RaftController", "bootstrap_snapshot"]

log = logging.getLogger(__name__)

CONTROLLER_ACTOR = Actor("", "", Source.INTERNAL, "controller")  # the active controller's duties

NOOP_PAYLOAD = encode_command(NoOp())
CAUGHT_UP_WARN_MS = 5000  # wait_caught_up logs this often while the quorum is not reachable


class RaftController:
    def __init__(self, config: BrokerConfig, storage: RaftStorage, node: RaftNode, clock: Clock) -> None:
        self.config = config
        self.node = node
        self.storage = storage
        self._clock = clock
        addresses = {n: ep for n, ep in config.controller_addresses()[1].items() if n != config.node_id}
        self.transport = PeerTransport(config.node_id, config.controller_secret.encode(), addresses, self._on_frame)
        self.probe = ControllerProbe()
        pending = Pending(PROPOSALS_PENDING_MAX, READS_PENDING_MAX)
        self._pending = pending
        self.backend = RaftBackend(config, node, storage, self.transport, pending, self.probe, clock)
        self.forwarder = Forwarder(self.transport, self.backend.changes, lambda: node.leader, clock)
        # The process's audit log, when audit_enabled (set by controller_node.process): the duties' own changes.
        self.audit_sink: AuditSink = NULL_SINK
        self.duties = DutiesRunner(
            config, node, lambda: self.backend.image, self.propose_own, clock, self.backend.task_done
        )
        self.backend.on_tick = self.duties.tick
        self.frontend = RaftFrontend(config, node, self.backend, pending, self.forwarder, self.duties, clock)
        self._leader_gone = LeaderGoneCheck(
            node, self.transport.addresses, config.broker_probe_timeout_ms, self.backend.wake
        )
        self.transport.on_inbound_closed = self._leader_gone.peer_closed

    @classmethod
    async def open(cls, config: BrokerConfig, clock: Clock = monotonic_ms) -> RaftController:
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
        node = RaftNode(raft_config, random.Random(), int(clock()), storage.hard_state, storage.snapshot, entries)
        return cls(config, storage, node, clock)

    async def start(self) -> None:
        """Listen for peers, replay the committed log into the image, start ticking."""
        await self.transport.start(self.config.controller_listen_endpoint())
        self.backend.start()
        if self.node.conf.voters == {self.node.id}:
            # A quorum of one would elect itself at its first election timeout; campaign now instead of waiting.
            self.node.campaign()
        self.backend.wake()

    async def wait_caught_up(self) -> None:
        """Until this node knows a leader of the current term and has applied everything it knew committed, twice
        a heartbeat apart (so the commit index reflects the leader's). Logs while the quorum is not reachable."""
        interval_s = self.config.raft_heartbeat_interval_ms / 1000
        warn_at_ms = self._clock() + CAUGHT_UP_WARN_MS
        settled = 0
        while settled < 2:
            node = self.node
            known = node.leader != NO_NODE and node.term_at(node.commit) == node.term
            settled = settled + 1 if known and self.image.offset >= node.commit else 0
            await asyncio.sleep(interval_s)
            if settled == 0 and self._clock() >= warn_at_ms:
                warn_at_ms += CAUGHT_UP_WARN_MS
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

    def now_ms(self) -> int:
        """The controller's clock (monotonic): what the Raft node ticks with and leases are timed by."""
        return int(self._clock())

    def _on_frame(self, kind: int, src: int, body: bytes) -> None:
        if kind == KIND_RAFT:
            self.backend.step(body, src)
        elif kind == KIND_FORWARD:
            self.forwarder.on_request(src, body)
        else:
            self.forwarder.on_response(body)

    async def close(self) -> None:
        await self.backend.close()
        await self.duties.close()
        await self._leader_gone.close()
        await self.forwarder.close()
        await self.transport.close()
        self._pending.cancel()
        self.storage.close()

    # ---- what the controller channel, the admin API and /metrics read ----------------------------------------

    @property
    def image(self) -> MetadataImage:
        """The applied metadata image."""
        return self.backend.image

    @property
    def applied_offset(self) -> int:
        return self.backend.image.offset

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

    @property
    def leases(self) -> BrokerLeases | None:
        """The active controller's broker leases (None unless this node leads and applied an entry of its term)."""
        return self.duties.core.leases

    @property
    def leader_changes(self) -> int:
        return self.probe.leader_changes

    @property
    def fsync_seconds(self) -> LatencyHistogram:
        return self.probe.fsync_seconds

    @property
    def on_applied(self) -> Callable[[], None]:
        """Called after every Ready the backend applied (the channel server pushes the new records)."""
        return self.backend.on_applied

    @on_applied.setter
    def on_applied(self, callback: Callable[[], None]) -> None:
        self.backend.on_applied = callback

    @property
    def on_fatal(self) -> Callable[[str], None]:
        """Called when a controller task that must never end failed: the node must stop."""
        return self.backend.on_fatal

    @on_fatal.setter
    def on_fatal(self, callback: Callable[[str], None]) -> None:
        self.backend.on_fatal = callback

    # ---- requests --------------------------------------------------------------------------------------------

    async def propose(self, cmd: Command) -> int:
        """Commit ``cmd``; its offset once this node applied it (``RaftFrontend.propose``)."""
        return await self.frontend.propose(cmd)

    async def propose_own(self, cmd: Command) -> int:
        """``propose`` for a change the controller makes by itself (fencing, unfencing, the balancer's moves, a
        controlled shutdown's maintenance), audited as the node's own (source internal, api "controller")."""
        what = [describe_command(cmd)]
        try:
            offset = await self.propose(cmd)
        except (Exception, asyncio.CancelledError) as e:  # recorded, then raised as it was
            self.audit_sink.audit(mutation(what, success=False, error=type(e).__name__, actor=CONTROLLER_ACTOR))
            raise
        self.audit_sink.audit(mutation(what, success=True, actor=CONTROLLER_ACTOR))
        return offset

    async def propose_topic(self, proposal: TopicProposal) -> int:
        """Carry out a topic request planned on the leader's image (``RaftFrontend.propose_topic``)."""
        return await self.frontend.propose_topic(proposal)

    async def read_barrier(self) -> int:
        """Linearizable reads: see ``RaftFrontend.read_barrier``."""
        return await self.frontend.read_barrier()

    async def change_membership(self, op: ConfChangeOp, node_id: int) -> int:
        return await self.frontend.change_membership(op, node_id)

    async def add_voter(self, node_id: int, catch_up_timeout_s: float = 30.0) -> None:
        await self.frontend.add_voter(node_id, catch_up_timeout_s)

    async def heartbeat(
        self, broker_id: int, incarnation: str, metadata_offset: int, *, forward: bool = True
    ) -> HeartbeatReply:
        return await self.frontend.heartbeat(broker_id, incarnation, metadata_offset, forward=forward)

    def transfer_leadership(self, target: int) -> None:
        """Ask voter ``target`` to campaign now (dissertation 3.10; proposals pause meanwhile, for at most an election
        timeout); ``ControllerUnavailable`` if this node does not lead or ``target`` is no voter."""
        try:
            self.node.transfer_leadership(NodeId(target))
        except (NotLeader, ConfChangeError) as e:
            raise ControllerUnavailable(f"cannot transfer Raft leadership to node {target}: {e}") from None
        self.backend.wake()

    def broker_died(self, broker_id: int, why: str) -> None:
        """This node's supervisor saw broker ``broker_id``'s shard exit: fence it now (``DutiesRunner``)."""
        self.duties.broker_died(broker_id, why)
