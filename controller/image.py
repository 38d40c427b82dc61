"""The metadata image: an immutable snapshot of cluster metadata at one log offset (KRaft's MetadataImage).

Runs in every process; pure. Readers hold an image and never see it change; applying a command makes a new image
(copy-on-write of the changed topic or broker only).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    broker_id: int
    host: str
    port: int
    rack: str | None
    incarnation: str


@dataclass(frozen=True, slots=True)
class PartitionImage:
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionImage, ...]
    configs: Mapping[str, str]


_EMPTY: Mapping[int, BrokerRegistration] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MetadataImage:
    offset: int  # offset of the last applied command (-1: none)
    cluster_id: str
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: _EMPTY)
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    topics_by_id: Mapping[uuid.UUID, str] = field(default_factory=lambda: MappingProxyType({}))
    next_producer_id: int = 0  # the first producer id no broker has been given yet
    # The newest block of producer ids each broker was given: [start, end).
    producer_id_blocks: Mapping[int, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))
