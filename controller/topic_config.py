"""The topic configs this broker supports: name, type, default, bounds, documentation, and their validation.

Runs in every process; pure. Validation happens before a command enters the metadata log, so a bad value never does.
Names, defaults and meanings are Kafka's (TopicConfig.java). compression.type: the broker stores batches exactly as
the producer compressed them; only "producer" (the default) is accepted, because honouring another value would mean
recompressing on the produce path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigDef:
    name: str
    type: str  # Kafka's config types: "long", "int", "string", "boolean", "list"
    default: str
    doc: str
    check: Callable[[str], str | None]  # None if valid, else why not


def _long(lo: int, hi: int = 2**63 - 1) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            n = int(value)
        except ValueError:
            return f"{value!r} is not an integer"
        if not lo <= n <= hi:
            return f"{n} is outside [{lo}, {hi}]"
        return None

    return check


def _one_of(*choices: str, why: Mapping[str, str] | None = None) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        if why and value in why:
            return why[value]
        return f"{value!r} is not one of {', '.join(choices)}"

    return check


def _cleanup_policy(value: str) -> str | None:
    policies = [p.strip() for p in value.split(",")]
    if not value.strip() or any(p not in ("compact", "delete") for p in policies):
        return f"{value!r} is not a list of compact and delete"
    if len(set(policies)) != len(policies):
        return f"{value!r} names a policy twice"
    return None


def _ratio(value: str) -> str | None:
    try:
        ratio = float(value)
    except ValueError:
        return f"{value!r} is not a number"
    if not 0.0 <= ratio <= 1.0:
        return f"{ratio} is outside [0, 1]"
    return None


_DEFS = (
    ConfigDef(
        "cleanup.policy",
        "list",
        "delete",
        "What happens to old segments: delete (retention), compact (the latest record of every key is kept), or "
        "compact,delete (both).",
        _cleanup_policy,
    ),
    ConfigDef(
        "delete.retention.ms",
        "long",
        "86400000",
        "How long a tombstone (a null value) stays readable after the cleaner first passes it, on compacted topics.",
        _long(0),
    ),
    ConfigDef(
        "min.cleanable.dirty.ratio",
        "double",
        "0.5",
        "Clean a compacted log once this share of it has not been cleaned yet.",
        _ratio,
    ),
    ConfigDef(
        "min.compaction.lag.ms",
        "long",
        "0",
        "A record stays uncompacted at least this long after it is written.",
        _long(0),
    ),
    ConfigDef(
        "max.compaction.lag.ms",
        "long",
        "9223372036854775807",
        "A record becomes cleanable at most this long after it is written, whatever the dirty ratio.",
        _long(1),
    ),
    ConfigDef("retention.ms", "long", "604800000", "Delete segments older than this (-1: never).", _long(-1)),
    ConfigDef("retention.bytes", "long", "-1", "Delete old segments beyond this size (-1: never).", _long(-1)),
    ConfigDef("segment.bytes", "int", "1073741824", "Roll a new segment at this size.", _long(14, 1073741824)),
    ConfigDef("segment.ms", "long", "604800000", "Roll a new segment after this time.", _long(1)),
    ConfigDef("max.message.bytes", "int", "1048588", "Largest record batch accepted.", _long(0, 2**31 - 1)),
    ConfigDef(
        "message.timestamp.type",
        "string",
        "CreateTime",
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock.",
        _one_of("CreateTime", "LogAppendTime"),
    ),
    ConfigDef("min.insync.replicas", "int", "1", "Replicas that must have a write for acks=all.", _long(1, 2**31 - 1)),
    ConfigDef("index.interval.bytes", "int", "4096", "Bytes between offset index entries.", _long(0, 2**31 - 1)),
    ConfigDef(
        "compression.type",
        "string",
        "producer",
        "Batches are stored as the producer compressed them.",
        _one_of(
            "producer",
            why={
                c: f"compression.type={c} would need recompression on the produce path; only 'producer' is supported"
                for c in ("uncompressed", "gzip", "snappy", "lz4", "zstd")
            },
        ),
    ),
)

TOPIC_CONFIGS: Mapping[str, ConfigDef] = {d.name: d for d in _DEFS}


def validate_topic_configs(configs: Mapping[str, str]) -> str | None:
    for name, value in configs.items():
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            return f"unknown topic config {name!r}"
        problem = definition.check(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None
