"""``GET /metrics`` for the whole node: every shard's counters and histograms, plus live gauges, in one exposition.

Runs in the controller process. Counters and histograms come from prometheus-client's multiprocess files, which every
shard process writes (``rafka_shards.shard.probe``) and which outlive the process, so a restarted shard's counts are not
lost. Gauges come from the shards that are alive right now (asked over the controller channel just before the
exposition is rendered) and from psutil for each shard process: CPU seconds, resident memory, restarts. Partition
health (under-replicated, leaderless) is counted from this node's metadata image, and the data directory's
filesystem from ``os.statvfs``, both when the exposition is rendered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from controller.balancer import BalancerState
from controller.image import MetadataImage
from controller.raft.types import NO_NODE
from rafka_shards.admin.groups_view import GroupMetrics, group_metrics
from rafka_shards.admin.ports import MetadataReader, NodeView, Quorum
from rafka_shards.ipc.channel import Stats
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity
from rafka_shards.storage.free_space import filesystem_space

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class PartitionHealth:
    """Partitions that need an operator, as one node's metadata image shows them."""

    under_replicated: int  # led by one of this node's brokers, with fewer in-sync replicas than replicas
    leaderless: int  # in the whole cluster: no leader at all (Kafka's offline partitions)


def partition_health(image: MetadataImage, local_brokers: Collection[int]) -> PartitionHealth:
    """Under-replicated partitions are counted by their leader's node only, so that summing over nodes counts each
    once; leaderless ones have no leader to count them, so every node counts all of them (take the max over nodes)."""
    under = leaderless = 0
    for topic in image.topics.values():
        for p in topic.partitions:
            if p.leader < 0:
                leaderless += 1
            elif p.leader in local_brokers and len(p.isr) < len(p.replicas):
                under += 1
    return PartitionHealth(under, leaderless)


class NodeMetrics:
    """A prometheus-client collector of this node's live gauges, beside the shards' multiprocess counters."""

    def __init__(
        self,
        node: NodeView,
        quorum: Quorum,
        metadata: MetadataReader,
        metrics_dir: Path,
        data_dir: Path,
        inter_broker: ClientSecurity = PLAINTEXT,
    ) -> None:
        self._node = node
        self._inter_broker = inter_broker  # the group coordinators are asked over the inter-broker listener
        self._quorum = quorum
        self._metadata = metadata
        self._data_dir = data_dir
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        self.registry.register(self)
        self._stats: dict[int, Stats] = {}
        self._groups = GroupMetrics({}, {}, {}, {})

    async def render(self) -> bytes:
        stats = await self._node.gather_stats()
        local = {s.broker_id for s in self._node.slots}
        groups = await group_metrics(self._metadata.image, stats, local, self._inter_broker)
        # No await between setting the snapshot and rendering it: concurrent scrapes cannot mix snapshots.
        self._stats = stats
        self._groups = groups
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        yield from self._shard_metrics()
        yield from self._partition_metrics()
        yield from self._group_metrics()
        yield from self._raft_metrics()
        yield from self._health_metrics()
        yield from self._balancer_metrics()
        yield from self._disk_metrics()

    def _health_metrics(self) -> Iterator[Metric]:
        health = partition_health(self._metadata.image, {s.broker_id for s in self._node.slots})
        under = GaugeMetricFamily(
            "rafka_partitions_under_replicated",
            "partitions led by this node's brokers whose ISR is smaller than their replica set (sum over nodes)",
        )
        under.add_metric([], health.under_replicated)
        leaderless = GaugeMetricFamily(
            "rafka_partitions_leaderless",
            "partitions of the cluster without a leader, as this node's metadata image shows them (max over nodes)",
        )
        leaderless.add_metric([], health.leaderless)
        yield from (under, leaderless)

    def _balancer_metrics(self) -> Iterator[Metric]:
        st = self._quorum.balancer_status()
        moving = GaugeMetricFamily(
            "rafka_partition_reassignments_in_progress",
            "partitions whose new replicas are still copying the log, as this node's metadata image shows (max over "
            "nodes)",
        )
        moving.add_metric([], len(st.reassignments))
        gone = GaugeMetricFamily(
            "rafka_nodes_unavailable",
            "nodes all of whose brokers are fenced, as this node's metadata image shows (max over nodes)",
        )
        gone.add_metric([], len(st.unavailable_nodes))
        stalled = GaugeMetricFamily(
            "rafka_partition_balancer_stalled",
            "1 if the replicas of a node gone longer than node_unavailable_timeout_ms cannot be re-created",
        )
        stalled.add_metric([], 1.0 if st.state is BalancerState.STALLED else 0.0)
        moves = CounterMetricFamily(
            "rafka_partition_balancer_moves",
            "commands the partition balancer proposed while this node was the active controller",
            labels=["kind"],
        )
        moves.add_metric(["replica"], st.replica_moves_total)
        moves.add_metric(["leader"], st.leader_moves_total)
        moves.add_metric(["recreate"], st.recreate_moves_total)
        yield from (moving, gone, stalled, moves)

    def _disk_metrics(self) -> Iterator[Metric]:
        # The supervisor keeps the multiprocess files in data_dir/metrics: their parent is the data directory.
        size = GaugeMetricFamily("rafka_data_dir_size_bytes", "size of the filesystem holding the data directory")
        avail = GaugeMetricFamily(
            "rafka_data_dir_avail_bytes", "bytes of the data directory's filesystem free for the broker (not root)"
        )
        try:
            total, free = filesystem_space(self._data_dir)
        except OSError:
            pass  # the directory went away (the node is stopping): no samples rather than a failed scrape
        else:
            size.add_metric([], total)
            avail.add_metric([], free)
        yield from (size, avail)

    def _group_metrics(self) -> Iterator[Metric]:
        """The groups this node's shards coordinate: consumer lag is the number people alert on."""
        g = self._groups
        members = GaugeMetricFamily("rafka_group_members", "members of the group", labels=["group"])
        state = GaugeMetricFamily("rafka_group_state", "1 for the group's current state", labels=["group", "state"])
        for group, n in sorted(g.members.items()):
            members.add_metric([group], n)
            state.add_metric([group, g.states[group]], 1)
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("rafka_group_committed_offset", "the group's committed offset", labels=labels)
        lag = GaugeMetricFamily(
            "rafka_group_lag", "records between the committed offset and the high watermark", labels=labels
        )
        for (group, topic, partition), offset in sorted(g.committed.items()):
            committed.add_metric([group, topic, str(partition)], offset)
        for (group, topic, partition), n in sorted(g.lag.items()):
            lag.add_metric([group, topic, str(partition)], n)
        yield from (members, state, committed, lag)

    def _shard_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("rafka_shard_up", "1 if the shard process is running and ready", labels=["shard"])
        restarts = CounterMetricFamily(
            "rafka_shard_restarts", "times the supervisor restarted the shard after it died", labels=["shard"]
        )
        cpu = CounterMetricFamily(
            "rafka_shard_cpu_seconds", "user+system CPU time of the current shard process", labels=["shard"]
        )
        rss = GaugeMetricFamily("rafka_shard_resident_memory_bytes", "resident set size of the shard", labels=["shard"])
        connections = GaugeMetricFamily("rafka_active_connections", "open Kafka client connections", labels=["shard"])
        for slot in self._node.slots:
            shard = str(slot.index)
            up.add_metric([shard], 1.0 if slot.ready else 0.0)
            restarts.add_metric([shard], slot.restarts_total)
            pid = slot.pid
            if pid is not None and slot.alive:
                try:
                    proc = psutil.Process(pid)
                    with proc.oneshot():
                        times = proc.cpu_times()
                        cpu.add_metric([shard], times.user + times.system)
                        rss.add_metric([shard], proc.memory_info().rss)
                except psutil.Error:
                    pass  # exited between the check and the read
            stats = self._stats.get(slot.index)
            if stats is not None:
                connections.add_metric([shard], stats.connections)
        yield from (up, restarts, cpu, rss, connections)
        yield from self._cleaner_metrics()

    def _cleaner_metrics(self) -> Iterator[Metric]:
        labels = ["shard"]
        passes = CounterMetricFamily("rafka_log_cleaner_passes", "log cleaner passes swapped in", labels=labels)
        failures = CounterMetricFamily("rafka_log_cleaner_failures", "log cleaner passes that failed", labels=labels)
        read = CounterMetricFamily("rafka_log_cleaner_read_bytes", "bytes the log cleaner read", labels=labels)
        written = CounterMetricFamily("rafka_log_cleaner_written_bytes", "bytes the log cleaner wrote", labels=labels)
        seconds = CounterMetricFamily("rafka_log_cleaner_seconds", "time spent in cleaner passes", labels=labels)
        ratio = GaugeMetricFamily(
            "rafka_log_cleaner_max_dirty_ratio", "the highest dirty ratio of the shard's compacted logs", labels=labels
        )
        for index, stats in self._stats.items():
            c, shard = stats.cleaner, [str(index)]
            passes.add_metric(shard, c.passes)
            failures.add_metric(shard, c.failures)
            read.add_metric(shard, c.bytes_read)
            written.add_metric(shard, c.bytes_written)
            seconds.add_metric(shard, c.seconds)
            ratio.add_metric(shard, c.max_dirty_ratio)
        yield from (passes, failures, read, written, seconds, ratio)

    def _partition_metrics(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        leo = GaugeMetricFamily("rafka_partition_log_end_offset", "offset the next record will get", labels=labels)
        hw = GaugeMetricFamily("rafka_partition_high_watermark", "offset up to which consumers read", labels=labels)
        start = GaugeMetricFamily("rafka_partition_log_start_offset", "first offset still in the log", labels=labels)
        size = GaugeMetricFamily("rafka_partition_size_bytes", "bytes of the partition's segments", labels=labels)
        for stats in self._stats.values():
            for p in stats.partitions:
                key = [p.topic, str(p.partition)]
                leo.add_metric(key, p.log_end_offset)
                hw.add_metric(key, p.high_watermark)
                start.add_metric(key, p.log_start_offset)
                size.add_metric(key, p.size_bytes)
        yield from (leo, hw, start, size)

    def _raft_metrics(self) -> Iterator[Metric]:
        quorum = self._quorum
        image = self._metadata.image
        st = quorum.status()
        offset = GaugeMetricFamily("rafka_metadata_offset", "offset of the last metadata record applied on this node")
        offset.add_metric([], image.offset)
        term = GaugeMetricFamily("rafka_raft_term", "the controller quorum's current term as this node knows it")
        term.add_metric([], st.term)
        commit = GaugeMetricFamily("rafka_raft_commit_index", "highest Raft index known committed")
        commit.add_metric([], st.commit)
        lag = GaugeMetricFamily("rafka_raft_apply_lag", "committed Raft entries not yet applied on this node")
        lag.add_metric([], max(0, st.commit - quorum.applied_offset))
        leader = GaugeMetricFamily("rafka_raft_is_leader", "1 if this node leads the controller quorum")
        leader.add_metric([], 1.0 if st.role.value == "leader" else 0.0)
        has_leader = GaugeMetricFamily(
            "rafka_raft_has_leader", "1 if this node knows a leader of the controller quorum in its current term"
        )
        has_leader.add_metric([], 0.0 if st.leader == NO_NODE else 1.0)
        changes = CounterMetricFamily("rafka_raft_leader_changes", "leaders this node has seen since it started")
        changes.add_metric([], quorum.leader_changes)
        fsync = HistogramMetricFamily("rafka_raft_fsync_seconds", "time to write and fsync one Raft Ready")
        h = quorum.fsync_seconds
        fsync.add_metric([], h.cumulative(), h.sum)
        dropped = CounterMetricFamily(
            "rafka_raft_dropped_frames",
            "controller frames dropped (bad MAC, unknown node, malformed...)",
            labels=["reason"],
        )
        for reason, count in sorted(quorum.dropped_frames.items()):
            dropped.add_metric([reason], count)
        fenced = GaugeMetricFamily("rafka_brokers_fenced", "registered brokers whose lease expired")
        fenced.add_metric([], sum(1 for b in image.brokers.values() if b.fenced))
        shard_lag = GaugeMetricFamily(
            "rafka_shard_metadata_lag",
            "metadata records applied by the controller, not yet by the shard",
            labels=["shard"],
        )
        for slot in self._node.slots:
            if slot.session is not None:
                shard_lag.add_metric([str(slot.index)], slot.session.metadata_lag)
        controller_restarts = CounterMetricFamily(
            "rafka_controller_restarts", "times the supervisor restarted this node's controller process"
        )
        controller_restarts.add_metric([], self._node.restarts)
        yield from (offset, term, commit, lag, leader, has_leader, changes, fsync, dropped, fenced)
        yield from (shard_lag, controller_restarts)
