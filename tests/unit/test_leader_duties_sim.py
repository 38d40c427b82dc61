"""The active controller's duties under simulated time and faults (see duties_sim.py): a broker whose heartbeats
stop is fenced after the session timeout and never before; one that keeps heartbeating is never fenced by a leader
change, and one fenced while no leader could hear it is unfenced once it is heard again.

``DUTIES_SIM_SEEDS=500 pytest tests/unit/test_leader_duties_sim.py`` runs more schedules.
"""

from __future__ import annotations

import os

import pytest

from tests.unit.duties_sim import HEARTBEAT_MS, SESSION_MS, DutiesCluster, run
from tests.unit.raft_sim import Faults, InvariantViolation

SEEDS = int(os.environ.get("DUTIES_SIM_SEEDS", "20"))
CHUNK = 10
CALM = Faults(drop=0.0, duplicate=0.0, delay_ms_max=20, crash=0.0, partition=0.0)


def test_stopped_heartbeats_fence_after_the_session_timeout_never_before() -> None:
    cluster = DutiesCluster(seed=1, faults=CALM)
    cluster.register_brokers(deadline_ms=10000)
    stopped = cluster.now_ms
    cluster.stop_at[1] = stopped
    while cluster.now_ms < stopped + SESSION_MS + 1000:
        cluster.step(chaos=False)
        fenced = cluster.active_image().brokers[1].fenced
        assert not fenced or cluster.now_ms >= stopped + SESSION_MS - HEARTBEAT_MS
    assert cluster.active_image().brokers[1].fenced
    assert [broker for _, _, broker in cluster.fences] == [1]
    # Proposed after a full session without a heartbeat (the last one was sent before ``stopped``), not later than
    # a couple of ticks after that.
    (when, _, _) = cluster.fences[0]
    assert stopped + SESSION_MS - HEARTBEAT_MS <= when <= stopped + SESSION_MS + 100


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_seeded_schedules(first: int) -> None:
    for seed in range(first, min(first + CHUNK, SEEDS)):
        run(seed)


def test_a_seed_replays_the_same_run() -> None:
    a, b = run(3), run(3)
    assert a.fences == b.fences
    assert a.leaders == b.leaders


def test_the_checker_catches_a_fence_before_the_session_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation test: leases that run half a session fence a broker whose lease was renewed too recently."""
    import controller.leader_duties
    from controller.leases import BrokerLeases

    monkeypatch.setattr(
        controller.leader_duties, "BrokerLeases", lambda timeout_ms, now_ms: BrokerLeases(timeout_ms // 2, now_ms)
    )
    with pytest.raises(InvariantViolation, match=r"^seed 1 "):
        run(1)
