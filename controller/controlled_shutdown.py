"""Controlled shutdown: what a stopping node asks of the cluster before its shards stop (sans-IO decisions).

Kafka's ControlledShutdown and Redpanda's maintenance mode on stop: a node asked to stop (SIGTERM) first puts its own
brokers in maintenance, so the state machine hands every partition they lead to another usable in-sync replica
(``state_machine._drain``), and, if it leads the Raft quorum, hands that leadership to the most caught-up other voter
(``RaftNode.transfer_leadership``, dissertation 3.10). Clients then see NOT_LEADER_OR_FOLLOWER and a new leader at
once instead of a dead port and a fencing. The node records which brokers it put in maintenance (the marker, written
by the controller process in its data directory) and ends their maintenance when it is back, not that of brokers an
operator put in maintenance.

The shell is ``rafka_shards.controller_node.controlled_shutdown``; these functions only read an image and a Raft
status.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from controller.image import MetadataImage
from controller.raft.node import Role, Status
from controller.raft.types import NodeId

MARKER_BYTES_MAX = 64 * 1024  # the marker lists a node's brokers: a few dozen ids at most


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """Brokers to put in maintenance now (and to record as put there by the shutdown); ``skipped`` says why none."""

    brokers: tuple[int, ...]
    skipped: str | None = None


def plan_drain(image: MetadataImage, local: Collection[int]) -> DrainPlan:
    """Which of this node's brokers to put in maintenance. None when no usable broker of another node could take
    their leadership (a single-node cluster, or every other node down or in maintenance): the drain would move
    nothing. Brokers already in maintenance or decommissioning are left alone (the operator's), as are fenced or
    unregistered ones (they lead nothing)."""
    others = [b for b, reg in image.brokers.items() if b not in local and reg.usable]
    if not others:
        return DrainPlan((), "no usable broker on another node to take leadership")
    mine = tuple(sorted(b for b in local if (reg := image.brokers.get(b)) is not None and reg.usable))
    return DrainPlan(mine, None if mine else "no usable broker on this node")


def leaders_to_move(image: MetadataImage, local: Collection[int]) -> int:
    """Partitions led by one of ``local`` that another usable in-sync replica could lead: what the drain has not
    moved yet. A partition whose only in-sync replicas are on this node keeps its leader (better than none)."""
    count = 0
    for topic in image.topics.values():
        for p in topic.partitions:
            if p.leader not in local:
                continue
            if any(r not in local and (reg := image.brokers.get(r)) is not None and reg.usable for r in p.isr):
                count += 1
    return count


def transfer_target(status: Status) -> NodeId | None:
    """The voter to hand Raft leadership to: the other voter with the highest match index (ties: the lowest id), so
    the transfer needs the least catching up. None unless this node leads and another voter exists."""
    if status.role != Role.LEADER:
        return None
    peers = [p for p in status.peers if p.node != status.node and p.node in status.conf.voters]
    if not peers:
        return None
    return max(peers, key=lambda p: (p.match, -p.node)).node


def encode_marker(brokers: Collection[int]) -> bytes:
    """The marker's content: the brokers the controlled shutdown put in maintenance."""
    return json.dumps({"version": 1, "brokers": sorted(set(brokers))}).encode()


def decode_marker(data: bytes) -> tuple[int, ...]:
    """The brokers a marker lists; ValueError if it is not one this code wrote."""
    if len(data) > MARKER_BYTES_MAX:
        raise ValueError(f"marker of {len(data)} bytes (at most {MARKER_BYTES_MAX})")
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("version") != 1 or not isinstance(body.get("brokers"), list):
        raise ValueError(f"not a controlled-shutdown marker: {data[:100]!r}")
    brokers = body["brokers"]
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in brokers):
        raise ValueError(f"marker brokers are not broker ids: {brokers[:10]!r}")
    return tuple(sorted(set(brokers)))


def brokers_to_restore(image: MetadataImage, marked: Collection[int]) -> tuple[int, ...]:
    """The brokers whose maintenance the node ends once it is back: those the marker lists that are still in
    maintenance (an operator may have ended it meanwhile)."""
    return tuple(sorted(b for b in marked if (reg := image.brokers.get(b)) is not None and reg.maintenance))
