"""Deterministic simulation of the active controller's duties (``controller.leader_duties``) on a simulated Raft
quorum (``raft_sim.Cluster``): the state machine is the real metadata image, brokers heartbeat over a simulated
network, and each node's ``LeaderDuties`` is ticked with the simulated clock while it is the active controller.

Checked at every step: no broker is fenced for missing heartbeats before a full session timeout passed without one
reaching the proposing leader, counted from when that leader became active (paper-free, KRaft's rule: a leader
change never fences a broker that kept heartbeating). ``run(seed)`` raises ``InvariantViolation`` naming the seed.
"""

from __future__ import annotations

import dataclasses
import heapq

from controller.commands import FenceBroker, NoOp, RegisterBroker, decode_command, encode_command
from controller.image import MetadataImage
from controller.leader_duties import Duty, LeaderDuties, Proposal
from controller.raft.node import NotLeader, ProposalDropped, Role
from controller.raft.types import Entry, EntryKind, NodeId, Snapshot
from controller.state_machine import apply, validate
from tests.unit.raft_sim import Cluster, Faults, SimNode

SESSION_MS = 3000
HEARTBEAT_MS = 500
BROKER_DELAY_MS_MAX = 40


@dataclasses.dataclass(order=True)
class _Heartbeat:
    at_ms: int
    seq: int
    broker: int
    dst: NodeId
    offset: int


class DutiesCluster(Cluster):
    def __init__(self, seed: int, brokers: int = 3, faults: Faults | None = None) -> None:
        self.images_at: dict[int, MetadataImage] = {0: MetadataImage(offset=0, cluster_id="sim")}
        self.images: dict[NodeId, MetadataImage] = {}
        self.duties: dict[NodeId, LeaderDuties] = {}
        self.pending: dict[NodeId, dict[int, Proposal]] = {}
        self.active_since: dict[NodeId, int] = {}
        self.heard: dict[tuple[NodeId, int], int] = {}  # (node, broker) -> when its duties last renewed the lease
        self.fences: list[tuple[int, NodeId, int]] = []  # (when, proposer, broker) of every lease fence proposed
        self.brokers = brokers
        self.stop_at: dict[int, int] = {}  # broker -> when it stops heartbeating (it died)
        self.heartbeats: list[_Heartbeat] = []
        super().__init__(seed, voters=3, spare=0, faults=faults)

    # ---- the metadata state machine on every node ----------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        super()._start(node)
        self.images[node.id] = self.images_at[node.disk.view.snapshot.index]
        self.duties[node.id] = LeaderDuties(SESSION_MS)
        self.pending[node.id] = {}

    def _restore(self, node: SimNode, snap: Snapshot) -> None:
        super()._restore(node, snap)
        self.images[node.id] = self.images_at[snap.index]

    def _apply(self, node: SimNode, entry: Entry) -> None:
        super()._apply(node, entry)
        cmd = decode_command(entry.data) if entry.kind == EntryKind.NORMAL else NoOp()
        image = apply(self.images[node.id], cmd, entry.index)
        self.images[node.id] = self.images_at.setdefault(entry.index, image)
        proposal = self.pending[node.id].pop(entry.index, None)
        if proposal is not None:
            self.duties[node.id].done(proposal)

    def _client(self) -> None:
        """No string values here: the workload is the brokers' and the duties' commands."""

    # ---- the active controller -----------------------------------------------------------------------------

    def propose(self, node: SimNode, proposal: Proposal) -> None:
        raft = node.raft
        assert raft is not None
        if validate(self.images[node.id], proposal.command) is not None:
            self.duties[node.id].done(proposal)
            return
        try:
            index = raft.propose(encode_command(proposal.command))
        except (NotLeader, ProposalDropped):
            self.duties[node.id].done(proposal)
            return
        self.pending[node.id][index] = proposal
        self.process(node)

    def _tick_duties(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        image, duties = self.images[node.id], self.duties[node.id]
        active = raft.role == Role.LEADER and raft.term_at(image.offset) == raft.term
        activation = duties.activation
        proposals = duties.tick(image, self.now_ms, raft.term if active else None)
        if duties.activation != activation:
            self.active_since[node.id] = self.now_ms
        for proposal in proposals:
            if proposal.duty is Duty.LEASE and isinstance(proposal.command, FenceBroker):
                self._check_fence(node.id, proposal.command.broker_id)
            self.propose(node, proposal)

    def _check_fence(self, node: NodeId, broker: int) -> None:
        since = max(self.active_since[node], self.heard.get((node, broker), 0))
        if self.now_ms - since < SESSION_MS:
            self.fail(f"node {node} fenced broker {broker} {self.now_ms - since} ms after its lease was renewed")
        self.fences.append((self.now_ms, node, broker))

    # ---- the brokers ---------------------------------------------------------------------------------------

    def _send_heartbeats(self) -> None:
        if self.now_ms % HEARTBEAT_MS:
            return
        offset = max(self.images_at)  # the broker's metadata has caught up with the log
        for broker in range(self.brokers):
            if self.now_ms < self.stop_at.get(broker, 2**62):
                dst = self.rng.choice(sorted(self.nodes))
                self._queue(broker, dst, offset)

    def _queue(self, broker: int, dst: NodeId, offset: int) -> None:
        self.seq += 1
        at = self.now_ms + self.rng.randint(1, BROKER_DELAY_MS_MAX)
        heapq.heappush(self.heartbeats, _Heartbeat(at, self.seq, broker, dst, offset))

    def _deliver_heartbeats(self) -> None:
        while self.heartbeats and self.heartbeats[0].at_ms <= self.now_ms:
            hb = heapq.heappop(self.heartbeats)
            node = self.nodes[hb.dst]
            if node.raft is None:
                continue  # lost with the node; the broker sends again
            image = self.images[node.id]
            judged = None
            if node.raft.role == Role.LEADER:
                judged = self.duties[node.id].heartbeat(image, hb.broker, f"inc-{hb.broker}", hb.offset, self.now_ms)
            if judged is None:
                if node.raft.leader and node.raft.leader != node.id:
                    self._queue(hb.broker, node.raft.leader, hb.offset)  # forwarded to the leader
                continue
            reply, proposals = judged
            if not reply.message.startswith(f"broker {hb.broker} is not registered"):
                self.heard[(node.id, hb.broker)] = self.now_ms
            for proposal in proposals:
                self.propose(node, proposal)

    def step(self, chaos: bool) -> None:
        super().step(chaos)
        self._send_heartbeats()
        self._deliver_heartbeats()
        for node in self.live():
            self._tick_duties(node)

    # ---- set-up and what a run shows -----------------------------------------------------------------------

    def register_brokers(self, deadline_ms: int) -> None:
        """Until every broker is registered: its RegisterBroker proposed by whichever node leads."""
        while len(self.active_image().brokers) < self.brokers:
            if self.now_ms >= deadline_ms:
                self.fail("brokers not registered in time")
            leader = self.leader()
            if leader is not None and leader.raft is not None and self.now_ms % 100 == 0:
                for b in range(self.brokers):
                    cmd = RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}")
                    if validate(self.images[leader.id], cmd) is None:
                        try:
                            leader.raft.propose(encode_command(cmd))
                        except (NotLeader, ProposalDropped):
                            break
                self.process(leader)
            self.step(chaos=False)

    def active_image(self) -> MetadataImage:
        return self.images_at[max(self.images_at)]


def run(seed: int, stop_ms: int = 2000, chaos_ms: int = 8000, heal_ms: int = 12000) -> DutiesCluster:
    """Broker 1 dies ``stop_ms`` after registration; chaos (crashes, partitions, drops, delays: raft_sim's faults)
    until ``chaos_ms``, then a healed network for ``heal_ms``. At the end broker 1 is fenced and the others are not."""
    cluster = DutiesCluster(seed)
    cluster.register_brokers(deadline_ms=20000)
    cluster.stop_at[1] = cluster.now_ms + stop_ms
    end_chaos = cluster.now_ms + chaos_ms
    while cluster.now_ms < end_chaos:
        cluster.step(chaos=True)
    cluster.heal()
    end = cluster.now_ms + heal_ms
    while cluster.now_ms < end:
        cluster.step(chaos=False)
    brokers = cluster.active_image().brokers
    if not brokers[1].fenced:
        cluster.fail("the broker that stopped heartbeating is not fenced")
    if brokers[0].fenced or brokers[2].fenced:
        cluster.fail(f"a heartbeating broker is fenced at the end: {brokers}")
    return cluster
