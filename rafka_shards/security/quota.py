"""Client quotas enforced by one shard: Kafka's ``ClientQuotaManager`` (KIP-13 byte rates, KIP-55 user quotas, KIP-124
request time) as a sans-IO core. Runs in a shard process; no sockets, no clock (every call takes ``now_ms``), no
asyncio: the connection shell (``rafka_shards.shard.quotas``) records, mutes and delays.

Three quota types, one metadata key each: PRODUCE (``producer_byte_rate``: bytes of Produce requests per second),
FETCH (``consumer_byte_rate``: bytes of Fetch responses per second) and REQUEST (``request_percentage``: time spent
handling the client's requests on the shard's event loop, as a percentage of one event loop, Kafka's "percentage of
one request handler thread").

Resolution (``resolve``) walks Kafka's eight levels for the connection's (user, client id) and takes the first entity
holding the type's key: /users/<user>/clients/<client-id>, /users/<user>/clients/<default>, /users/<user>,
/users/<default>/clients/<client-id>, /users/<default>/clients/<default>, /users/<default>, /clients/<client-id>,
/clients/<default>. The level also names the *sensor* the usage goes to, as Kafka's metric tags do: a default is
applied per user or client id (not shared by all of them), and every connection resolving to the same (user, client
id) tags shares one rate, so a client with several connections to one shard gets one budget there.

Measurement is Kafka's ``Rate`` over a ``SampledStat``: ``windows`` samples of ``window_ms``; the rate is the sum of
the live samples over the elapsed time, counted as at least ``windows - 1`` full windows (so a fresh sensor does not
read as a burst). A value is recorded first, then the rate checked: above the quota, the throttle time is the delay
that brings the rate back to the quota if nothing more is recorded, ``(observed - quota) / quota * window``
(``QuotaUtils.throttleTime``), bounded by ``windows * window_ms`` for byte rates and by one window for request time
(``ClientRequestQuotaManager``).

Bounds: at most ``sensors_max`` sensors (the least recently used is dropped when a new one is needed), sensors idle
for longer than the whole measured span are dropped by ``expire`` (their samples would all be obsolete: dropping one
changes no throttle), and the resolution cache is cleared when full or when the quotas change.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from controller.quotas import (
    CLIENT_ID,
    CONSUMER_BYTE_RATE,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    QuotaEntity,
)

SENSORS_MAX: Final = 10_000  # sensors (quota type, user, client id) one shard keeps
RESOLUTIONS_MAX: Final = 10_000  # cached resolutions per shard; cleared when full
NANOS_TO_PERCENT_SECONDS: Final = 100.0 / 1e9  # Kafka's NanosToPercentagePerSecond: 1 s of one loop = 100 %-s

Quotas = Mapping[QuotaEntity, Mapping[str, float]]


class QuotaType(enum.Enum):
    PRODUCE = "produce"
    FETCH = "fetch"
    REQUEST = "request"

    @property
    def key(self) -> str:
        """The metadata key holding this type's quota."""
        return _KEYS[self]


_KEYS: Final = {
    QuotaType.PRODUCE: PRODUCER_BYTE_RATE,
    QuotaType.FETCH: CONSUMER_BYTE_RATE,
    QuotaType.REQUEST: REQUEST_PERCENTAGE,
}


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    window_ms: int  # quota_window_ms (Kafka's quota.window.size.seconds)
    windows: int  # quota_windows (Kafka's quota.window.num)
    sensors_max: int = SENSORS_MAX

    def __post_init__(self) -> None:
        assert self.window_ms > 0 and self.windows >= 2 and self.sensors_max > 0, self

    def throttle_max_ms(self, kind: QuotaType) -> int:
        return self.window_ms if kind is QuotaType.REQUEST else self.window_ms * self.windows


@dataclass(frozen=True, slots=True)
class Resolution:
    """The quota that applies to a (user, client id) for one type, and the sensor it is measured by."""

    limit: float
    user: str  # the sensor's user tag: "" when the level has no user
    client_id: str  # the sensor's client-id tag: "" when the level has no client id
    entity: QuotaEntity  # the entity the quota is set on (a default has name None)


def _levels(user: str, client_id: str) -> tuple[tuple[QuotaEntity, str, str], ...]:
    """Kafka's precedence, most specific first: (entity, user tag, client-id tag). Entities are spelled sorted by
    type, as ``controller.quotas.normalized`` keeps them ("client-id" before "user")."""
    return (
        (((CLIENT_ID, client_id), (USER, user)), user, client_id),
        (((CLIENT_ID, None), (USER, user)), user, client_id),
        (((USER, user),), user, ""),
        (((CLIENT_ID, client_id), (USER, None)), user, client_id),
        (((CLIENT_ID, None), (USER, None)), user, client_id),
        (((USER, None),), user, ""),
        (((CLIENT_ID, client_id),), "", client_id),
        (((CLIENT_ID, None),), "", client_id),
    )


def resolve(quotas: Quotas, user: str, client_id: str, key: str) -> Resolution | None:
    """The quota ``key`` of a client (``user``: the principal's name; ``client_id``: its header's, "" if null), or
    None when no level sets it."""
    for entity, user_tag, client_tag in _levels(user, client_id):
        values = quotas.get(entity)
        if values is not None:
            limit = values.get(key)
            if limit is not None:
                return Resolution(limit, user_tag, client_tag, entity)
    return None


class Rate:
    """Kafka's ``Rate`` of a summing ``SampledStat``: the sum recorded in the live samples, per second."""

    __slots__ = ("_current", "_starts", "_values", "_window_ms", "_windows")

    def __init__(self, window_ms: int, windows: int) -> None:
        self._window_ms = window_ms
        self._windows = windows
        self._starts: list[int] = []  # each sample's window start (Kafka's lastWindowMs)
        self._values: list[float] = []
        self._current = 0

    def record(self, value: float, now_ms: int) -> None:
        if not self._starts:
            self._starts.append(now_ms)
            self._values.append(0.0)
            self._current = 0
        elif now_ms - self._starts[self._current] >= self._window_ms:  # the current sample is complete: advance
            self._current = (self._current + 1) % self._windows
            if self._current >= len(self._starts):
                self._starts.append(now_ms)
                self._values.append(0.0)
            else:
                self._starts[self._current] = now_ms
                self._values[self._current] = 0.0
        self._values[self._current] += value

    def _purge(self, now_ms: int) -> None:
        """Samples older than the whole span are reset, as ``SampledStat.purgeObsoleteSamples`` does."""
        span_ms = self._windows * self._window_ms
        for i, start in enumerate(self._starts):
            if now_ms - start >= span_ms:
                self._starts[i] = now_ms
                self._values[i] = 0.0

    def window_size_ms(self, now_ms: int) -> int:
        """The time the rate is taken over: since the oldest live sample, and at least ``windows - 1`` windows."""
        self._purge(now_ms)
        oldest = min(self._starts) if self._starts else now_ms
        elapsed = now_ms - oldest
        full = elapsed // self._window_ms
        if full < self._windows - 1:
            elapsed += (self._windows - 1 - full) * self._window_ms
        return max(elapsed, 1)

    def measure(self, now_ms: int) -> float:
        """Per second."""
        size_ms = self.window_size_ms(now_ms)  # purges first
        return sum(self._values) / (size_ms / 1000)


@dataclass(slots=True)
class Sensor:
    """One (quota type, user tag, client-id tag): the rate all the connections resolving to it share."""

    rate: Rate
    last_ms: int  # last recording, for expiry


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a value did: the sensor's tags and limit, and the throttle time (0: within the quota)."""

    resolution: Resolution
    throttle_ms: int


SensorKey = tuple[QuotaType, str, str]


class ClientQuotas:
    """One shard's quota sensors, over the quotas of the current metadata image (``update`` on each new image)."""

    def __init__(self, settings: QuotaSettings, quotas: Quotas) -> None:
        self.settings = settings
        self._quotas: Quotas = quotas
        self._enabled = _enabled_types(quotas)
        self._sensors: OrderedDict[SensorKey, Sensor] = OrderedDict()
        self._resolutions: dict[tuple[QuotaType, str, str], Resolution | None] = {}

    @property
    def quotas(self) -> Quotas:
        return self._quotas

    def update(self, quotas: Quotas) -> None:
        """New quotas (a new metadata image): resolutions are redone; sensors keep what they measured, as Kafka's
        keep their samples when only the quota bound of their metric config changes."""
        if quotas is self._quotas:
            return
        self._quotas = quotas
        self._enabled = _enabled_types(quotas)
        self._resolutions.clear()

    @property
    def any_enabled(self) -> bool:
        """Whether any quota type is set for anyone (nothing is measured otherwise)."""
        return bool(self._enabled)

    def enabled(self, kind: QuotaType) -> bool:
        """Whether any entity sets this type's key (nothing is measured otherwise, as in Kafka)."""
        return kind in self._enabled

    @property
    def sensor_count(self) -> int:
        return len(self._sensors)

    def resolution(self, kind: QuotaType, user: str, client_id: str) -> Resolution | None:
        if kind not in self._enabled:
            return None
        cache_key = (kind, user, client_id)
        try:
            return self._resolutions[cache_key]
        except KeyError:
            pass
        if len(self._resolutions) >= RESOLUTIONS_MAX:
            self._resolutions.clear()
        found = self._resolutions[cache_key] = resolve(self._quotas, user, client_id, kind.key)
        return found

    def _sensor(self, kind: QuotaType, r: Resolution, now_ms: int) -> Sensor:
        key = (kind, r.user, r.client_id)
        sensor = self._sensors.get(key)
        if sensor is None:
            if len(self._sensors) >= self.settings.sensors_max:
                self.expire(now_ms)
                if len(self._sensors) >= self.settings.sensors_max:
                    self._sensors.popitem(last=False)  # the least recently used
            sensor = self._sensors[key] = Sensor(Rate(self.settings.window_ms, self.settings.windows), now_ms)
        else:
            self._sensors.move_to_end(key)
        sensor.last_ms = now_ms
        return sensor

    def record(self, kind: QuotaType, user: str, client_id: str, value: float, now_ms: int) -> Recorded | None:
        """Record ``value`` (bytes, or percent-seconds for REQUEST) and check the quota (Kafka's
        ``recordAndGetThrottleTimeMs``); None when no quota applies to this client."""
        r = self.resolution(kind, user, client_id)
        if r is None:
            return None
        rate = self._sensor(kind, r, now_ms).rate
        rate.record(value, now_ms)
        return Recorded(r, self._throttle_ms(kind, rate, r.limit, now_ms))

    def record_no_throttle(self, kind: QuotaType, user: str, client_id: str, value: float, now_ms: int) -> None:
        """Count ``value`` without a throttle for this request (the next one of the sensor pays for it)."""
        r = self.resolution(kind, user, client_id)
        if r is not None:
            self._sensor(kind, r, now_ms).rate.record(value, now_ms)

    def unrecord(self, kind: QuotaType, user: str, client_id: str, value: float, now_ms: int) -> None:
        """Take back a recorded value (a throttled fetch returns no data, so its bytes do not count)."""
        self.record_no_throttle(kind, user, client_id, -value, now_ms)

    def _throttle_ms(self, kind: QuotaType, rate: Rate, limit: float, now_ms: int) -> int:
        observed = rate.measure(now_ms)
        if observed <= limit:
            return 0
        throttle = (observed - limit) / limit * rate.window_size_ms(now_ms)
        return min(round(throttle), self.settings.throttle_max_ms(kind))

    def value_max_in_window(self, kind: QuotaType, user: str, client_id: str) -> float | None:
        """The most one request may record without being throttled for sure (Kafka's ``maxValueInQuotaWindow``,
        which bounds a fetch's max_bytes); None without a quota."""
        r = self.resolution(kind, user, client_id)
        if r is None:
            return None
        return r.limit * (self.settings.windows - 1) * self.settings.window_ms / 1000

    def measure(self, kind: QuotaType, user: str, client_id: str, now_ms: int) -> float | None:
        """The current rate of the client's sensor (per second), or None without a quota or a sensor."""
        r = self.resolution(kind, user, client_id)
        if r is None:
            return None
        sensor = self._sensors.get((kind, r.user, r.client_id))
        return None if sensor is None else sensor.rate.measure(now_ms)

    def expire(self, now_ms: int) -> int:
        """Drop the sensors idle longer than the measured span; how many were dropped."""
        span_ms = self.settings.windows * self.settings.window_ms
        idle = [key for key, s in self._sensors.items() if now_ms - s.last_ms > span_ms]
        for key in idle:
            del self._sensors[key]
        return len(idle)


def _enabled_types(quotas: Quotas) -> frozenset[QuotaType]:
    keys = {key for values in quotas.values() for key in values}
    return frozenset(kind for kind in QuotaType if kind.key in keys)


def user_name(principal: str) -> str:
    """The user a quota is looked up for: the principal's name ("User:alice" -> "alice", Kafka's
    ``KafkaPrincipal.getName``)."""
    _, sep, name = principal.partition(":")
    return name if sep else principal


def percent_seconds(nanos: int) -> float:
    """Event-loop time as the request quota records it."""
    return nanos * NANOS_TO_PERCENT_SECONDS
