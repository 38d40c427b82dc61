"""Broker leases and what fencing does to partitions: the pure state machine rules (KRaft's) and the active
controller's lease table (controller/leases.py), driven with a fake clock."""

from __future__ import annotations

import uuid

import pytest

from controller.commands import (
    AlterPartition,
    ChangePartition,
    Command,
    CreateTopic,
    DecommissionBroker,
    FenceBroker,
    ReassignPartition,
    RegisterBroker,
    SetBrokerMaintenance,
    UnfenceBroker,
)
from controller.image import MetadataImage, PartitionImage
from controller.leases import BrokerLeases
from controller.placement import drain_moves, place_partitions
from controller.state_machine import RejectKind, apply, validate

SESSION_MS = 6000


class Log:
    """An image and the offsets of the commands applied to it."""

    def __init__(self) -> None:
        self.image = MetadataImage(offset=0, cluster_id="c")

    def do(self, *commands: Command) -> MetadataImage:
        for cmd in commands:
            rejection = validate(self.image, cmd)
            assert rejection is None, rejection
            self.image = apply(self.image, cmd, self.image.offset + 1)
        return self.image

    def partition(self, topic: str = "t", index: int = 0) -> PartitionImage:
        return self.image.topics[topic].partitions[index]


def _cluster(brokers: int = 3) -> Log:
    log = Log()
    log.do(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}") for b in range(brokers)))
    return log


def _topic(log: Log, *assignments: tuple[int, ...]) -> None:
    log.do(CreateTopic("t", uuid.uuid4(), assignments, ()))


def _with_isr(log: Log, isr: tuple[int, ...], index: int = 0) -> None:
    """What the partition's leader does as followers catch up or fall behind: AlterPartition at the current epochs."""
    p = log.partition(index=index)
    log.do(AlterPartition("t", index, p.leader, p.leader_epoch, p.partition_epoch, isr))


def test_a_new_partitions_isr_is_every_unfenced_replica() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2))
    p = log.partition()
    assert (p.leader, p.isr, p.replicas, p.leader_epoch) == (0, (0, 1, 2), (0, 1, 2), 0)
    log.do(FenceBroker(0, "inc-0"), CreateTopic("u", uuid.uuid4(), ((0, 1, 2),), ()))
    p = log.image.topics["u"].partitions[0]
    assert (p.leader, p.isr) == (1, (1, 2))


def test_the_leader_changes_the_isr_only_at_the_current_epochs_and_never_adds_a_fenced_broker() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2))
    _with_isr(log, (0,))
    p = log.partition()
    assert (p.isr, p.leader_epoch, p.partition_epoch) == ((0,), 0, 1)
    stale = AlterPartition("t", 0, 0, 0, 0, (0, 1))  # partition epoch 0 was before the shrink
    assert validate(log.image, stale).kind is RejectKind.STALE_LEADER_EPOCH  # type: ignore[union-attr]
    assert validate(log.image, AlterPartition("t", 0, 1, 0, 1, (1,))) is not None  # not the leader
    assert validate(log.image, AlterPartition("t", 0, 0, 0, 1, (1, 2))) is not None  # leader left out
    log.do(FenceBroker(2, "inc-2"))
    refused = validate(log.image, AlterPartition("t", 0, 0, 0, 1, (0, 2)))
    assert refused is not None and refused.kind is RejectKind.CONFLICT and "fenced" in refused.message
    _with_isr(log, (0, 1))
    assert log.partition().isr == (0, 1)


def test_one_replica_per_node() -> None:
    log = Log()
    log.do(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=b // 2) for b in range(4)))
    rejection = validate(log.image, CreateTopic("t", uuid.uuid4(), ((0, 1),), ()))
    assert rejection is not None and "one node" in rejection.message
    assignments = place_partitions(log.image, 8, 2)
    assert all(log.image.brokers[a].node_id != log.image.brokers[b].node_id for a, b in assignments)
    with pytest.raises(ValueError, match="node"):
        place_partitions(log.image, 1, 3)


def test_fencing_the_leader_moves_leadership_to_another_in_sync_replica_with_a_new_epoch() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2))
    _with_isr(log, (0, 2, 1))
    epoch = log.partition().leader_epoch
    log.do(FenceBroker(0, "inc-0"))
    p = log.partition()
    assert p.leader == 1  # replica order decides among in-sync replicas, not ISR order
    assert p.isr == (2, 1)
    assert p.leader_epoch == epoch + 1
    assert log.image.brokers[0].fenced


def test_fencing_the_last_in_sync_replica_leaves_the_partition_leaderless_and_keeps_it_in_the_isr() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2))
    _with_isr(log, (0,))
    log.do(FenceBroker(0, "inc-0"))
    p = log.partition()
    assert (p.leader, p.isr, p.leader_epoch) == (-1, (0,), 1)
    # The replicas outside the ISR do not have the data: they must not be made leaders by hand either.
    rejection = validate(log.image, ChangePartition("t", 0, 1, (0,), 2))
    assert rejection is not None and rejection.kind is RejectKind.CONFLICT
    log.do(UnfenceBroker(0, "inc-0"))
    p = log.partition()
    assert (p.leader, p.isr, p.leader_epoch) == (0, (0,), 2)


def test_a_fenced_follower_leaves_the_isr_without_a_leader_epoch_bump() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2))
    _with_isr(log, (0, 1, 2))
    before = log.partition()
    log.do(FenceBroker(2, "inc-2"))
    after = log.partition()
    assert (after.leader, after.isr, after.leader_epoch) == (0, (0, 1), before.leader_epoch)
    assert after.partition_epoch == before.partition_epoch + 1


def test_a_restarted_broker_registers_unfenced_and_takes_back_its_leaderless_partitions() -> None:
    log = _cluster()
    _topic(log, (1,), (0,))
    log.do(FenceBroker(1, "inc-1"))
    assert log.partition().leader == -1
    assert validate(log.image, UnfenceBroker(1, "inc-old")) is not None  # another incarnation's heartbeat
    log.do(RegisterBroker(1, "127.0.0.1", 9093, None, "inc-new"))
    assert not log.image.brokers[1].fenced
    assert (log.partition().leader, log.partition().leader_epoch) == (1, 2)
    assert log.partition(index=1).leader_epoch == 0  # untouched


def test_a_new_incarnation_fences_the_previous_one_as_it_registers() -> None:
    """KIP-841 (KRaft's handleBrokerUncleanShutdown): a broker that registers again without having been fenced died
    uncleanly; its previous incarnation leaves every ISR (never emptying one) and loses leadership where another
    in-sync replica can take it, in the same record; it rejoins ISRs by fetching."""
    log = _cluster()
    _topic(log, (0, 1, 2), (1, 0, 2), (0, 1, 2))
    _with_isr(log, (0,), index=2)
    before = log.partition()
    offset = log.image.offset + 1
    log.do(RegisterBroker(0, "127.0.0.1", 9092, None, "inc-0b"))
    reg = log.image.brokers[0]
    assert (reg.incarnation, reg.fenced, reg.epoch) == ("inc-0b", False, offset)
    led = log.partition(index=0)
    assert (led.leader, led.isr, led.leader_epoch) == (1, (1, 2), before.leader_epoch + 1)
    followed = log.partition(index=1)
    assert (followed.leader, followed.isr) == (1, (1, 2))
    alone = log.partition(index=2)  # the last in-sync replica keeps the data: it stays, and leads again
    assert (alone.leader, alone.isr) == (0, (0,))
    # Registering the same incarnation again (a retried proposal) fences nothing.
    isr = log.partition(index=0).isr
    log.do(RegisterBroker(1, "127.0.0.1", 9093, None, "inc-1"))
    assert log.partition(index=0).isr == isr and log.partition(index=0).leader == 1


def test_maintenance_hands_leadership_to_a_usable_in_sync_replica_only() -> None:
    log = _cluster()
    _topic(log, (0, 1, 2), (0, 1, 2))
    _with_isr(log, (0, 1), index=0)
    _with_isr(log, (0,), index=1)
    log.do(SetBrokerMaintenance(0, True))
    assert log.partition(index=0).leader == 1  # moved: 1 is in sync
    assert log.partition(index=1).leader == 0  # stays: nobody else has the data
    assert log.image.brokers[0].maintenance
    assert 0 not in {r for a in place_partitions(log.image, 4, 1) for r in a}  # no new replicas on it
    log.do(SetBrokerMaintenance(0, False))
    assert validate(log.image, SetBrokerMaintenance(0, False)) is not None


def test_decommissioning_takes_no_new_replicas_and_survives_a_restart() -> None:
    log = _cluster()
    _topic(log, (0,), (1,))
    log.do(DecommissionBroker(2))
    rejection = validate(log.image, ReassignPartition("t", 0, (0, 2)))
    assert rejection is not None and "decommissioning" in rejection.message
    log.do(RegisterBroker(2, "127.0.0.1", 9094, None, "inc-again"))
    assert log.image.brokers[2].decommissioning


def test_a_reassignment_adds_new_replicas_first_and_drops_old_ones_once_the_new_are_in_sync() -> None:
    log = _cluster()
    _topic(log, (0, 1))
    _with_isr(log, (0,))
    log.do(ReassignPartition("t", 0, (0,)))  # nothing new: 1 (not in sync) goes at once
    assert (log.partition().replicas, log.partition().isr) == ((0,), (0,))
    assert validate(log.image, ReassignPartition("t", 0, (1,))) is None  # 1 is new again: it copies the log first
    log.do(ReassignPartition("t", 0, (2, 1)))  # both new: the old replica 0 stays (and leads) until they catch up
    p = log.partition()
    assert (p.replicas, p.adding, p.removing, p.leader, p.target_replicas) == ((2, 1, 0), (2, 1), (0,), 0, (2, 1))
    refused = validate(log.image, ReassignPartition("t", 0, (1,)))
    assert refused is not None and refused.kind is RejectKind.CONFLICT and "in progress" in refused.message
    _with_isr(log, (0, 2))  # 2 caught up; 1 not yet
    assert log.partition().adding == (2, 1)
    epoch = log.partition().leader_epoch
    _with_isr(log, (0, 2, 1))  # every new replica in sync: 0 leaves, the first in-sync new replica leads
    p = log.partition()
    assert (p.replicas, p.isr, p.leader, p.leader_epoch, p.adding, p.removing) == ((2, 1), (2, 1), 2, epoch + 1, (), ())


def test_a_reassignment_in_progress_can_be_cancelled_and_a_removal_keeps_an_in_sync_replica() -> None:
    log = _cluster()
    _topic(log, (0, 1))
    _with_isr(log, (0,))
    log.do(ReassignPartition("t", 0, (0, 2)))
    assert log.partition().adding == (2,)
    log.do(ReassignPartition("t", 0, (0, 1)))  # cancel: back to the replicas before it
    p = log.partition()
    assert (p.replicas, p.isr, p.adding, p.removing) == ((0, 1), (0,), (), ())
    rejection = validate(log.image, ReassignPartition("t", 0, (1,)))  # only removes: 1 is not in sync
    assert rejection is not None and rejection.kind is RejectKind.CONFLICT and "(0,)" in rejection.message
    for bad in ((), (0, 0), (0, 9)):
        assert validate(log.image, ReassignPartition("t", 0, bad)) is not None
    assert validate(log.image, ReassignPartition("t", 5, (0,))) is not None


def test_old_and_new_replicas_of_a_moving_partition_may_not_share_a_node() -> None:
    log = Log()
    log.do(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=b // 2) for b in range(4)))
    log.do(CreateTopic("t", uuid.uuid4(), ((0, 2),), ()))
    refused = validate(log.image, ReassignPartition("t", 0, (1, 2)))  # 1 is on node 0, like 0
    assert refused is not None and "one node" in refused.message


def test_decommissioning_moves_each_replica_to_a_node_the_partition_does_not_use() -> None:
    log = _cluster(4)
    _topic(log, (0, 1), (1, 2), (2, 3), (3, 0))
    for i in range(4):
        _with_isr(log, log.partition(index=i).replicas, index=i)
    log.do(DecommissionBroker(1))
    moves = drain_moves(log.image, 10)
    assert moves == [ReassignPartition("t", 0, (0, 2)), ReassignPartition("t", 1, (0, 2))]  # fewest replicas, then id
    assert drain_moves(log.image, 1) == moves[:1]
    log.do(*moves)
    assert drain_moves(log.image, 10) == []  # in progress: nothing more to propose for them
    for i in (0, 1):
        _with_isr(log, log.partition(index=i).replicas, index=i)  # the new replicas caught up
    assert all(1 not in p.replicas for p in log.image.topics["t"].partitions)
    assert drain_moves(log.image, 10) == []


def test_a_replica_with_nowhere_to_go_stays_on_the_decommissioning_broker() -> None:
    log = _cluster(2)
    _topic(log, (0, 1))
    log.do(DecommissionBroker(1))
    assert drain_moves(log.image, 10) == []  # the only other node already holds a replica


@pytest.mark.parametrize(
    "cmd",
    [FenceBroker(9, "x"), FenceBroker(0, "wrong"), UnfenceBroker(0, "inc-0"), SetBrokerMaintenance(9, True)],
    ids=str,
)
def test_lease_commands_that_do_not_fit_the_state_are_rejected(cmd: Command) -> None:
    assert validate(_cluster().image, cmd) is not None


# ---- the lease table ---------------------------------------------------------------------------------------------


def test_a_broker_that_stops_heartbeating_is_fenced_once_its_session_ends() -> None:
    log = _cluster(2)
    leases = BrokerLeases(SESSION_MS, now_ms=0)
    assert leases.tick(log.image, 0) == []  # first sight: a full session from now
    for now in range(1000, 6000, 1000):
        reply, unfence = leases.heartbeat(log.image, 0, "inc-0", log.image.offset, now)
        assert not reply.fenced and unfence is None
        assert leases.tick(log.image, now) == []
    assert leases.tick(log.image, 6000) == [FenceBroker(1, "inc-1")]
    assert leases.tick(log.image, 6100) == []  # proposed once while in flight
    leases.done(1)
    assert leases.tick(log.image, 6200) == [FenceBroker(1, "inc-1")]  # the proposal failed: again
    for now in range(7000, 11_000, 1000):
        assert leases.tick(log.image, now) == []
    assert leases.tick(log.image, 11_000) == [FenceBroker(0, "inc-0")]  # last heard at 5000


def test_a_fenced_broker_is_unfenced_only_after_catching_up() -> None:
    log = _cluster(1)
    leases = BrokerLeases(SESSION_MS, now_ms=0)
    log.do(FenceBroker(0, "inc-0"))
    behind = log.image.offset - 1
    reply, unfence = leases.heartbeat(log.image, 0, "inc-0", behind, 100)
    assert reply.fenced and unfence is None
    reply, unfence = leases.heartbeat(log.image, 0, "inc-0", log.image.offset, 200)
    assert reply.fenced and unfence == UnfenceBroker(0, "inc-0")
    assert leases.heartbeat(log.image, 0, "inc-0", log.image.offset, 300)[1] is None  # in flight
    log.do(unfence)
    leases.done(0)
    reply, unfence = leases.heartbeat(log.image, 0, "inc-0", log.image.offset, 400)
    assert not reply.fenced and unfence is None


def test_a_heartbeat_from_an_unknown_incarnation_is_told_it_is_fenced() -> None:
    log = _cluster(1)
    leases = BrokerLeases(SESSION_MS, now_ms=0)
    reply, unfence = leases.heartbeat(log.image, 0, "inc-previous", 0, 10)
    assert reply.fenced and unfence is None
    assert leases.heartbeat(log.image, 7, "inc-7", 0, 10)[0].fenced


def test_a_new_controller_gives_every_broker_a_full_session() -> None:
    log = _cluster(2)
    leases = BrokerLeases(SESSION_MS, now_ms=50_000)
    for now in range(50_000, 50_000 + SESSION_MS, 1000):
        assert leases.tick(log.image, now) == []
    assert len(leases.tick(log.image, 50_000 + SESSION_MS)) == 2


def test_a_controller_that_was_paused_does_not_fence_brokers_it_could_not_hear() -> None:
    log = _cluster(1)
    leases = BrokerLeases(SESSION_MS, now_ms=0)
    leases.tick(log.image, 0)
    leases.heartbeat(log.image, 0, "inc-0", 0, 1000)
    assert leases.tick(log.image, 60_000) == []  # the controller itself was stopped for a minute
    assert leases.remaining_ms(0, 60_000) == SESSION_MS
    for now in range(61_000, 60_000 + SESSION_MS, 1000):
        assert leases.tick(log.image, now) == []
    assert leases.tick(log.image, 60_000 + SESSION_MS) == [FenceBroker(0, "inc-0")]


def test_a_shards_lease_runs_from_when_the_renewing_heartbeat_was_sent() -> None:
    """The shard's side (rafka_shards.shard.lease): valid only until session timeout after the send time of the last
    heartbeat the controller answered, so it lapses before the controller's view does; a late answer to an older
    heartbeat never shortens it."""
    from rafka_shards.shard.lease import BrokerLease

    now = [1_000]
    lease = BrokerLease(6_000, lambda: now[0])
    assert not lease.valid()  # never granted
    lease.renewed(900)  # sent at 900, answered now
    assert lease.valid() and lease.until_ms == 6_900
    now[0] = 6_899
    assert lease.valid()
    now[0] = 6_900
    assert not lease.valid()
    lease.renewed(6_000)
    lease.renewed(2_000)  # a late answer to an older heartbeat
    assert lease.until_ms == 12_000 and lease.valid()
