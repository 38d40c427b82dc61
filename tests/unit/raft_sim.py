"""Deterministic simulation of a Raft cluster (in the manner of Kafka's RaftEventSimulationTest and TigerBeetle's VOPR).

Every source of nondeterminism comes from one seeded ``random.Random``: message drops, duplicates, delays (so also
reordering), symmetric and one-way partitions, crashes that lose whatever was not fsynced, restarts, proposals,
membership changes, leadership transfers and ReadIndex reads. The clock is simulated. The invariants of the Raft
paper (figure 3) are checked after every step; ``run(seed)`` raises ``InvariantViolation`` naming the seed, and the
same seed replays the same run.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from dataclasses import dataclass, field

import orjson

from controller.raft.messages import Message, decode, encode
from controller.raft.node import (
    ConfChangeError,
    ConfChangeOp,
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    Ready,
    Role,
)
from controller.raft.types import ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term

STEP_MS = 10


class InvariantViolation(AssertionError):
    pass


@dataclass
class DiskState:
    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]

    def copy(self) -> DiskState:
        return DiskState(self.hard_state, self.snapshot, list(self.entries))


class SimDisk:
    """What a node wrote (``view``) and what survives a crash (``synced``): only fsynced writes, and maybe the
    last unsynced hard-state write (a commit-index update), as a real disk might or might not have kept it."""

    def __init__(self, conf: ConfState) -> None:
        self.synced = DiskState(HardState(Term(0), NodeId(0), Index(0)), Snapshot(Index(0), Term(0), conf, b"[]"), [])
        self.view = self.synced.copy()

    def persist(self, rd: Ready) -> None:
        v = self.view
        if rd.snapshot is not None:
            v.snapshot = rd.snapshot
            v.entries = []
        if rd.entries:
            first = rd.entries[0].index
            v.entries = [e for e in v.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            v.hard_state = rd.hard_state
        if rd.must_sync:
            self.synced = v.copy()

    def save_snapshot(self, snap: Snapshot) -> None:
        """Compaction: the snapshot file is fsynced first, then the log before it is dropped."""
        for state in (self.view, self.synced):
            state.snapshot = snap
            state.entries = [e for e in state.entries if e.index > snap.index]

    def crash(self, rng: random.Random) -> None:
        hs, synced = self.view.hard_state, self.synced.hard_state
        if rng.random() < 0.5 and (hs.term, hs.vote) == (synced.term, synced.vote):
            self.synced.hard_state = hs
        self.view = self.synced.copy()


@dataclass
class SimNode:
    id: NodeId
    disk: SimDisk
    raft: RaftNode | None = None  # None while crashed
    incarnation: int = 0
    applied: list[str] = field(default_factory=list)  # the state machine: every NORMAL entry's value, in order
    applied_index: int = 0
    proposals: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (term, value), this life only
    reads: dict[int, int] = field(default_factory=dict)  # ctx -> highest index acknowledged when the read began
    last_commit: int = 0


@dataclass
class Faults:
    drop: float
    duplicate: float
    delay_ms_max: int
    crash: float
    partition: float

    @classmethod
    def draw(cls, rng: random.Random) -> Faults:
        return cls(
            drop=rng.choice([0.0, 0.01, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            delay_ms_max=rng.choice([1, 20, 60, 200]),
            crash=rng.choice([0.0, 0.002, 0.01]),
            partition=rng.choice([0.0, 0.005, 0.02]),
        )


class Cluster:
    def __init__(self, seed: int, voters: int = 3, spare: int = 2, faults: Faults | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.faults = faults or Faults.draw(self.rng)
        conf = ConfState(frozenset(NodeId(i) for i in range(1, voters + 1)))
        self.nodes = {NodeId(i): SimNode(NodeId(i), SimDisk(conf)) for i in range(1, voters + spare + 1)}
        self.config = RaftConfig(NodeId(1), election_timeout_ms=300, heartbeat_interval_ms=50)
        self.inflight: list[tuple[int, int, bytes]] = []  # (deliver_at_ms, sequence, encoded message)
        self.seq = 0
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.leaders: dict[int, NodeId] = {}  # term -> the node that led it
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, data) once any node committed
        self.commit_terms: dict[int, int] = {}  # index -> the term of the leader that committed it
        self.applied: dict[int, str] = {}  # index -> value, once any node applied it
        self.acked: dict[str, int] = {}  # value -> index, for proposals whose proposer saw them commit
        self.next_value = 0
        self.next_ctx = 0
        self.reads_served = 0
        self.elections = 0
        for node in self.nodes.values():
            self._start(node)

    # ---- nodes ---------------------------------------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        d = node.disk.view
        cfg = dataclasses.replace(self.config, node_id=node.id)
        rng = random.Random(self.seed * 7919 + node.id * 104729 + node.incarnation)
        node.raft = RaftNode(cfg, rng, self.now_ms, d.hard_state, d.snapshot, list(d.entries))
        node.applied = orjson.loads(d.snapshot.data)
        node.applied_index = d.snapshot.index
        node.proposals = {}
        node.reads = {}
        node.last_commit = node.raft.commit

    def crash(self, node: SimNode) -> None:
        node.raft = None
        node.disk.crash(self.rng)
        node.incarnation += 1

    def restart(self, node: SimNode) -> None:
        self._start(node)

    def heal(self) -> None:
        """End the chaos: every link back, every crashed node restarted, no more drops, crashes or partitions."""
        self.blocked.clear()
        for node in self.nodes.values():
            if node.raft is None:
                self.restart(node)
        self.faults = dataclasses.replace(self.faults, drop=0.0, crash=0.0, partition=0.0)

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def leader(self) -> SimNode | None:
        leaders = [n for n in self.live() if n.raft is not None and n.raft.role == Role.LEADER]
        return max(leaders, key=lambda n: n.raft.term if n.raft else 0) if leaders else None

    # ---- network -------------------------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        if (msg.src, msg.dst) in self.blocked or self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        data = encode(msg)  # the real wire format, decoded again on delivery
        for _ in range(copies):
            self.seq += 1
            at = self.now_ms + self.rng.randint(1, self.faults.delay_ms_max)
            heapq.heappush(self.inflight, (at, self.seq, data))

    def deliver_due(self) -> None:
        while self.inflight and self.inflight[0][0] <= self.now_ms:
            _, _, data = heapq.heappop(self.inflight)
            msg = decode(data)
            node = self.nodes.get(msg.dst)
            if node is None or node.raft is None or (msg.src, msg.dst) in self.blocked:
                continue
            node.raft.step(msg)
            self.process(node)

    # ---- the shell: persist, send, apply -------------------------------------------------------------------

    def process(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            node.disk.persist(rd)
            for msg in rd.messages:
                self.send(msg)
            if rd.snapshot is not None:
                self._restore(node, rd.snapshot)
            for entry in rd.committed:
                self._apply(node, entry)
            for rs in rd.read_states:
                floor = node.reads.pop(rs.ctx, None)
                if floor is None:
                    continue
                if rs.index < floor:
                    self.fail(f"read {rs.ctx} on node {node.id} at index {rs.index} misses a write acked at {floor}")
                self.reads_served += 1
            self.check_node(node)
        if raft.applied - raft.snapshot.index > 40 and self.rng.random() < 0.2:
            snap = raft.compact(raft.applied, orjson.dumps(node.applied))
            node.disk.save_snapshot(snap)

    def _restore(self, node: SimNode, snap: Snapshot) -> None:
        values: list[str] = orjson.loads(snap.data)
        expected = [self.applied[i] for i in sorted(self.applied) if i <= snap.index]
        if values != expected:
            self.fail(f"snapshot at {snap.index} received by node {node.id} disagrees with what was applied")
        node.applied = values
        node.applied_index = snap.index

    def _apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index != node.applied_index + 1:
            self.fail(f"node {node.id} applied index {entry.index} after {node.applied_index}")
        node.applied_index = entry.index
        if entry.kind != EntryKind.NORMAL:
            return
        value = entry.data.decode()
        prior = self.applied.setdefault(entry.index, value)
        if prior != value:
            self.fail(f"state machine safety: index {entry.index} applied as {prior!r} and as {value!r}")
        node.applied.append(value)
        proposal = node.proposals.pop(entry.index, None)
        if proposal is not None and proposal == (entry.term, value):
            self.acked[value] = entry.index

    # ---- invariants ----------------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"seed {self.seed} at {self.now_ms} ms: {what} (faults {self.faults})")

    def check_node(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        if raft.role == Role.LEADER:
            other = self.leaders.setdefault(raft.term, node.id)
            if other != node.id:
                self.fail(f"election safety: nodes {other} and {node.id} both lead term {raft.term}")
        if raft.commit < node.last_commit:
            self.fail(f"node {node.id} commit went back from {node.last_commit} to {raft.commit}")
        for index in range(max(node.last_commit + 1, raft.snapshot.index + 1), raft.commit + 1):
            e = raft.entries(index, index)[0]
            record = (e.term, int(e.kind), e.data)
            prior = self.committed.setdefault(index, record)
            # The first node to see an entry committed is the leader that committed it: note its term.
            self.commit_terms.setdefault(index, raft.term)
            if prior != record:
                self.fail(f"committed entry {index} changed from {prior} to {record} on node {node.id}")
        node.last_commit = raft.commit

    def max_committed(self) -> int:
        return len(self.committed)  # committed indexes are 1..n: a node commits a prefix

    def check_cluster(self) -> None:
        live = [n for n in self.live() if n.raft is not None]
        for n in live:
            raft = n.raft
            assert raft is not None
            if raft.role == Role.LEADER:
                # Leader completeness: an entry committed in some term is in the log of every leader of a later
                # term (unless that leader compacted it into its snapshot).
                for index in range(raft.snapshot.index + 1, self.max_committed() + 1):
                    if self.commit_terms[index] < raft.term and raft.term_at(index) != self.committed[index][0]:
                        self.fail(f"leader completeness: leader {n.id} of term {raft.term} lacks entry {index}")
        # Log matching: same index and term means same entry and the same log before it.
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                ra, rb = a.raft, b.raft
                assert ra is not None and rb is not None
                lo = max(ra.snapshot.index, rb.snapshot.index) + 1
                hi = min(ra.last_index, rb.last_index)
                top = next((i for i in range(hi, lo - 1, -1) if ra.term_at(i) == rb.term_at(i)), lo - 1)
                if top >= lo and ra.entries(lo, top) != rb.entries(lo, top):
                    self.fail(f"log matching: nodes {a.id} and {b.id} agree at {top} but differ before it")

    # ---- the workload --------------------------------------------------------------------------------------

    def step(self, chaos: bool) -> None:
        self.now_ms += STEP_MS
        self.deliver_due()
        for node in self.live():
            assert node.raft is not None
            node.raft.tick(self.now_ms)
            self.process(node)
        if chaos:
            self._chaos()
            self._client()
        self.check_cluster()

    def _chaos(self) -> None:
        rng, f = self.rng, self.faults
        for node in self.nodes.values():
            if node.raft is not None and rng.random() < f.crash:
                self.crash(node)
            elif node.raft is None and rng.random() < 0.02:
                self.restart(node)
        if rng.random() < f.partition:
            ids = list(self.nodes)
            a, b = rng.sample(ids, 2)
            self.blocked.add((a, b))
            if rng.random() < 0.7:
                self.blocked.add((b, a))  # otherwise one-way: a cannot reach b, b reaches a
        if self.blocked and rng.random() < 0.02:
            self.blocked.clear()

    def _client(self) -> None:
        rng = self.rng
        node = self.leader()
        if node is None or node.raft is None:
            return
        raft = node.raft
        try:
            if rng.random() < 0.3:
                for _ in range(rng.randint(1, 4)):
                    self.next_value += 1
                    value = f"v{self.next_value}"
                    index = raft.propose(value.encode())
                    node.proposals[index] = (raft.term, value)
            if rng.random() < 0.05:
                self.next_ctx += 1
                node.reads[self.next_ctx] = max(self.acked.values(), default=0)
                raft.read_index(self.next_ctx)
            r = rng.random()
            if r < 0.01:
                target = rng.choice(sorted(raft.conf.voters))
                raft.transfer_leadership(target)
            elif r < 0.02:
                self._membership(node)
        except (NotLeader, ProposalDropped, ConfChangeError):
            pass
        self.process(node)

    def _membership(self, node: SimNode) -> None:
        raft = node.raft
        assert raft is not None
        conf = raft.conf
        outside = sorted(set(self.nodes) - conf.members)
        if conf.learners:
            raft.propose_conf_change(ConfChangeOp.PROMOTE, min(conf.learners))
        elif outside and len(conf.voters) < 5:
            raft.propose_conf_change(ConfChangeOp.ADD_LEARNER, outside[0])
        elif len(conf.voters) > 3:
            raft.propose_conf_change(ConfChangeOp.REMOVE, self.rng.choice(sorted(conf.voters)))

    # ---- a whole run ---------------------------------------------------------------------------------------

    def converged(self) -> bool:
        leader = self.leader()
        if leader is None or leader.raft is None:
            return False
        raft = leader.raft
        members = [self.nodes[n] for n in raft.conf.members]
        return raft.term_at(raft.commit) == raft.term and all(
            n.raft is not None and n.raft.applied == raft.last_index and n.applied_index == raft.last_index
            for n in members
        )


def run(seed: int, chaos_ms: int = 4000, heal_ms_max: int = 20000) -> Cluster:
    """Chaos for ``chaos_ms``, then heal the network and restart every node; everything acknowledged must then be
    applied, exactly once and in one order, on every member."""
    cluster = Cluster(seed)
    while cluster.now_ms < chaos_ms:
        cluster.step(chaos=True)
    cluster.heal()
    deadline = cluster.now_ms + heal_ms_max
    while not cluster.converged():
        if cluster.now_ms >= deadline:
            cluster.fail(f"no convergence {heal_ms_max} ms after healing")
        cluster.step(chaos=False)
    leader = cluster.leader()
    assert leader is not None and leader.raft is not None
    expected = [cluster.applied[i] for i in sorted(cluster.applied)]
    for n in leader.raft.conf.members:
        node = cluster.nodes[n]
        if node.applied != expected:
            cluster.fail(f"node {n} applied {len(node.applied)} values, the cluster {len(expected)}")
        if len(set(node.applied)) != len(node.applied):
            cluster.fail(f"node {n} applied a value twice")
        missing = set(cluster.acked) - set(node.applied)
        if missing:
            cluster.fail(f"acknowledged values missing on node {n}: {sorted(missing)[:5]}")
    return cluster
