"""The supervisor's restart policy: doubling backoff up to the cap, reset after a stable run, give up on a loop."""

from __future__ import annotations

from rafka_shards.supervisor.restart_policy import GiveUp, Restart, RestartPolicy


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() -> None:
    policy = RestartPolicy(backoff_ms=500, backoff_max_ms=2000, restarts_max=100, window_ms=300_000)
    now = 0
    delays = []
    for _ in range(4):
        policy.started(now)
        now += 10
        decision = policy.died(now)
        assert isinstance(decision, Restart)
        delays.append(decision.delay_ms)
        now += decision.delay_ms
    assert delays == [500, 1000, 2000, 2000]
    policy.started(now)
    assert policy.died(now + 2000) == Restart(500)  # up for the cap: not part of the loop


def test_more_deaths_than_allowed_within_the_window_give_up() -> None:
    policy = RestartPolicy(backoff_ms=0, backoff_max_ms=0, restarts_max=2, window_ms=1000)
    assert isinstance(policy.died(0), Restart)
    assert isinstance(policy.died(100), Restart)
    assert policy.died(200) == GiveUp(deaths=3, window_ms=1000, restarts_max=2)
    assert isinstance(policy.died(1500), Restart)  # the early deaths left the window
