"""The active controller's duties (controller/leader_duties.py), driven with a fake clock: they act only while this
node is the active controller, each activation gives every broker a full session, and fences, unfences and drain
moves are each proposed once until done. The same core under simulated Raft and faults: test_leader_duties_sim.py."""

from __future__ import annotations

import uuid

from controller.commands import Command, CreateTopic, DecommissionBroker, FenceBroker, RegisterBroker, UnfenceBroker
from controller.image import MetadataImage
from controller.leader_duties import Duty, LeaderDuties
from controller.liveness import ProbeOutcome
from controller.state_machine import apply


def _image(*commands: Command) -> MetadataImage:
    image = MetadataImage(offset=0, cluster_id="c")
    for cmd in commands:
        image = apply(image, cmd, image.offset + 1)
    return image


REGISTERED = _image(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}") for b in range(3)))


def _ticks(duties: LeaderDuties, first_ms: int, last_ms: int, term: int) -> list[tuple[int, object]]:
    """Tick every 100 ms (the shell ticks every half heartbeat): (when, command) of what was proposed."""
    return [(t, p.command) for t in range(first_ms, last_ms + 1, 100) for p in duties.tick(REGISTERED, t, term)]


def test_duties_act_only_while_active_and_each_activation_gives_a_full_session() -> None:
    duties = LeaderDuties(session_timeout_ms=1000)
    assert duties.tick(REGISTERED, 0, None) == [] and duties.heartbeat(REGISTERED, 0, "inc-0", 0, 0) is None
    assert _ticks(duties, 0, 900, term=2) == []
    renewed = duties.heartbeat(REGISTERED, 0, "inc-0", 0, 900)
    assert renewed is not None and not renewed[0].fenced
    assert _ticks(duties, 1000, 1000, term=2) == [(1000, FenceBroker(b, f"inc-{b}")) for b in (1, 2)]
    assert _ticks(duties, 1100, 1800, term=2) == []
    earlier = duties.tick(REGISTERED, 1900, 2)
    assert [p.command for p in earlier] == [FenceBroker(0, "inc-0")]
    assert _ticks(duties, 2000, 2900, term=3) == []  # a new term: a full session again
    duties.done(earlier[0])  # an earlier activation's proposal releases nothing of this one
    assert _ticks(duties, 3000, 3000, term=3) == [(3000, FenceBroker(b, f"inc-{b}")) for b in range(3)]
    assert duties.tick(REGISTERED, 3100, None) == [] and not duties.active


def test_a_fenced_broker_that_caught_up_is_unfenced_once_until_done() -> None:
    image = apply(REGISTERED, FenceBroker(1, "inc-1"), REGISTERED.offset + 1)
    duties = LeaderDuties(session_timeout_ms=1000)
    duties.tick(image, 0, active_term=1)
    judged = duties.heartbeat(image, 1, "inc-1", image.offset, 10)
    assert judged is not None and judged[0].fenced
    assert [p.command for p in judged[1]] == [UnfenceBroker(1, "inc-1")]
    again = duties.heartbeat(image, 1, "inc-1", image.offset, 20)
    assert again is not None and again[1] == []
    duties.done(judged[1][0])
    third = duties.heartbeat(image, 1, "inc-1", image.offset, 30)
    assert third is not None and [p.command for p in third[1]] == [UnfenceBroker(1, "inc-1")]


def test_a_refused_probe_fences_at_once() -> None:
    duties = LeaderDuties(session_timeout_ms=60_000)
    duties.tick(REGISTERED, 0, active_term=1)
    target = duties.probe_targets(REGISTERED)[2]
    assert duties.probe_seen(REGISTERED, target, ProbeOutcome.TIMED_OUT, 5) == []
    [proposal] = duties.probe_seen(REGISTERED, target, ProbeOutcome.REFUSED, 10)
    assert (proposal.duty, proposal.command) == (Duty.PROBE, FenceBroker(2, "inc-2"))


def test_the_active_controllers_own_node_is_not_probed() -> None:
    """Its supervisor reports its shards' deaths, and their advertised address may be one only clients outside the
    node can reach (a container publishing its port under another number)."""
    image = _image(*(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=1 + b // 2) for b in range(4)))
    duties = LeaderDuties(session_timeout_ms=60_000)
    duties.tick(image, 0, active_term=1)
    assert [t.broker_id for t in duties.probe_targets(image, local_node=1)] == [2, 3]
    assert [t.broker_id for t in duties.probe_targets(image)] == [0, 1, 2, 3]


def test_draining_proposes_each_move_once_at_the_interval() -> None:
    image = _image(
        *(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=b) for b in range(3)),
        CreateTopic("t", uuid.uuid4(), ((0, 1), (1, 0)), ()),
        DecommissionBroker(0),
    )
    duties = LeaderDuties(session_timeout_ms=60_000, drain_interval_ms=100)
    moves = duties.tick(image, 0, active_term=1)
    assert {(p.duty, p.command.partition) for p in moves} == {(Duty.DRAIN, 0), (Duty.DRAIN, 1)}  # type: ignore[union-attr]
    assert duties.tick(image, 50, active_term=1) == []  # not yet
    assert duties.tick(image, 100, active_term=1) == []  # still being proposed
    duties.done(moves[0])
    assert [p.command for p in duties.tick(image, 200, active_term=2)] == [moves[0].command]
