"""The partition balancer (Redpanda's continuous data balancing, Kafka's auto leader rebalance), sans-IO.

Runs in the controller process of every node; proposes only on the active controller (``controller.leader_duties``
owns it and calls ``tick`` while active). Pure: it is given the applied image and ``now_ms`` from the controller's
monotonic clock and returns commands; the shell proposes them and calls ``done`` when each committed or failed.

What it does, in order of priority, with at most ``moves_max`` commands of its own in flight (reassignments still
copying data count until they complete, so a joining node fills a few partitions at a time):

1. **Unavailable nodes.** A node all of whose brokers have been fenced for ``node_unavailable_timeout_ms`` (as this
   process saw the fences applied: a controller that starts or restarts times them from then) is gone: each of its
   replicas is re-created on another node (``controller.placement.replacement_moves``: the reassignment machinery,
   so the new replica copies the log from the leader before the old one leaves the replica list). Partitions
   without a leader stay put: nothing could copy their data.
2. **Replica counts.** Among usable brokers (registered, unfenced, not in maintenance or decommissioning), a replica
   moves from the broker with the most replicas to one with at least two fewer, on a node the partition does not
   use, until every such pair is within one, or no partition can move (only fully in-sync partitions move, and two
   replicas of one partition never share a node). A node that joins gets replicas this way.
3. **Leader counts.** Leadership moves from the usable broker leading the most partitions to an in-sync usable
   replica leading at least two fewer (``ElectLeader``, no data copied), until every pair is within one.

Each command is decided on the image it names (the reassignment's replicas, the election's partition epoch), and
the state machine refuses one whose partition changed meanwhile; the next tick decides again.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable, Set
from dataclasses import dataclass

from controller.commands import Command, ElectLeader, ReassignPartition
from controller.image import MetadataImage, PartitionImage
from controller.placement import replacement_moves, usable_brokers

TICK_INTERVAL_MS = 1000
MOVES_MAX = 8
NODE_UNAVAILABLE_TIMEOUT_MS = 900_000  # Redpanda's partition_autobalancing_node_availability_timeout_sec

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BalancerSettings:
    enabled: bool = True
    node_unavailable_timeout_ms: int = NODE_UNAVAILABLE_TIMEOUT_MS
    moves_max: int = MOVES_MAX  # commands of the balancer's own in flight, reassignments until they complete
    tick_interval_ms: int = TICK_INTERVAL_MS


class BalancerState(enum.Enum):
    OFF = "off"  # disabled by configuration
    READY = "ready"  # balanced as far as moves can (replicas of one partition never share a node)
    IN_PROGRESS = "in_progress"  # moves in flight or still to make
    STALLED = "stalled"  # a gone node's replicas cannot be re-created (no other node to take them, or no leader)


@dataclass(frozen=True, slots=True)
class BrokerLoad:
    broker_id: int
    node_id: int
    replicas: int  # partitions listing it once reassignments in flight complete
    leaders: int
    usable: bool
    fenced_for_ms: int | None  # how long it has been fenced, as this process saw (None: not fenced)


@dataclass(frozen=True, slots=True)
class UnavailableNode:
    node_id: int
    brokers: tuple[int, ...]
    unavailable_for_ms: int
    recreate_in_ms: int  # until its replicas are re-created elsewhere (0: being re-created)


@dataclass(frozen=True, slots=True)
class Reassignment:
    topic: str
    partition: int
    replicas: tuple[int, ...]  # the target replica list
    adding: tuple[int, ...]
    removing: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BalancerStatus:
    state: BalancerState
    active: bool  # this node is the active controller, whose balancer proposes
    brokers: tuple[BrokerLoad, ...]
    replica_spread: int  # most minus fewest replicas over usable brokers
    leader_spread: int
    unavailable_nodes: tuple[UnavailableNode, ...]
    reassignments: tuple[Reassignment, ...]  # in progress (anyone's: the balancer's, an operator's, a drain)
    planned_moves: int  # what the next tick would propose now (at most the free slots)
    proposals_in_flight: int
    replica_moves_total: int  # proposed by this process's balancer
    leader_moves_total: int
    recreate_moves_total: int
    since_last_tick_ms: int | None  # None: it has not run on this node since it became active


def _nodes_of(image: MetadataImage, p: PartitionImage) -> set[int]:
    return {image.brokers[r].node for r in p.replicas if r in image.brokers}


def _partitions(image: MetadataImage) -> Iterable[tuple[str, PartitionImage]]:
    for topic in sorted(image.topics.values(), key=lambda t: t.name):
        for p in topic.partitions:
            yield topic.name, p


def loads(image: MetadataImage) -> tuple[collections.Counter[int], collections.Counter[int]]:
    """(replicas, leaders) per registered broker, replicas counted as they will be once reassignments complete."""
    replicas: collections.Counter[int] = collections.Counter({b: 0 for b in image.brokers})
    leaders: collections.Counter[int] = collections.Counter({b: 0 for b in image.brokers})
    for _, p in _partitions(image):
        replicas.update(p.target_replicas)
        if p.leader >= 0:
            leaders[p.leader] += 1
    return replicas, leaders


def _spread(counts: collections.Counter[int], brokers: list[int]) -> int:
    return max(counts[b] for b in brokers) - min(counts[b] for b in brokers) if brokers else 0


def replica_moves(image: MetadataImage, limit: int, skip: set[PartitionKey]) -> list[ReassignPartition]:
    """At most ``limit`` reassignments, each moving one replica from a usable broker to a usable broker with at
    least two fewer replicas (most loaded source first, least loaded destination first)."""
    usable = usable_brokers(image)
    if len(usable) < 2 or limit <= 0:
        return []
    counts, _ = loads(image)
    node_of = {b: image.brokers[b].node for b in usable}
    rack_of = {b: image.brokers[b].rack for b in usable}
    on_broker: dict[int, list[tuple[str, PartitionImage]]] = {b: [] for b in usable}
    for name, p in _partitions(image):
        # Only settled, fully in-sync partitions with a leader move: the new replica copies from the leader, and an
        # under-replicated partition has better things to do.
        if p.adding or p.leader < 0 or len(p.isr) != len(p.replicas) or (name, p.partition) in skip:
            continue
        for r in p.replicas:
            if r in on_broker:
                on_broker[r].append((name, p))
    moved: set[PartitionKey] = set()
    out: list[ReassignPartition] = []
    while len(out) < limit:
        move = _one_replica_move(image, usable, counts, node_of, rack_of, on_broker, moved)
        if move is None:
            break
        out.append(move)
    return out


def _one_replica_move(
    image: MetadataImage,
    usable: list[int],
    counts: collections.Counter[int],
    node_of: dict[int, int],
    rack_of: dict[int, str | None],
    on_broker: dict[int, list[tuple[str, PartitionImage]]],
    moved: set[PartitionKey],
) -> ReassignPartition | None:
    for src in sorted(usable, key=lambda b: (-counts[b], b)):
        for dst in sorted(usable, key=lambda b: (counts[b], b)):
            if counts[src] - counts[dst] < 2:
                break
            best: tuple[tuple[bool, bool], str, PartitionImage] | None = None
            for name, p in on_broker[src]:
                if (name, p.partition) in moved or node_of[dst] in _nodes_of(image, p):
                    continue
                others = [r for r in p.replicas if r != src]
                rack_clash = rack_of[dst] is not None and rack_of[dst] in {rack_of.get(r) for r in others}
                key = (rack_clash, p.leader == src)  # keep racks spread, and leadership where it is
                if best is None or key < best[0]:
                    best = (key, name, p)
                    if key == (False, False):
                        break
            if best is not None:
                _, name, p = best
                moved.add((name, p.partition))
                counts[src] -= 1
                counts[dst] += 1
                target = tuple(dst if r == src else r for r in p.replicas)
                return ReassignPartition(name, p.partition, target)
    return None


def leader_moves(image: MetadataImage, limit: int, skip: set[PartitionKey]) -> list[ElectLeader]:
    """At most ``limit`` elections, each moving leadership from a usable broker to an in-sync usable replica that
    leads at least two fewer partitions."""
    usable = usable_brokers(image)
    if len(usable) < 2 or limit <= 0:
        return []
    _, leaders = loads(image)
    led_by: dict[int, list[tuple[str, PartitionImage]]] = {b: [] for b in usable}
    for name, p in _partitions(image):
        if p.leader in led_by and not p.adding and (name, p.partition) not in skip:
            led_by[p.leader].append((name, p))
    out: list[ElectLeader] = []
    moved: set[PartitionKey] = set()
    while len(out) < limit:
        election = _one_leader_move(usable, leaders, led_by, moved)
        if election is None:
            break
        out.append(election)
    return out


def _one_leader_move(
    usable: list[int],
    leaders: collections.Counter[int],
    led_by: dict[int, list[tuple[str, PartitionImage]]],
    moved: set[PartitionKey],
) -> ElectLeader | None:
    usable_set = set(usable)
    for src in sorted(usable, key=lambda b: (-leaders[b], b)):
        for dst in sorted(usable, key=lambda b: (leaders[b], b)):
            if leaders[src] - leaders[dst] < 2:
                break
            for name, p in led_by[src]:
                if (name, p.partition) not in moved and dst in p.isr and dst in usable_set:
                    moved.add((name, p.partition))
                    leaders[src] -= 1
                    leaders[dst] += 1
                    return ElectLeader(name, p.partition, dst, p.partition_epoch)
    return None


def _past_timeout(unavailable: Iterable[UnavailableNode]) -> set[int]:
    """The brokers of the nodes in ``unavailable`` whose replicas are due to be re-created."""
    return {b for u in unavailable if u.recreate_in_ms == 0 for b in u.brokers}


class PartitionBalancer:
    def __init__(self, settings: BalancerSettings) -> None:
        assert settings.moves_max > 0 and settings.tick_interval_ms > 0 and settings.node_unavailable_timeout_ms > 0
        self.settings = settings
        self._fenced_since: dict[int, int] = {}  # broker -> when this process first saw it fenced
        self._in_flight: dict[PartitionKey, Command] = {}  # proposed, not yet committed or failed
        self._next_tick_ms = 0
        self._last_tick_ms: int | None = None
        self.replica_moves_total = 0
        self.leader_moves_total = 0
        self.recreate_moves_total = 0

    def observe(self, image: MetadataImage, now_ms: int) -> None:
        """Note which brokers are fenced, on every node and whether active or not: a node that becomes the active
        controller knows how long a node has been gone."""
        for b, reg in image.brokers.items():
            if reg.fenced:
                self._fenced_since.setdefault(b, now_ms)
            else:
                self._fenced_since.pop(b, None)
        for b in [b for b in self._fenced_since if b not in image.brokers]:
            del self._fenced_since[b]

    def deactivate(self) -> None:
        """This node stopped being the active controller: the next activation starts with a fresh tick."""
        self._last_tick_ms = None
        self._next_tick_ms = 0

    def unavailable_nodes(self, image: MetadataImage, now_ms: int) -> list[UnavailableNode]:
        """Nodes every registered broker of which is fenced, longest gone first."""
        by_node: dict[int, list[int]] = collections.defaultdict(list)
        for b, reg in image.brokers.items():
            by_node[reg.node].append(b)
        out = []
        timeout = self.settings.node_unavailable_timeout_ms
        for node, brokers in by_node.items():
            if all(b in self._fenced_since for b in brokers):
                gone_ms = now_ms - max(self._fenced_since[b] for b in brokers)
                out.append(UnavailableNode(node, tuple(sorted(brokers)), gone_ms, max(0, timeout - gone_ms)))
        return sorted(out, key=lambda u: (-u.unavailable_for_ms, u.node_id))

    def _busy(self, image: MetadataImage, skip: Set[PartitionKey]) -> tuple[set[PartitionKey], int]:
        """Partitions not to touch now, and the free slots."""
        reassigning = {(n, p.partition) for n, p in _partitions(image) if p.adding}
        busy = reassigning | set(self._in_flight) | set(skip)
        in_flight = len(reassigning | {k for k, c in self._in_flight.items() if isinstance(c, ReassignPartition)})
        in_flight += sum(1 for c in self._in_flight.values() if isinstance(c, ElectLeader))
        return busy, max(0, self.settings.moves_max - in_flight)

    def plan(self, image: MetadataImage, now_ms: int, skip: Set[PartitionKey] = frozenset()) -> list[Command]:
        """What to propose now, leaving ``skip`` alone (pure: ``tick`` records it as in flight)."""
        if not self.settings.enabled:
            return []
        busy, free = self._busy(image, skip)
        if free <= 0:
            return []
        gone = self._gone(image, now_ms)
        leaderless = {(n, p.partition) for n, p in _partitions(image) if p.leader < 0}
        recreate = replacement_moves(image, gone, free, busy | leaderless)
        # Counts are judged once no node's replicas are being re-created this tick.
        moves = recreate or replica_moves(image, free, busy)
        skip = busy | {(m.topic, m.partition) for m in moves}
        elections = leader_moves(image, free - len(moves), skip)
        return [*moves, *elections]

    def _gone(self, image: MetadataImage, now_ms: int) -> set[int]:
        """Brokers of nodes unavailable for longer than the timeout."""
        return _past_timeout(self.unavailable_nodes(image, now_ms))

    def tick(self, image: MetadataImage, now_ms: int, skip: Set[PartitionKey] = frozenset()) -> list[Command]:
        """Time passed on the active controller: the commands to propose (each passed back to ``done``), leaving
        ``skip`` (partitions others are changing) alone."""
        if now_ms < self._next_tick_ms:
            return []
        self._next_tick_ms = now_ms + self.settings.tick_interval_ms
        self._last_tick_ms = now_ms
        gone = self._gone(image, now_ms)
        out = self.plan(image, now_ms, skip)
        for cmd in out:
            assert isinstance(cmd, ReassignPartition | ElectLeader)
            self._in_flight[(cmd.topic, cmd.partition)] = cmd
            if isinstance(cmd, ElectLeader):
                self.leader_moves_total += 1
            elif gone.intersection(image.topics[cmd.topic].partitions[cmd.partition].replicas):
                self.recreate_moves_total += 1
            else:
                self.replica_moves_total += 1
        return out

    def done(self, cmd: Command) -> None:
        assert isinstance(cmd, ReassignPartition | ElectLeader)
        self._in_flight.pop((cmd.topic, cmd.partition), None)

    def status(self, image: MetadataImage, now_ms: int, active: bool) -> BalancerStatus:
        replicas, leaders = loads(image)
        usable = usable_brokers(image)
        brokers = tuple(
            BrokerLoad(
                b,
                reg.node,
                replicas[b],
                leaders[b],
                reg.usable,
                None if b not in self._fenced_since else now_ms - self._fenced_since[b],
            )
            for b, reg in sorted(image.brokers.items())
        )
        reassignments = tuple(
            Reassignment(n, p.partition, p.target_replicas, p.adding, p.removing)
            for n, p in _partitions(image)
            if p.adding or p.removing
        )
        unavailable = tuple(self.unavailable_nodes(image, now_ms))
        planned = len(self.plan(image, now_ms))
        if not self.settings.enabled:
            state = BalancerState.OFF
        elif reassignments or self._in_flight or planned:
            state = BalancerState.IN_PROGRESS
        elif (gone := _past_timeout(unavailable)) and any(
            not gone.isdisjoint(p.replicas) for _, p in _partitions(image)
        ):
            state = BalancerState.STALLED
        else:
            state = BalancerState.READY
        return BalancerStatus(
            state=state,
            active=active,
            brokers=brokers,
            replica_spread=_spread(replicas, usable),
            leader_spread=_spread(leaders, usable),
            unavailable_nodes=unavailable,
            reassignments=reassignments,
            planned_moves=planned,
            proposals_in_flight=len(self._in_flight),
            replica_moves_total=self.replica_moves_total,
            leader_moves_total=self.leader_moves_total,
            recreate_moves_total=self.recreate_moves_total,
            since_last_tick_ms=None if self._last_tick_ms is None else now_ms - self._last_tick_ms,
        )
