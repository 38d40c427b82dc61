"""A shard's client quotas: the sans-IO core (``rafka_shards.security.quota``) over the shard's current metadata image,
with the shard's clock and metrics. Runs in a shard process, on its event loop.

The connection (``rafka_shards.shard.connection``) records each request's event-loop time and each Produce request's
bytes, and mutes or delays by the throttle time; the Fetch handler records the bytes of its response, bounds its
max_bytes by what the quota window allows and answers a throttled fetch with no data (Kafka's KafkaApis). Each shard
measures only the requests it serves, so a quota holds per shard, as Kafka's hold per broker: a client spreading its
connections over N shards may use up to N times its quota on the node.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.image import MetadataImage
from rafka_shards.config import BrokerConfig
from rafka_shards.security.quota import (
    ClientQuotas,
    QuotaSettings,
    QuotaType,
    Recorded,
    percent_seconds,
    user_name,
)
from rafka_shards.shard.probe import Probe


class ShardQuotas:
    """What connections and handlers call; every method reads the image's quotas first (a new image applies at
    once: its quotas mapping is a new object, compared by identity)."""

    def __init__(
        self, config: BrokerConfig, image: Callable[[], MetadataImage], clock_ms: Callable[[], int], probe: Probe
    ) -> None:
        self._image = image
        self._clock_ms = clock_ms
        self._probe = probe
        self._core = ClientQuotas(QuotaSettings(config.quota_window_ms, config.quota_windows), image().client_quotas)

    def _current(self) -> ClientQuotas:
        core = self._core
        core.update(self._image().client_quotas)
        return core

    @property
    def active(self) -> bool:
        """Any enforced client quota at all (else nothing is measured, as in Kafka)."""
        return self._current().any_enabled

    @property
    def timing(self) -> bool:
        """Whether request time is measured (some entity has a request_percentage)."""
        return self._current().enabled(QuotaType.REQUEST)

    def record(self, kind: QuotaType, principal: str, client_id: str | None, value: float) -> Recorded | None:
        """Record ``value`` against the client's quota of ``kind`` (None: it has none)."""
        recorded = self._record(kind, principal, client_id, value)
        if recorded is not None:
            self._probe.quota_recorded(kind.value, recorded.resolution.user, recorded.resolution.client_id, value)
        return recorded

    def _record(self, kind: QuotaType, principal: str, client_id: str | None, value: float) -> Recorded | None:
        return self._current().record(kind, user_name(principal), client_id or "", value, self._clock_ms())

    def record_request_time(self, principal: str, client_id: str | None, nanos: int, throttle: bool) -> Recorded | None:
        """A request's event-loop time; ``throttle`` False for the APIs the request quota exempts (counted, never
        throttled: the next request of the client pays)."""
        value = percent_seconds(nanos)
        if throttle:
            return self.record(QuotaType.REQUEST, principal, client_id, value)
        self._current().record_no_throttle(
            QuotaType.REQUEST, user_name(principal), client_id or "", value, self._clock_ms()
        )
        return None

    def throttled(self, kind: QuotaType, recorded: Recorded) -> None:
        """The request is throttled for ``recorded.throttle_ms`` because of this quota (Kafka's throttle-time
        sensor of the quota type that gave the longest time)."""
        r = recorded.resolution
        self._probe.quota_throttled(kind.value, r.user, r.client_id, recorded.throttle_ms)

    def fetch_bytes_max(self, principal: str, client_id: str | None, max_bytes: int) -> int:
        """A consumer's fetch max_bytes, bounded by what one quota window allows (Kafka's maxValueInQuotaWindow)."""
        core = self._current()
        if not core.enabled(QuotaType.FETCH):
            return max_bytes
        bound = core.value_max_in_window(QuotaType.FETCH, user_name(principal), client_id or "")
        return max_bytes if bound is None else max(1, min(max_bytes, int(bound)))

    def fetch_charge(self, principal: str, client_id: str | None, size: int) -> tuple[int, bool]:
        """Record the ``size`` bytes of record data a consumer's fetch returns: (throttle time, whether to withhold
        the data). Above the quota the fetch is answered without data and its bytes are taken back
        (KafkaApis.handleFetchRequest), except when they could never fit the quota window (one batch larger than
        ``fetch_bytes_max``, which KIP-74 returns whole): then the data goes, with the throttle time, so the
        consumer is slowed down rather than refused for ever.

        Kafka records the whole response's size; here the record data, which is what ``fetch_bytes_max`` bounds,
        so a fetch bounded by it fits an idle quota window (with the response's own bytes on top, a full-size
        fetch of a backlog would be refused again and again)."""
        core = self._current()
        if not core.enabled(QuotaType.FETCH):
            return 0, False
        recorded = self._record(QuotaType.FETCH, principal, client_id, size)
        if recorded is None:
            return 0, False
        r = recorded.resolution
        user, client = user_name(principal), client_id or ""
        bound = core.value_max_in_window(QuotaType.FETCH, user, client)
        withhold = recorded.throttle_ms > 0 and (bound is None or size <= bound)
        if withhold:
            core.unrecord(QuotaType.FETCH, user, client, size, self._clock_ms())
        else:
            self._probe.quota_recorded(QuotaType.FETCH.value, r.user, r.client_id, size)
        if recorded.throttle_ms:
            self.throttled(QuotaType.FETCH, recorded)
        return recorded.throttle_ms, withhold

    def expire(self) -> int:
        return self._core.expire(self._clock_ms())
