"""Per-partition log settings, Kafka's topic config names mapped onto typed fields with units.

Runs in the shard that owns the partition; sans-IO. The storage layer's fixed limits are named here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

SEGMENT_BYTES_MAX = 1024 * 1024 * 1024  # file positions are u32 in the offset index
RECENT_BATCHES_MAX = 4096  # (offset -> position) of a segment's newest batches, so tailing readers skip the index scan


@dataclass(frozen=True, slots=True)
class LogConfig:
    segment_bytes: int = SEGMENT_BYTES_MAX
    segment_ms: int = 7 * 24 * 3600 * 1000
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1 = unlimited
    retention_bytes: int = -1  # -1 = unlimited
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1_048_588
    message_timestamp_type: str = "CreateTime"
    cleanup_policy: str = "delete"  # "delete", "compact" or "compact,delete" (Kafka's cleanup.policy list)
    delete_retention_ms: int = 24 * 3600 * 1000  # how long a tombstone outlives the cleaner's first pass over it
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0  # a record stays uncompacted at least this long
    max_compaction_lag_ms: int = 2**63 - 1  # ... and becomes cleanable at most this long after it was written

    def __post_init__(self) -> None:
        if not 14 <= self.segment_bytes <= SEGMENT_BYTES_MAX:
            raise ValueError(f"segment.bytes must be in 14..{SEGMENT_BYTES_MAX}, got {self.segment_bytes}")
        if self.segment_ms < 1:
            raise ValueError(f"segment.ms must be >= 1, got {self.segment_ms}")
        if self.retention_ms < -1 or self.retention_bytes < -1:
            raise ValueError("retention.ms and retention.bytes must be >= -1")
        if self.index_interval_bytes < 0 or self.max_message_bytes < 0:
            raise ValueError("index.interval.bytes and max.message.bytes must be >= 0")
        if self.message_timestamp_type not in ("CreateTime", "LogAppendTime"):
            raise ValueError(
                f"message.timestamp.type must be CreateTime or LogAppendTime, got {self.message_timestamp_type!r}"
            )
        policies = self.cleanup_policy.split(",")
        if not policies or not set(policies) <= {"compact", "delete"} or len(set(policies)) != len(policies):
            raise ValueError(f"cleanup.policy must be delete, compact or compact,delete, got {self.cleanup_policy!r}")
        if not 0.0 <= self.min_cleanable_dirty_ratio <= 1.0:
            raise ValueError(f"min.cleanable.dirty.ratio must be in [0, 1], got {self.min_cleanable_dirty_ratio}")
        if self.delete_retention_ms < 0 or self.min_compaction_lag_ms < 0 or self.max_compaction_lag_ms < 1:
            raise ValueError("delete.retention.ms and min.compaction.lag.ms must be >= 0, max.compaction.lag.ms >= 1")

    @property
    def compact(self) -> bool:
        """Log compaction keeps the latest record of every key (cleanup.policy has compact). Read on the produce
        path: a substring test suffices, ``__post_init__`` having checked the list holds only compact and delete."""
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        """Retention deletes old segments (cleanup.policy has delete)."""
        return "delete" in self.cleanup_policy

    @staticmethod
    def from_topic_configs(configs: Mapping[str, str], defaults: LogConfig) -> LogConfig:
        changes: dict[str, object] = {}
        for key, field in _INT_KEYS.items():
            if key in configs:
                try:
                    changes[field] = int(configs[key])
                except ValueError:
                    raise ValueError(f"{key} must be an integer, got {configs[key]!r}") from None
        if "message.timestamp.type" in configs:
            changes["message_timestamp_type"] = configs["message.timestamp.type"]
        if "cleanup.policy" in configs:
            changes["cleanup_policy"] = ",".join(p.strip() for p in configs["cleanup.policy"].split(","))
        if "min.cleanable.dirty.ratio" in configs:
            try:
                changes["min_cleanable_dirty_ratio"] = float(configs["min.cleanable.dirty.ratio"])
            except ValueError:
                raise ValueError(
                    f"min.cleanable.dirty.ratio must be a number, got {configs['min.cleanable.dirty.ratio']!r}"
                ) from None
        return dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]


_INT_KEYS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "delete.retention.ms": "delete_retention_ms",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
}
