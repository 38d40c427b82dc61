"""The partition-health gauges of ``/metrics`` (rafka_shards/admin/metrics.py) and the ISR change counters of the shard
probe (rafka_shards/shard/probe.py): what each counts, and that no partition is counted twice across nodes."""

from __future__ import annotations

import uuid
from types import MappingProxyType

from controller.image import MetadataImage, PartitionImage, TopicImage
from rafka_shards.admin.metrics import PartitionHealth, partition_health
from rafka_shards.shard.probe import ISR_EXPANDS, ISR_SHRINKS, Probe, isr_change


def _image(*partitions: PartitionImage) -> MetadataImage:
    topic = TopicImage("t", uuid.uuid4(), partitions, MappingProxyType({}))
    return MetadataImage(offset=5, cluster_id="c", topics=MappingProxyType({"t": topic}))


def _p(index: int, replicas: tuple[int, ...], isr: tuple[int, ...], leader: int) -> PartitionImage:
    return PartitionImage(index, replicas, isr, leader, 1, 1)


def test_under_replicated_partitions_are_counted_by_the_node_of_their_leader_only() -> None:
    image = _image(
        _p(0, (0, 10, 20), (0, 10, 20), 0),  # full ISR
        _p(1, (0, 10, 20), (0, 10), 0),  # node of broker 0 leads, one replica out
        _p(2, (0, 10, 20), (10,), 10),  # led by another node's broker
        _p(3, (0,), (0,), 0),  # one replica, in sync: not under-replicated
    )
    nodes = [{0, 1}, {10}, {20}]  # each node's brokers (its shards)
    counts = [partition_health(image, brokers).under_replicated for brokers in nodes]
    assert counts == [1, 1, 0]
    assert sum(counts) == 2  # what a dashboard sums over nodes: each partition once


def test_leaderless_partitions_are_counted_by_every_node() -> None:
    image = _image(
        _p(0, (0, 10, 20), (0,), -1),  # its last in-sync replica is fenced
        _p(1, (20,), (20,), -1),
        _p(2, (0, 10, 20), (0, 10), 0),
    )
    # A leaderless partition has nobody to count it as under-replicated; every node sees it as leaderless.
    assert partition_health(image, {0}) == PartitionHealth(under_replicated=1, leaderless=2)
    assert partition_health(image, {20}) == PartitionHealth(under_replicated=0, leaderless=2)
    assert partition_health(MetadataImage(offset=-1, cluster_id="c"), {0}) == PartitionHealth(0, 0)


def test_an_isr_change_is_a_shrink_an_expand_or_both() -> None:
    assert isr_change((0, 10, 20), (0, 10)) == (True, False)
    assert isr_change((0, 10), (0, 10, 20)) == (False, True)
    assert isr_change((0, 10), (0, 20)) == (True, True)
    assert isr_change((0, 10), (10, 0)) == (False, False)  # the same set in another order


def test_the_probe_counts_isr_changes() -> None:
    shrinks, expands = ISR_SHRINKS._value.get(), ISR_EXPANDS._value.get()
    probe = Probe()
    probe.isr_changed((0, 10, 20), (0, 10))
    probe.isr_changed((0, 10), (0, 20))
    probe.isr_changed((0, 20), (0, 10, 20))
    assert ISR_SHRINKS._value.get() - shrinks == 2
    assert ISR_EXPANDS._value.get() - expands == 2
