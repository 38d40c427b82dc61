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


_DEFS = (
    ConfigDef(
        "cleanup.policy",
        "list",
        "delete",
        "What happens to old segments: deleted by retention.",
        _one_of("delete", why={"compact": "log compaction is not supported; use cleanup.policy=delete"}),
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
