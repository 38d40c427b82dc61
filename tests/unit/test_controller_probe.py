"""The controller's probe (rafka_shards/controller_node/probe.py): what it counts and logs about elections and
fsyncs, so a slow fail-over can be read in the node logs."""

from __future__ import annotations

import logging

import pytest

from controller.raft.node import Role
from rafka_shards.controller_node.probe import SLOW_FSYNC_LOG_INTERVAL_S, ControllerProbe


def test_elections_this_node_starts_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    probe = ControllerProbe()
    with caplog.at_level(logging.INFO):
        for role, term in [
            (Role.FOLLOWER, 3),
            (Role.PRE_CANDIDATE, 3),
            (Role.PRE_CANDIDATE, 3),  # the same campaign, seen after another Ready
            (Role.CANDIDATE, 4),
            (Role.LEADER, 4),
            (Role.FOLLOWER, 5),
            (Role.CANDIDATE, 6),  # an election without a pre-vote (a leadership transfer)
        ]:
            probe.observe_role(role, term)
    assert probe.campaigns == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "campaigning: asking for pre-votes for term 4",
        "campaigning: asking for votes for term 4",
        "campaigning: asking for votes for term 6",
    ]


def test_slow_fsyncs_are_logged_at_most_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    probe = ControllerProbe()
    with caplog.at_level(logging.WARNING):
        probe.observe_fsync(0.001, now_s=100.0)
        probe.observe_fsync(0.4, now_s=100.0)
        probe.observe_fsync(0.5, now_s=101.0)
        probe.observe_fsync(0.6, now_s=100.0 + SLOW_FSYNC_LOG_INTERVAL_S)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("slow Raft fsync: 400 ms (1 slower")
    assert lines[1].startswith("slow Raft fsync: 600 ms (2 slower")
    assert sum(count for _, count in probe.fsync_seconds.cumulative()[-1:]) == 4
