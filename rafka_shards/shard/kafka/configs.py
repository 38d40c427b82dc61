"""Config descriptions shared by DescribeConfigs and CreateTopics v5+: value, source, type, documentation.

Runs in a shard process. Topic configs are defined (with validation) by the controller's ``topic_config``; where a
topic config has a broker-wide default in ``BrokerConfig`` (Kafka's log.* settings), that default is reported.
Numbers are Kafka's: config_source 1 = topic, 4 = static broker config, 5 = default; config_type as in
DescribeConfigsResponse.json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controller.topic_config import TOPIC_CONFIGS
from rafka_shards.config import BrokerConfig

SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6, "list": 7, "class": 8}

# Topic configs whose default comes from the broker's configuration (Kafka: log.retention.ms -> retention.ms, ...).
_BROKER_DEFAULTS: Mapping[str, tuple[str, Callable[[BrokerConfig], object]]] = {
    "retention.ms": ("log.retention.ms", lambda c: c.log_retention_ms),
    "retention.bytes": ("log.retention.bytes", lambda c: c.log_retention_bytes),
    "segment.bytes": ("log.segment.bytes", lambda c: c.log_segment_bytes),
    "segment.ms": ("log.roll.ms", lambda c: c.log_segment_ms),
    "max.message.bytes": ("message.max.bytes", lambda c: c.message_max_bytes),
}

# Broker configs reported for a BROKER resource: Kafka name -> (type, value, documentation).
_BROKER_CONFIGS: Sequence[tuple[str, str, Callable[[BrokerConfig], object], str]] = (
    ("broker.id", "int", lambda c: c.broker_id, "this broker's id"),
    ("auto.create.topics.enable", "boolean", lambda c: c.auto_create_topics, "create unknown topics on use"),
    ("num.partitions", "int", lambda c: c.default_partitions, "partitions of auto-created topics"),
    ("default.replication.factor", "int", lambda c: c.default_replication_factor, "replication factor default"),
    ("log.retention.ms", "long", lambda c: c.log_retention_ms, "retention.ms default"),
    ("log.retention.bytes", "long", lambda c: c.log_retention_bytes, "retention.bytes default"),
    ("log.segment.bytes", "int", lambda c: c.log_segment_bytes, "segment.bytes default"),
    ("log.roll.ms", "long", lambda c: c.log_segment_ms, "segment.ms default"),
    ("message.max.bytes", "int", lambda c: c.message_max_bytes, "largest record batch accepted"),
    ("socket.request.max.bytes", "int", lambda c: c.socket_request_max_bytes, "largest request frame"),
    ("log.flush.interval.ms", "long", lambda c: c.flush_interval_ms, "fsync interval in durability=flush mode"),
)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _entry(
    name: str, value: str | None, source: int, config_type: str, doc: str | None, synonyms: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "read_only": False,
        "config_source": source,
        "is_default": source == SOURCE_DEFAULT,
        "is_sensitive": False,
        "synonyms": synonyms,
        "config_type": CONFIG_TYPES.get(config_type, 0),
        "documentation": doc,
    }


def describe_topic_configs(
    config: BrokerConfig, overrides: Mapping[str, str], keys: Sequence[str] | None, *, with_documentation: bool
) -> list[dict[str, Any]]:
    out = []
    for name, definition in sorted(TOPIC_CONFIGS.items()):
        if keys is not None and name not in keys:
            continue
        synonyms: list[dict[str, Any]] = []
        broker_default = _BROKER_DEFAULTS.get(name)
        if broker_default is not None:
            default_value: str | None = _text(broker_default[1](config))
            default_source = SOURCE_STATIC_BROKER
        else:
            default_value = definition.default
            default_source = SOURCE_DEFAULT
        if name in overrides:
            value: str | None = overrides[name]
            source = SOURCE_TOPIC
            synonyms.append({"name": name, "value": value, "source": SOURCE_TOPIC})
        else:
            value, source = default_value, default_source
        if broker_default is not None:
            synonyms.append({"name": broker_default[0], "value": default_value, "source": SOURCE_STATIC_BROKER})
        doc = definition.doc if with_documentation else None
        out.append(_entry(name, value, source, definition.type, doc, synonyms))
    return out


def describe_broker_configs(
    config: BrokerConfig, keys: Sequence[str] | None, *, with_documentation: bool
) -> list[dict[str, Any]]:
    out = []
    for name, config_type, get, doc in _BROKER_CONFIGS:
        if keys is not None and name not in keys:
            continue
        value = _text(get(config))
        synonyms = [{"name": name, "value": value, "source": SOURCE_STATIC_BROKER}]
        out.append(
            _entry(name, value, SOURCE_STATIC_BROKER, config_type, doc if with_documentation else None, synonyms)
        )
    return out
