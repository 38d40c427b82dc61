"""The client quota core (rafka_shards.security.quota): Kafka's eight-level precedence, its Rate over sampled
windows, the throttle time formula and its bounds, shared sensors, and the bounds on what a shard keeps. A fake
clock: every call takes now_ms."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest

from controller.quotas import CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE, QuotaEntity, normalized
from rafka_shards.security.quota import (
    ClientQuotas,
    QuotaSettings,
    QuotaType,
    Rate,
    percent_seconds,
    resolve,
    user_name,
)

SETTINGS = QuotaSettings(window_ms=1000, windows=11)


def quotas(*entries: tuple[dict[str, str | None], dict[str, float]]) -> Mapping[QuotaEntity, Mapping[str, float]]:
    return MappingProxyType({normalized(e.items()): MappingProxyType(v) for e, v in entries})


# Kafka's eight levels, most specific first, each with the sensor tags it gives (user, client-id).
LEVELS: list[tuple[dict[str, str | None], tuple[str, str]]] = [
    ({"user": "alice", "client-id": "app"}, ("alice", "app")),
    ({"user": "alice", "client-id": None}, ("alice", "app")),
    ({"user": "alice"}, ("alice", "")),
    ({"user": None, "client-id": "app"}, ("alice", "app")),
    ({"user": None, "client-id": None}, ("alice", "app")),
    ({"user": None}, ("alice", "")),
    ({"client-id": "app"}, ("", "app")),
    ({"client-id": None}, ("", "app")),
]


@pytest.mark.parametrize("level", range(len(LEVELS)))
def test_precedence_most_specific_level_wins(level: int) -> None:
    """With a quota at this level and at every less specific one, this level's applies, with its tags."""
    entries = [(entity, {PRODUCER_BYTE_RATE: 1000.0 + i}) for i, (entity, _) in enumerate(LEVELS) if i >= level]
    r = resolve(quotas(*entries), "alice", "app", PRODUCER_BYTE_RATE)
    assert r is not None
    assert r.limit == 1000.0 + level
    assert (r.user, r.client_id) == LEVELS[level][1]
    assert r.entity == normalized(LEVELS[level][0].items())


def test_precedence_ignores_other_names_and_keys() -> None:
    q = quotas(
        ({"user": "bob", "client-id": "app"}, {PRODUCER_BYTE_RATE: 1.0}),
        ({"user": "alice"}, {CONSUMER_BYTE_RATE: 2.0}),  # another key: does not stop the walk
        ({"client-id": "other"}, {PRODUCER_BYTE_RATE: 3.0}),
        ({"client-id": None}, {PRODUCER_BYTE_RATE: 4.0}),
    )
    r = resolve(q, "alice", "app", PRODUCER_BYTE_RATE)
    assert r is not None and r.limit == 4.0 and (r.user, r.client_id) == ("", "app")
    assert resolve(q, "alice", "app", REQUEST_PERCENTAGE) is None
    assert resolve(quotas(), "alice", "app", PRODUCER_BYTE_RATE) is None


def test_rate_counts_at_least_windows_minus_one_full_windows() -> None:
    rate = Rate(1000, 11)
    rate.record(1100, 0)
    assert rate.window_size_ms(0) == 10_000  # 0 elapsed + 10 full windows assumed
    assert rate.measure(0) == pytest.approx(110.0)
    rate.record(1100, 15_000)  # everything before is obsolete (more than 11 windows ago)
    assert rate.measure(15_000) == pytest.approx(110.0)
    assert rate.measure(15_500) == pytest.approx(1100 / 10.5)


def test_rate_over_many_windows() -> None:
    rate = Rate(1000, 3)
    for t in range(0, 10_000, 100):
        rate.record(10, t)  # 100 bytes per second
    # A steady 100 B/s reads as about that once the samples have wrapped around several times.
    assert 90 <= rate.measure(9_999) <= 110


def test_throttle_time_is_kafkas_formula() -> None:
    cq = ClientQuotas(SETTINGS, quotas(({"client-id": "app"}, {PRODUCER_BYTE_RATE: 100.0})))
    first = cq.record(QuotaType.PRODUCE, "ANONYMOUS", "app", 1000, 0)
    assert first is not None and first.throttle_ms == 0  # 1000 bytes over 10 s: 100 B/s, within
    second = cq.record(QuotaType.PRODUCE, "ANONYMOUS", "app", 100, 0)
    # 1100 bytes over 10 s = 110 B/s: (110 - 100) / 100 * 10 000 ms
    assert second is not None and second.throttle_ms == 1000
    assert (second.resolution.user, second.resolution.client_id) == ("", "app")


def test_throttle_time_is_bounded() -> None:
    cq = ClientQuotas(SETTINGS, quotas(({"client-id": None}, {PRODUCER_BYTE_RATE: 10.0, REQUEST_PERCENTAGE: 1.0})))
    big = cq.record(QuotaType.PRODUCE, "u", "c", 10_000_000, 0)
    assert big is not None and big.throttle_ms == 11_000  # windows * window_ms
    busy = cq.record(QuotaType.REQUEST, "u", "c", percent_seconds(5_000_000_000), 0)
    assert busy is not None and busy.throttle_ms == 1000  # the request quota: one window


def test_request_percentage() -> None:
    cq = ClientQuotas(SETTINGS, quotas(({"user": "alice"}, {REQUEST_PERCENTAGE: 10.0})))
    # 0.5 s of event loop time within 10 s is 5 %: within 10 %.
    r = cq.record(QuotaType.REQUEST, "alice", "x", percent_seconds(500_000_000), 0)
    assert r is not None and r.throttle_ms == 0
    # 1.5 s within 10 s is 15 %: (15 - 10) / 10 * 10 000 ms, bounded by one window.
    r = cq.record(QuotaType.REQUEST, "alice", "x", percent_seconds(1_000_000_000), 0)
    assert r is not None and r.throttle_ms == 1000
    assert cq.record(QuotaType.REQUEST, "bob", "x", 1e9, 0) is None  # no quota for bob


def test_connections_resolving_to_one_entity_share_its_sensor() -> None:
    q = quotas(({"user": "alice"}, {PRODUCER_BYTE_RATE: 100.0}), ({"user": None}, {PRODUCER_BYTE_RATE: 100.0}))
    cq = ClientQuotas(SETTINGS, q)
    # Two client ids of alice: one /users/alice sensor (tags alice, "").
    assert cq.record(QuotaType.PRODUCE, "alice", "one", 600, 0).throttle_ms == 0  # type: ignore[union-attr]
    r = cq.record(QuotaType.PRODUCE, "alice", "two", 600, 0)
    assert r is not None and r.throttle_ms > 0 and (r.resolution.user, r.resolution.client_id) == ("alice", "")
    # The /users/<default> quota applies to each user on its own: bob starts afresh.
    assert cq.record(QuotaType.PRODUCE, "bob", "one", 600, 0).throttle_ms == 0  # type: ignore[union-attr]
    assert cq.sensor_count == 2


def test_unrecord_takes_the_bytes_back() -> None:
    cq = ClientQuotas(SETTINGS, quotas(({"client-id": "c"}, {CONSUMER_BYTE_RATE: 100.0})))
    r = cq.record(QuotaType.FETCH, "u", "c", 5000, 0)
    assert r is not None and r.throttle_ms > 0
    cq.unrecord(QuotaType.FETCH, "u", "c", 5000, 0)
    assert cq.measure(QuotaType.FETCH, "u", "c", 0) == 0
    assert cq.value_max_in_window(QuotaType.FETCH, "u", "c") == 100.0 * 10
    assert cq.value_max_in_window(QuotaType.FETCH, "u", "other") is None


def test_update_changes_limits_and_keeps_measurements() -> None:
    cq = ClientQuotas(SETTINGS, quotas(({"client-id": "c"}, {PRODUCER_BYTE_RATE: 1000.0})))
    assert cq.record(QuotaType.PRODUCE, "u", "c", 5000, 0).throttle_ms == 0  # type: ignore[union-attr]
    cq.update(quotas(({"client-id": "c"}, {PRODUCER_BYTE_RATE: 100.0})))
    r = cq.record(QuotaType.PRODUCE, "u", "c", 0, 0)
    assert r is not None and r.throttle_ms == 11_000 and r.resolution.limit == 100.0
    cq.update(quotas())
    assert not cq.enabled(QuotaType.PRODUCE)
    assert cq.record(QuotaType.PRODUCE, "u", "c", 5000, 0) is None


def test_sensors_are_bounded_and_expire() -> None:
    cq = ClientQuotas(QuotaSettings(1000, 11, sensors_max=3), quotas(({"client-id": None}, {PRODUCER_BYTE_RATE: 1.0})))
    for i in range(5):
        cq.record(QuotaType.PRODUCE, "u", f"c{i}", 1, i)
    assert cq.sensor_count == 3  # the least recently used were dropped
    assert cq.expire(100_000) == 3
    assert cq.sensor_count == 0


def test_user_name() -> None:
    assert user_name("User:alice") == "alice"
    assert user_name("User:ANONYMOUS") == "ANONYMOUS"
    assert user_name("odd") == "odd"
