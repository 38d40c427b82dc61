"""What the admin API does to the cluster: topic, partition and broker changes as validated metadata commands, and
the read-only views (partition offsets, health) that need more than the image.

Runs in the controller process. Every change is a typed command committed through the Raft quorum by this node's
``ControllerServer`` (a follower forwards it to the leader), and returns once this node's shards have applied it,
so a client that goes to the leader right after a 2xx is served. A change that does not validate raises
``CommandRejected`` with the state machine's reason and nothing is proposed. Changes that take several commands (a
replication factor applied partition by partition) are checked against the current image first, so a request that
cannot succeed as a whole proposes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.schema.list_offsets.v1.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.list_offsets.v1.response import ListOffsetsResponse
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i32, i64

from controller.commands import (
    AlterTopicConfigs,
    ChangePartition,
    Command,
    CreatePartitions,
    CreateTopic,
    DecommissionBroker,
    DeleteTopic,
    ReassignPartition,
    SetBrokerMaintenance,
)
from controller.image import MetadataImage, PartitionImage, TopicImage
from controller.placement import grow_replicas, place_partitions
from controller.raft.types import NO_NODE
from controller.state_machine import CommandRejected, Rejection, RejectKind, validate
from rafka_shards.admin.requests import BadRequest, CreateTopicRequest, PatchTopicRequest
from rafka_shards.ipc.kafka_client import KafkaClient, KafkaClientError

if TYPE_CHECKING:
    from rafka_shards.controller_node.process import ControllerHost

OFFSETS_TIMEOUT_S = 5.0
OFFSETS_RESPONSE_BYTES_MAX = 64 * 1024  # a ListOffsets response for one partition is a few dozen bytes
_LATEST, _EARLIEST = -1, -2


def _reject(kind: RejectKind, message: str) -> CommandRejected:
    return CommandRejected(Rejection(kind, message))


class ClusterAdmin:
    def __init__(self, node: ControllerHost) -> None:
        self._node = node

    @property
    def image(self) -> MetadataImage:
        assert self._node.controller is not None
        return self._node.controller.image

    async def _propose(self, cmd: Command) -> int:
        server = self._node.server
        assert server is not None
        return await server.propose(cmd)

    def _check(self, cmd: Command) -> None:
        rejection = validate(self.image, cmd)
        if rejection is not None:
            raise CommandRejected(rejection)

    def partition(self, topic: str, index: int) -> tuple[TopicImage, PartitionImage]:
        t = self.image.topics.get(topic)
        if t is None or not 0 <= index < len(t.partitions):
            raise _reject(RejectKind.UNKNOWN_TOPIC, f"{topic}-{index} does not exist")
        return t, t.partitions[index]

    # ---- topics --------------------------------------------------------------------------------------------------

    async def create_topic(self, req: CreateTopicRequest) -> TopicImage:
        if req.name in self.image.topics:
            raise _reject(RejectKind.TOPIC_ALREADY_EXISTS, f"topic {req.name!r} already exists")
        try:
            assignments = place_partitions(self.image, req.partitions, req.replication_factor)
        except ValueError as e:
            raise BadRequest("replication_factor", f"replication_factor: {e}") from None
        await self._propose(CreateTopic(req.name, uuid.uuid4(), assignments, tuple(sorted(req.configs.items()))))
        return self.image.topics[req.name]

    async def delete_topic(self, name: str) -> None:
        await self._propose(DeleteTopic(name))

    async def patch_topic(self, name: str, req: PatchTopicRequest) -> TopicImage:
        topic = self.image.topics.get(name)
        if topic is None:
            raise _reject(RejectKind.UNKNOWN_TOPIC, f"topic {name!r} does not exist")
        commands: list[Command] = []
        if req.set_configs or req.delete_configs:
            commands.append(AlterTopicConfigs(name, tuple(sorted(req.set_configs.items())), req.delete_configs))
        rf = len(topic.partitions[0].replicas)
        if req.replication_factor is not None and req.replication_factor != rf:
            commands.extend(self._replication_factor_changes(topic, req.replication_factor))
            rf = req.replication_factor
        if req.partitions is not None and req.partitions != len(topic.partitions):
            if req.partitions < len(topic.partitions):
                raise BadRequest(
                    "partitions", f"partitions: {name!r} has {len(topic.partitions)}; partitions can only be added"
                )
            try:
                added = place_partitions(self.image, req.partitions - len(topic.partitions), rf, len(topic.partitions))
            except ValueError as e:
                raise BadRequest("partitions", f"partitions: {e}") from None
            commands.append(CreatePartitions(name, added))
        for cmd in commands:
            if not isinstance(cmd, CreatePartitions):
                self._check(cmd)  # before anything is proposed (new partitions are checked by the leader)
        for cmd in commands:
            await self._propose(cmd)
        return self.image.topics[name]

    def _replication_factor_changes(self, topic: TopicImage, rf: int) -> list[Command]:
        out: list[Command] = []
        for p in topic.partitions:
            if rf > len(p.replicas):
                try:
                    replicas = grow_replicas(self.image, p.replicas, rf)
                except ValueError as e:
                    raise BadRequest("replication_factor", f"replication_factor: {e}") from None
            else:
                # Drop replicas outside the ISR first, then in-sync followers, last first; the leader stays.
                keep = list(p.replicas)
                for dropping_in_sync in (False, True):
                    for r in reversed(p.replicas):
                        if len(keep) > rf and r != p.leader and (r in p.isr) == dropping_in_sync:
                            keep.remove(r)
                replicas = tuple(keep)
            out.append(ReassignPartition(topic.name, p.partition, replicas))
        return out

    # ---- partitions ----------------------------------------------------------------------------------------------

    async def transfer_leadership(self, topic: str, index: int, target: int) -> PartitionImage:
        _, p = self.partition(topic, index)
        if p.leader == target:
            return p
        if target not in p.replicas:
            replicas = list(p.replicas)
            raise BadRequest("target", f"target: broker {target} is not a replica of {topic}-{index} {replicas}")
        if target not in p.isr:
            raise _reject(
                RejectKind.CONFLICT,
                f"broker {target} is not in the ISR {list(p.isr)} of {topic}-{index}: it does not have the data",
            )
        await self._propose(ChangePartition(topic, index, target, p.isr, p.leader_epoch + 1))
        return self.partition(topic, index)[1]

    async def reassign(self, topic: str, index: int, replicas: tuple[int, ...]) -> PartitionImage:
        _, p = self.partition(topic, index)
        if replicas != p.replicas:
            await self._propose(ReassignPartition(topic, index, replicas))
        return self.partition(topic, index)[1]

    async def offsets(self, topic: str, index: int) -> dict[str, Any] | None:
        """Log start, high watermark and end from the shard that leads the partition: this node's over the controller
        channel, another node's with a Kafka ListOffsets request. None when the leader cannot be asked."""
        _, p = self.partition(topic, index)
        if p.leader < 0:
            return None
        local = [s for s in self._node.slots if s.broker_id == p.leader]
        if local:
            stats = await self._node.gather_stats()
            for shard_stats in stats.values():
                for ps in shard_stats.partitions:
                    if (ps.topic, ps.partition) == (topic, index):
                        return {
                            "log_start_offset": ps.log_start_offset,
                            "high_watermark": ps.high_watermark,
                            "log_end_offset": ps.log_end_offset,
                            "size_bytes": ps.size_bytes,
                        }
            return None
        reg = self.image.brokers.get(p.leader)
        if reg is None:
            return None
        with contextlib.suppress(KafkaClientError, TimeoutError, ValueError):
            start, high = await asyncio.wait_for(_list_offsets(reg.host, reg.port, topic, index), OFFSETS_TIMEOUT_S)
            return {"log_start_offset": start, "high_watermark": high}
        return None

    # ---- brokers -------------------------------------------------------------------------------------------------

    def _broker(self, broker_id: int) -> None:
        if broker_id not in self.image.brokers:
            raise _reject(RejectKind.UNKNOWN_BROKER, f"broker {broker_id} is not registered")

    async def set_maintenance(self, broker_id: int, enabled: bool) -> None:
        self._broker(broker_id)
        if self.image.brokers[broker_id].maintenance != enabled:  # PUT and DELETE are idempotent
            await self._propose(SetBrokerMaintenance(broker_id, enabled))

    async def decommission(self, broker_id: int) -> None:
        self._broker(broker_id)
        if not self.image.brokers[broker_id].decommissioning:
            await self._propose(DecommissionBroker(broker_id))

    # ---- health --------------------------------------------------------------------------------------------------

    def health_overview(self) -> dict[str, Any]:
        image = self.image
        controller = self._node.controller
        assert controller is not None
        status = controller.status()
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
            "leaderless_partitions": leaderless[:1000],
            "under_replicated_count": len(under_replicated),
            "under_replicated_partitions": under_replicated[:1000],
        }


async def _list_offsets(host: str, port: int, topic: str, index: int) -> tuple[int, int]:
    """(log start, high watermark) of one partition, asked of its leader with Kafka ListOffsets v1."""
    client = await KafkaClient.connect(
        host, port, client_id="rafka-admin", response_bytes_max=OFFSETS_RESPONSE_BYTES_MAX
    )
    try:
        out = []
        for timestamp in (_EARLIEST, _LATEST):
            req = ListOffsetsRequest(
                replica_id=BrokerId(-1),
                topics=(
                    ListOffsetsTopic(
                        name=TopicName(topic),
                        partitions=(ListOffsetsPartition(partition_index=i32(index), timestamp=i64(timestamp)),),
                    ),
                ),
            )
            resp = await client.request(req, ListOffsetsResponse)
            part = resp.topics[0].partitions[0]
            if part.error_code != ErrorCode.none:
                raise ValueError(f"ListOffsets error {part.error_code}")
            out.append(int(part.offset))
        return out[0], out[1]
    finally:
        client.close()
