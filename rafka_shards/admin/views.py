"""The JSON shapes of the admin API's resources, made from the metadata image: brokers, topics, partitions, health.

Runs in the controller process; pure (no aiohttp, no I/O): each function reads the image (and, for health, the Raft
status) it is given.
"""

from __future__ import annotations

import collections
from typing import Any

from controller.image import MetadataImage, PartitionImage, TopicImage
from controller.placement import replica_counts
from controller.raft.node import Status
from controller.raft.types import NO_NODE

UNHEALTHY_LISTED_MAX = 1000  # partitions named per reason in the health overview (all are counted)


def brokers_json(image: MetadataImage, broker_ids: list[int]) -> list[dict[str, Any]]:
    """The brokers with their status and partition counts (one pass over the partitions for all of them)."""
    replicas_on = replica_counts(image)
    leaders_on = collections.Counter(p.leader for t in image.topics.values() for p in t.partitions)
    out = []
    for broker_id in broker_ids:
        b = image.brokers[broker_id]
        replicas = replicas_on[broker_id]
        if b.fenced:
            status = "fenced"
        elif b.decommissioning:
            status = "decommissioning" if replicas else "drained"
        elif b.maintenance:
            status = "maintenance"
        else:
            status = "active"
        out.append(
            {
                "broker_id": b.broker_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "incarnation": b.incarnation,
                "epoch": b.epoch,  # the broker epoch: offset of this incarnation's RegisterBroker record
                "status": status,
                "fenced": b.fenced,
                "maintenance": b.maintenance,
                "decommissioning": b.decommissioning,
                "leader_partitions": leaders_on[broker_id],
                "replica_partitions": replicas,
            }
        )
    return out


def partition_json(t: TopicImage, p: PartitionImage) -> dict[str, Any]:
    return {
        "topic": t.name,
        "partition": p.partition,
        "leader": p.leader,
        "leader_epoch": p.leader_epoch,
        "partition_epoch": p.partition_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "adding_replicas": list(p.adding),  # a reassignment in progress: these copy the log, then
        "removing_replicas": list(p.removing),  # these leave
    }


def topic_json(t: TopicImage) -> dict[str, Any]:
    return {
        "name": t.name,
        "topic_id": str(t.topic_id),
        "partitions": len(t.partitions),
        "replication_factor": len(t.partitions[0].replicas),
        "configs": dict(t.configs),
    }


def health_overview(image: MetadataImage, status: Status) -> dict[str, Any]:
    """Healthy, or the reasons why not: no controller leader, fenced brokers, leaderless or under-replicated
    partitions."""
    leaderless: list[str] = []
    under_replicated: list[str] = []
    for t in sorted(image.topics.values(), key=lambda t: t.name):
        for p in t.partitions:
            if p.leader < 0:
                leaderless.append(f"{t.name}/{p.partition}")
            if len(p.isr) < len(p.replicas):
                under_replicated.append(f"{t.name}/{p.partition}")
    nodes_down = sorted(b for b, reg in image.brokers.items() if reg.fenced)
    reasons = []
    if status.leader == NO_NODE:
        reasons.append("controller_unavailable")
    if nodes_down:
        reasons.append("nodes_down")
    if leaderless:
        reasons.append("leaderless_partitions")
    if under_replicated:
        reasons.append("under_replicated_partitions")
    return {
        "is_healthy": not reasons,
        "unhealthy_reasons": reasons,
        "controller_id": status.leader or None,
        "all_nodes": sorted(image.brokers),
        "nodes_down": nodes_down,
        "leaderless_count": len(leaderless),
        "leaderless_partitions": leaderless[:UNHEALTHY_LISTED_MAX],
        "under_replicated_count": len(under_replicated),
        "under_replicated_partitions": under_replicated[:UNHEALTHY_LISTED_MAX],
    }
