"""The shard's quota shell (rafka_shards.shard.quotas) over a metadata image and a fake clock: quotas follow the
image, a fetch above the byte rate is withheld and its bytes taken back, a fetch that can never fit the window goes
with its throttle time, and the metrics count per sensor."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from controller.image import MetadataImage
from rafka_shards.config import BrokerConfig
from rafka_shards.security.quota import QuotaType
from rafka_shards.shard.probe import QUOTA_BYTES, QUOTA_THROTTLES, Probe
from rafka_shards.shard.quotas import ShardQuotas


class World:
    def __init__(self) -> None:
        self.image = MetadataImage(offset=0, cluster_id="c")
        self.now_ms = 0

    def set_quota(self, entity: tuple[tuple[str, str | None], ...], values: dict[str, float]) -> None:
        quotas = dict(self.image.client_quotas)
        quotas[entity] = MappingProxyType(values)
        self.image = replace(self.image, client_quotas=MappingProxyType(quotas))


def _quotas(world: World) -> ShardQuotas:
    config = BrokerConfig(quota_window_ms=1000, quota_windows=11)
    return ShardQuotas(config, lambda: world.image, lambda: world.now_ms, Probe())


def _sample(counter: object, *labels: str) -> float:
    for metric in counter.collect():  # type: ignore[attr-defined]
        for s in metric.samples:
            if s.name.endswith("_total") and tuple(s.labels.values()) == labels:
                return float(s.value)
    return 0.0


def test_quotas_follow_the_image() -> None:
    world = World()
    q = _quotas(world)
    assert not q.active
    assert q.record(QuotaType.PRODUCE, "User:ANONYMOUS", "app", 10**9) is None
    world.set_quota((("client-id", "app"),), {"producer_byte_rate": 100.0})
    assert q.active and not q.timing
    recorded = q.record(QuotaType.PRODUCE, "User:ANONYMOUS", "app", 2000)
    assert recorded is not None and recorded.throttle_ms == 10_000  # 200 B/s against 100: (200 - 100) / 100 * 10 s
    assert _sample(QUOTA_BYTES, "produce", "", "app") >= 2000


def test_fetch_above_the_rate_is_withheld_and_not_counted() -> None:
    world = World()
    world.set_quota((("user", "alice"),), {"consumer_byte_rate": 100.0})
    q = _quotas(world)
    assert q.fetch_bytes_max("User:alice", "x", 10**6) == 1000  # 100 B/s over 10 windows
    assert q.fetch_bytes_max("User:bob", "x", 10**6) == 10**6
    assert q.fetch_charge("User:alice", "x", 1000) == (0, False)  # exactly the window's worth
    throttle_ms, withhold = q.fetch_charge("User:alice", "x", 500)
    assert throttle_ms == 5000 and withhold
    assert q.fetch_charge("User:alice", "x", 0) == (0, False)  # the 500 bytes were taken back
    before = _sample(QUOTA_THROTTLES, "fetch", "alice", "")
    throttle_ms, withhold = q.fetch_charge("User:alice", "x", 5000)  # larger than any window: sent, throttled
    assert throttle_ms > 0 and not withhold
    assert _sample(QUOTA_THROTTLES, "fetch", "alice", "") == before + 1
    world.now_ms += 60_000  # everything measured is long gone
    assert q.expire() == 1
