"""The partition balancer (controller/balancer.py), driven against the real state machine with a fake clock: new
replicas "catch up" when the test says so, as a partition's leader would report with AlterPartition."""

from __future__ import annotations

import collections
import uuid

from controller.balancer import BalancerSettings, BalancerState, PartitionBalancer
from controller.commands import (
    AlterPartition,
    Command,
    CreateTopic,
    ElectLeader,
    FenceBroker,
    ReassignPartition,
    RegisterBroker,
    SetBrokerMaintenance,
    UnfenceBroker,
)
from controller.image import MetadataImage
from controller.placement import place_partitions
from controller.state_machine import RejectKind, apply, validate

TICK_MS = 1000
TIMEOUT_MS = 60_000


class Sim:
    """A metadata image, a balancer and a clock; what the balancer proposes is validated and applied in order."""

    def __init__(self, settings: BalancerSettings | None = None) -> None:
        self.image = MetadataImage(offset=0, cluster_id="c")
        self.balancer = PartitionBalancer(
            settings or BalancerSettings(node_unavailable_timeout_ms=TIMEOUT_MS, moves_max=4, tick_interval_ms=TICK_MS)
        )
        self.now_ms = 0
        self.refused: list[Command] = []
        self.proposed: list[Command] = []
        self.max_reassigning = 0

    def do(self, *commands: Command) -> None:
        for cmd in commands:
            rejection = validate(self.image, cmd)
            assert rejection is None, rejection
            self.image = apply(self.image, cmd, self.image.offset + 1)

    def register(self, broker: int, node: int | None = None, rack: str | None = None) -> None:
        node = broker if node is None else node
        self.do(RegisterBroker(broker, "127.0.0.1", 9092 + broker, rack, f"inc-{broker}", node_id=node))

    def topic(self, name: str, partitions: int, rf: int) -> None:
        self.do(CreateTopic(name, uuid.uuid4(), place_partitions(self.image, partitions, rf), ()))

    def catch_up(self) -> None:
        """Every replica of every partition with a leader is in sync (the new ones copied the log)."""
        for name, topic in self.image.topics.items():
            for p in topic.partitions:
                alive = tuple(r for r in p.replicas if not self.image.brokers[r].fenced)
                if p.leader >= 0 and set(p.isr) != set(alive):
                    self.do(AlterPartition(name, p.partition, p.leader, p.leader_epoch, p.partition_epoch, alive))

    def tick(self, catch_up: bool = True) -> list[Command]:
        self.balancer.observe(self.image, self.now_ms)
        out = self.balancer.tick(self.image, self.now_ms)
        for cmd in out:
            if validate(self.image, cmd) is None:
                self.image = apply(self.image, cmd, self.image.offset + 1)
            else:
                self.refused.append(cmd)
            self.balancer.done(cmd)
        self.proposed += out
        reassigning = sum(1 for t in self.image.topics.values() for p in t.partitions if p.adding)
        self.max_reassigning = max(self.max_reassigning, reassigning)
        if catch_up:
            self.catch_up()
        self.now_ms += TICK_MS
        return out

    def settle(self, ticks_max: int = 200) -> int:
        """Ticks until the balancer proposes nothing more; how many."""
        for n in range(ticks_max):
            if not self.tick():
                return n
        raise AssertionError(f"still moving after {ticks_max} ticks: {self.proposed[-5:]}")

    def counts(self) -> tuple[collections.Counter[int], collections.Counter[int]]:
        replicas: collections.Counter[int] = collections.Counter({b: 0 for b in self.image.brokers})
        leaders: collections.Counter[int] = collections.Counter({b: 0 for b in self.image.brokers})
        for t in self.image.topics.values():
            for p in t.partitions:
                replicas.update(p.replicas)
                leaders[p.leader] += 1
        return replicas, leaders

    def assert_placement_valid(self, rf: int) -> None:
        for t in self.image.topics.values():
            for p in t.partitions:
                nodes = [self.image.brokers[r].node for r in p.replicas]
                assert len(p.replicas) == rf and len(set(nodes)) == rf, p
                assert not p.adding and not p.removing, p
                assert p.leader in p.isr, p


def _spread(counter: collections.Counter[int], brokers: list[int]) -> int:
    return max(counter[b] for b in brokers) - min(counter[b] for b in brokers)


def test_a_node_that_joins_gets_its_share_of_replicas_and_leaders_a_few_moves_at_a_time() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("orders", 12, 3)
    sim.topic("logs", 5, 2)
    assert sim.tick() == []  # balanced at creation
    sim.register(3)
    sim.settle()
    replicas, leaders = sim.counts()
    assert replicas[3] > 0 and _spread(replicas, [0, 1, 2, 3]) <= 1, replicas
    assert leaders[3] > 0 and _spread(leaders, [0, 1, 2, 3]) <= 1, leaders
    for name, rf in (("orders", 3), ("logs", 2)):
        for p in sim.image.topics[name].partitions:
            assert len(p.replicas) == rf and len({sim.image.brokers[r].node for r in p.replicas}) == rf
            assert not p.adding and p.leader in p.isr
    assert sim.max_reassigning <= 4  # moves_max
    assert not sim.refused
    status = sim.balancer.status(sim.image, sim.now_ms, active=True)
    assert status.state is BalancerState.READY and status.replica_spread <= 1 and status.leader_spread <= 1
    assert status.replica_moves_total > 0 and status.leader_moves_total >= 0


def test_moves_are_throttled_while_new_replicas_copy_the_log() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("t", 30, 3)
    sim.register(3)
    first = sim.tick(catch_up=False)
    assert len([c for c in first if isinstance(c, ReassignPartition)]) == 4
    for _ in range(5):  # the new replicas have not caught up: nothing more is proposed
        assert [c for c in sim.tick(catch_up=False) if isinstance(c, ReassignPartition)] == []
    status = sim.balancer.status(sim.image, sim.now_ms, active=True)
    assert status.state is BalancerState.IN_PROGRESS and len(status.reassignments) == 4
    assert all(r.adding == (3,) for r in status.reassignments)
    sim.catch_up()
    assert len([c for c in sim.tick() if isinstance(c, ReassignPartition)]) == 4  # the next few


def test_leaders_even_out_after_brokers_come_back_from_a_restart() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("t", 9, 3)
    sim.do(FenceBroker(1, "inc-1"), FenceBroker(2, "inc-2"))  # a rolling restart's worst moment
    assert sim.counts()[1][0] == 9
    assert sim.tick() == []  # only one usable broker: nothing to balance with
    sim.do(UnfenceBroker(1, "inc-1"), UnfenceBroker(2, "inc-2"))
    sim.catch_up()
    out = sim.settle()
    assert out > 0
    _, leaders = sim.counts()
    assert leaders == collections.Counter({0: 3, 1: 3, 2: 3}), leaders
    assert all(isinstance(c, ElectLeader) for c in sim.proposed)  # no data moved


def test_leadership_goes_only_to_in_sync_usable_replicas() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("t", 6, 2)
    sim.do(FenceBroker(1, "inc-1"))
    sim.do(UnfenceBroker(1, "inc-1"))  # back, but not caught up: not in any ISR yet
    sim.do(SetBrokerMaintenance(2, True))
    for cmd in sim.balancer.plan(sim.image, sim.now_ms):
        assert not isinstance(cmd, ElectLeader), cmd


def test_the_replicas_of_a_node_gone_longer_than_the_timeout_are_recreated_on_other_nodes() -> None:
    sim = Sim()
    for b in range(4):
        sim.register(b)
    sim.topic("t", 8, 3)
    sim.catch_up()
    sim.do(FenceBroker(3, "inc-3"))
    on_3 = [p.partition for p in sim.image.topics["t"].partitions if 3 in p.replicas]
    assert on_3
    while sim.now_ms < TIMEOUT_MS - TICK_MS:  # not yet: a restart is not a reason to copy data
        for cmd in sim.tick():
            assert not isinstance(cmd, ReassignPartition), cmd
    status = sim.balancer.status(sim.image, sim.now_ms, active=True)
    (gone,) = status.unavailable_nodes
    assert gone.node_id == 3 and 0 < gone.recreate_in_ms <= 2 * TICK_MS
    sim.now_ms += TICK_MS
    sim.settle()
    assert all(3 not in p.replicas for p in sim.image.topics["t"].partitions)
    sim.assert_placement_valid(3)
    status = sim.balancer.status(sim.image, sim.now_ms, active=True)
    assert status.recreate_moves_total == len(on_3) and status.state is BalancerState.READY
    # It comes back empty: the balancer gives it replicas again.
    sim.do(UnfenceBroker(3, "inc-3"))
    sim.settle()
    replicas, _ = sim.counts()
    assert _spread(replicas, [0, 1, 2, 3]) <= 1 and replicas[3] >= 5


def test_a_gone_nodes_replicas_stay_put_when_no_node_can_take_them_or_nothing_can_copy_them() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("t", 3, 3)
    sim.topic("solo", 1, 1)
    solo = sim.image.topics["solo"].partitions[0].replicas[0]
    sim.do(FenceBroker(solo, f"inc-{solo}"))
    assert sim.image.topics["solo"].partitions[0].leader == -1
    sim.balancer.observe(sim.image, sim.now_ms)
    sim.now_ms = TIMEOUT_MS + 1
    for _ in range(3):
        assert [c for c in sim.tick() if isinstance(c, ReassignPartition)] == []
    status = sim.balancer.status(sim.image, sim.now_ms, active=True)
    # Every other node holds a replica of "t" already; "solo" has no leader.
    assert status.state is BalancerState.STALLED


def test_a_node_gone_only_while_this_process_watched_counts_from_when_it_saw_the_fence() -> None:
    sim = Sim()
    for b in range(4):
        sim.register(b)
    sim.topic("t", 4, 3)
    sim.do(FenceBroker(3, "inc-3"))
    sim.now_ms = 10 * TIMEOUT_MS  # a controller that starts now has not seen how long it was gone
    assert [c for c in sim.tick() if isinstance(c, ReassignPartition)] == []
    (gone,) = sim.balancer.status(sim.image, sim.now_ms, active=True).unavailable_nodes
    assert gone.recreate_in_ms == TIMEOUT_MS - TICK_MS


def test_shards_of_one_node_never_hold_two_replicas_of_a_partition() -> None:
    sim = Sim()
    for b in range(6):
        sim.register(b, node=b // 2)  # three nodes of two shards
    sim.topic("t", 10, 2)
    for b in (6, 7):
        sim.register(b, node=3)  # a fourth node joins
    sim.settle()
    sim.assert_placement_valid(2)
    replicas, _ = sim.counts()
    assert replicas[6] + replicas[7] >= 4


def test_racks_stay_spread_when_a_move_can_keep_them() -> None:
    sim = Sim()
    for b, rack in enumerate(("a", "b", "a", "b")):
        sim.register(b, rack=rack)
    sim.topic("t", 8, 2)
    sim.register(4, rack="a")
    sim.register(5, rack="b")
    sim.settle()
    for p in sim.image.topics["t"].partitions:
        assert {sim.image.brokers[r].rack for r in p.replicas} == {"a", "b"}, p


def test_off_proposes_nothing() -> None:
    sim = Sim(BalancerSettings(enabled=False))
    for b in range(3):
        sim.register(b)
    sim.topic("t", 6, 1)
    sim.register(3)
    assert sim.tick() == []
    assert sim.balancer.status(sim.image, sim.now_ms, active=True).state is BalancerState.OFF


def test_an_election_decided_on_a_partition_that_changed_since_is_refused() -> None:
    sim = Sim()
    for b in range(3):
        sim.register(b)
    sim.topic("t", 1, 3)
    p = sim.image.topics["t"].partitions[0]
    target = next(r for r in p.replicas if r != p.leader)
    decided = ElectLeader("t", 0, target, p.partition_epoch)
    sim.do(AlterPartition("t", 0, p.leader, p.leader_epoch, p.partition_epoch, (p.leader,)))  # the ISR shrank
    refused = validate(sim.image, decided)
    assert refused is not None and refused.kind is RejectKind.STALE_LEADER_EPOCH
    fresh = sim.image.topics["t"].partitions[0]
    refused = validate(sim.image, ElectLeader("t", 0, target, fresh.partition_epoch))
    assert refused is not None and "not in the ISR" in refused.message
    sim.do(AlterPartition("t", 0, fresh.leader, fresh.leader_epoch, fresh.partition_epoch, fresh.replicas))
    caught_up = sim.image.topics["t"].partitions[0]
    sim.do(ElectLeader("t", 0, target, caught_up.partition_epoch))
    moved = sim.image.topics["t"].partitions[0]
    assert moved.leader == target and moved.isr == caught_up.isr and moved.leader_epoch == caught_up.leader_epoch + 1
    sim.do(FenceBroker(target, f"inc-{target}"))
    back = sim.image.topics["t"].partitions[0]
    refused = validate(sim.image, ElectLeader("t", 0, target, back.partition_epoch))
    assert refused is not None and refused.kind is RejectKind.CONFLICT
