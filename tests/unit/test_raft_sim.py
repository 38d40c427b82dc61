"""Seeded simulation of Raft clusters under network, disk and clock faults (see raft_sim.py).

``RAFT_SIM_SEEDS=20000 pytest tests/unit/test_raft_sim.py`` runs more schedules; ``RAFT_SIM_SEED=1234`` runs one.
A failure message starts with the seed, and that seed alone replays the run.
"""

from __future__ import annotations

import os

import pytest

from controller.raft.messages import Vote
from controller.raft.node import RaftNode
from controller.raft.types import NodeId
from tests.unit import raft_sim
from tests.unit.raft_sim import InvariantViolation, SimDisk, run

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "3000"))
ONE_SEED = os.environ.get("RAFT_SIM_SEED")
CHUNK = 50
FIRST_SEEDS = [int(ONE_SEED)] if ONE_SEED else list(range(0, SEEDS, CHUNK))


@pytest.mark.parametrize("first", FIRST_SEEDS)
def test_seeded_schedules(first: int) -> None:
    last = first + 1 if ONE_SEED else min(first + CHUNK, SEEDS)
    elections = acked = reads = 0
    for seed in range(first, last):
        cluster = run(seed)
        elections += len(cluster.leaders)
        acked += len(cluster.acked)
        reads += cluster.reads_served
    # The schedules did something: leaders came and went, writes were acknowledged, reads were served.
    assert elections > last - first
    assert (acked > 0 and reads > 0) or ONE_SEED


def test_a_seed_replays_the_same_run() -> None:
    a, b = run(7), run(7)
    assert a.now_ms == b.now_ms
    assert a.leaders == b.leaders
    assert a.applied == b.applied
    assert a.acked == b.acked


def _first_violation(seeds: range) -> str:
    for seed in seeds:
        try:
            run(seed)
        except InvariantViolation as e:
            return str(e)
    return ""


def test_the_checker_catches_a_vote_for_a_stale_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation test: without the up-to-date check of paper 5.4.1, some schedule must break an invariant."""
    monkeypatch.setattr(RaftNode, "_log_up_to_date", lambda self, last_index, last_term: True)
    assert _first_violation(range(300)).startswith("seed ")


def test_the_checker_catches_entries_acknowledged_before_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation test: a disk that never fsyncs log entries loses acknowledged writes on a crash."""
    original = SimDisk.persist

    def persist_without_sync(self: SimDisk, rd: raft_sim.Ready) -> None:
        synced = self.synced.copy()
        original(self, rd)
        synced.hard_state = self.view.hard_state
        self.synced = synced

    monkeypatch.setattr(SimDisk, "persist", persist_without_sync)
    assert _first_violation(range(300)).startswith("seed ")


def test_the_checker_catches_a_second_vote_in_a_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation test: a voter that forgets whom it voted for lets two leaders win one term."""
    original = RaftNode.step

    def forgetful_step(self: RaftNode, msg: raft_sim.Message) -> None:
        if isinstance(msg, Vote) and msg.term == self.term:
            self.vote = NodeId(0)
            self.leader = NodeId(0)
        original(self, msg)

    monkeypatch.setattr(RaftNode, "step", forgetful_step)
    assert _first_violation(range(300)).startswith("seed ")
