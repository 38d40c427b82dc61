"""Replica placement for new partitions: balanced by partition count and leader count, racks spread when known.

Runs wherever topics are created (``controller.topics``) and on the controller leader (drain moves); pure and
deterministic for a given image (ties broken by broker id). Only usable brokers (not fenced, not in maintenance, not
decommissioning) get new replicas, and at most one replica of a partition goes to each node (the shards of one
node share its disks and fail together, as Redpanda's cores do).
"""

from __future__ import annotations

import collections
from collections.abc import Set

from controller.commands import ReassignPartition
from controller.image import MetadataImage


def usable_brokers(image: MetadataImage) -> list[int]:
    return sorted(b for b, reg in image.brokers.items() if reg.usable)


def usable_nodes(image: MetadataImage) -> int:
    """How many nodes have a usable broker: the largest replication factor placement can satisfy."""
    return len({image.brokers[b].node for b in usable_brokers(image)})


def replica_counts(image: MetadataImage) -> collections.Counter[int]:
    """How many partitions list each broker as a replica."""
    return collections.Counter(r for t in image.topics.values() for p in t.partitions for r in p.replicas)


def place_partitions(
    image: MetadataImage, partitions: int, replication_factor: int, start_partition: int = 0
) -> tuple[tuple[int, ...], ...]:
    """Replicas for ``partitions`` new partitions (the first numbered ``start_partition``; placement does not depend
    on it): each leader is the usable broker with the fewest leaders, each follower the one with the fewest replicas
    on a node (and, when racks are known, a rack) the partition does not use yet. Raises ValueError when fewer nodes
    than ``replication_factor`` have a usable broker."""
    brokers = usable_brokers(image)
    nodes = usable_nodes(image)
    if replication_factor > nodes:
        raise ValueError(
            f"replication factor {replication_factor} is larger than the {nodes} node(s) with an available broker "
            "(registered, not fenced, not in maintenance or decommissioning; one replica per node)"
        )
    node_of = {b: image.brokers[b].node for b in brokers}
    replicas_on = replica_counts(image)
    leaders_on = collections.Counter(p.replicas[0] for t in image.topics.values() for p in t.partitions if p.replicas)
    rack_of = {b: image.brokers[b].rack for b in brokers}
    out = []
    for _ in range(partitions):
        chosen: list[int] = []
        # Leader: fewest leaders, then fewest replicas.
        leader = min(brokers, key=lambda b: (leaders_on[b], replicas_on[b], b))
        chosen.append(leader)
        while len(chosen) < replication_factor:
            used_racks = {rack_of[b] for b in chosen if rack_of[b] is not None}
            used_nodes = {node_of[b] for b in chosen}
            candidates = [b for b in brokers if node_of[b] not in used_nodes]
            chosen.append(
                min(candidates, key=lambda b: (rack_of[b] is not None and rack_of[b] in used_racks, replicas_on[b], b))
            )
        leaders_on[leader] += 1
        replicas_on.update(chosen)
        out.append(tuple(chosen))
    return tuple(out)


def grow_replicas(image: MetadataImage, replicas: tuple[int, ...], replication_factor: int) -> tuple[int, ...]:
    """``replicas`` extended to ``replication_factor`` with the usable brokers that hold the fewest replicas."""
    replicas_on = replica_counts(image)
    used_nodes = {image.brokers[r].node for r in replicas if r in image.brokers}
    chosen = list(replicas)
    for b in sorted(usable_brokers(image), key=lambda b: (replicas_on[b], b)):
        if len(chosen) == replication_factor:
            break
        if image.brokers[b].node not in used_nodes:
            chosen.append(b)
            used_nodes.add(image.brokers[b].node)
    if len(chosen) < replication_factor:
        raise ValueError(
            f"replication factor {replication_factor} needs {replication_factor - len(replicas)} more node(s) with "
            f"a usable broker, {len(chosen) - len(replicas)} available"
        )
    return tuple(chosen)


def drain_moves(image: MetadataImage, limit: int) -> list[ReassignPartition]:
    """Reassignments that move replicas off decommissioning brokers (at most ``limit``): see ``replacement_moves``.

    The controller's leader proposes these until no partition lists the broker (then it is drained). The new replicas
    copy the log first; the leaving ones go once the new ones are in sync, so the data never has fewer copies.
    """
    leaving = {b for b, reg in image.brokers.items() if reg.decommissioning}
    return replacement_moves(image, leaving, limit)


def replacement_moves(
    image: MetadataImage, leaving: set[int], limit: int, skip: Set[tuple[str, int]] = frozenset()
) -> list[ReassignPartition]:
    """Reassignments that replace the ``leaving`` brokers (at most ``limit``): each partition that lists one, and is
    neither being reassigned already nor in ``skip``, keeps its other replicas and gets, in place of each leaving
    broker, a usable broker on a node it does not use yet (fewest replicas first). Partitions with no such broker
    stay put."""
    if not leaving or limit <= 0:
        return []
    counts = replica_counts(image)
    usable = usable_brokers(image)
    moves: list[ReassignPartition] = []
    for topic in sorted(image.topics.values(), key=lambda t: t.name):
        for p in topic.partitions:
            if p.adding or not leaving.intersection(p.replicas) or (topic.name, p.partition) in skip:
                continue
            used_nodes = {image.brokers[r].node for r in p.replicas if r in image.brokers}
            target: list[int] = []
            for r in p.replicas:
                if r not in leaving:
                    target.append(r)
                    continue
                candidates = [b for b in usable if image.brokers[b].node not in used_nodes]
                if not candidates:
                    break
                chosen = min(candidates, key=lambda b: (counts[b], b))
                target.append(chosen)
                used_nodes.add(image.brokers[chosen].node)
                counts[chosen] += 1
            else:
                moves.append(ReassignPartition(topic.name, p.partition, tuple(target)))
                if len(moves) >= limit:
                    return moves
    return moves
