"""What the admin API does to the cluster: topic, partition and broker changes as validated metadata commands, and
the partition offsets view, which needs more than the image.

Runs in the controller process. Topic requests go to the Raft leader as ``TopicProposal``s, which the topics
frontend (``controller.topics``, the shards' Kafka handlers use it too) turns into commands on the leader's newest
image; other changes are typed commands. Everything is committed through the Raft quorum by the ``MetadataProposer``
given (a follower forwards it to the leader) and returns once this node's shards have applied it, so a client that
goes to the leader right after a 2xx is served. A change that does not validate raises ``CommandRejected``
(``TopicRejected`` from the frontend) with the reason and nothing is proposed. Changes that take several commands (a
replication factor applied partition by partition) are checked on the leader's image first, so a request that
cannot succeed as a whole proposes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.list_offsets.v1.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.list_offsets.v1.response import ListOffsetsResponse
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i32, i64

from controller import topics
from controller.acls import ACL_CHANGES_PER_REQUEST_MAX, AclBinding, AclBindingFilter
from controller.commands import (
    Command,
    CreateAcls,
    DecommissionBroker,
    DeleteAcls,
    DeleteScramCredential,
    ElectLeader,
    ReassignPartition,
    SetBrokerMaintenance,
)
from controller.image import MetadataImage, PartitionImage, TopicImage
from controller.scram import SCRAM_MECHANISMS
from controller.state_machine import CommandRejected, Rejection, RejectKind
from rafka_shards import event_loop
from rafka_shards.admin.ports import MetadataProposer, MetadataReader, NodeView
from rafka_shards.admin.requests import BadRequest, UserPassword
from rafka_shards.ipc.channel import PartitionStats
from rafka_shards.ipc.kafka_client import KafkaClient, KafkaClientError
from rafka_shards.security.client_security import PLAINTEXT, ClientSecurity
from rafka_shards.security.sasl import make_credential
from rafka_shards.security.scram_users import mechanism_named, new_mock_secret, upsert_command

OFFSETS_TIMEOUT_S = 5.0
OFFSETS_RESPONSE_BYTES_MAX = 64 * 1024  # a ListOffsets response for one partition is a few dozen bytes
_LATEST, _EARLIEST = -1, -2


def _reject(kind: RejectKind, message: str) -> CommandRejected:
    return CommandRejected(Rejection(kind, message))


class ClusterAdmin:
    def __init__(
        self,
        metadata: MetadataReader,
        proposer: MetadataProposer,
        node: NodeView,
        inter_broker: ClientSecurity = PLAINTEXT,
    ) -> None:
        self._metadata = metadata
        self._proposer = proposer
        self._node = node
        self._inter_broker = inter_broker  # other nodes' brokers are asked over their inter-broker listener

    @property
    def image(self) -> MetadataImage:
        return self._metadata.image

    async def _propose(self, cmd: Command) -> int:
        return await self._proposer.propose(cmd)

    def partition(self, topic: str, index: int) -> tuple[TopicImage, PartitionImage]:
        t = self.image.topics.get(topic)
        if t is None or not 0 <= index < len(t.partitions):
            raise _reject(RejectKind.UNKNOWN_TOPIC, f"{topic}-{index} does not exist")
        return t, t.partitions[index]

    # ---- topics --------------------------------------------------------------------------------------------------

    async def create_topic(self, req: topics.NewTopic) -> TopicImage:
        await self._propose_topic(req)
        return self.image.topics[req.name]

    async def delete_topic(self, name: str) -> None:
        await self._propose_topic(topics.RemoveTopic(name))

    async def patch_topic(self, name: str, changes: topics.TopicChanges) -> TopicImage:
        await self._propose_topic(topics.AlterTopic(name, changes))
        return self.image.topics[name]

    async def _propose_topic(self, request: topics.TopicRequest) -> int:
        return await self._proposer.propose_topic(topics.TopicProposal(request, uuid.uuid4()))

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
        await self._propose(ElectLeader(topic, index, target, p.partition_epoch))
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
                            "cleaner": cleaner_json(ps),
                        }
            return None
        reg = self.image.brokers.get(p.leader)
        if reg is None:
            return None
        with contextlib.suppress(KafkaClientError, TimeoutError, ValueError):
            asked = _list_offsets(reg.host, reg.port, topic, index, self._inter_broker)
            start, high = await event_loop.within(asked, OFFSETS_TIMEOUT_S)
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

    # ---- SCRAM users ---------------------------------------------------------------------------------------------

    def scram_mechanisms(self, user: str) -> list[str]:
        """The mechanisms ``user`` has a credential for (none: no such user)."""
        return [m for m in SCRAM_MECHANISMS if (user, m) in self.image.scram_credentials]

    async def create_user(self, req: UserPassword) -> None:
        """A new user (409 if it has a credential of any mechanism). Checked on the image this request read, so
        two creations of one user at the same moment may both succeed: the later password wins."""
        if self.scram_mechanisms(req.username):
            raise _reject(RejectKind.CONFLICT, f"user {req.username!r} already exists")
        await self._set_password(req)

    async def update_user(self, req: UserPassword) -> None:
        """A new password: the user's credential for ``algorithm`` is replaced, and those of the other mechanisms,
        which hold the old password, are deleted after it."""
        old = self.scram_mechanisms(req.username)
        if not old:
            raise _reject(RejectKind.UNKNOWN_CREDENTIAL, f"user {req.username!r} does not exist")
        await self._set_password(req)
        await self._delete_credentials(req.username, [m for m in old if m != req.algorithm])

    async def delete_user(self, user: str) -> None:
        mechanisms = self.scram_mechanisms(user)
        if not mechanisms:
            raise _reject(RejectKind.UNKNOWN_CREDENTIAL, f"user {user!r} does not exist")
        await self._delete_credentials(user, mechanisms)

    async def _set_password(self, req: UserPassword) -> None:
        mechanism = mechanism_named(req.algorithm)
        assert mechanism is not None, req.algorithm  # the request parser checked it
        # PBKDF2 (4096 HMACs, a few ms) in a worker thread: hashlib lets go of the GIL, so the controller process's
        # event loop (Raft, the shards' channels) does not wait for it. Only the credential leaves this function.
        credential = await asyncio.to_thread(make_credential, mechanism, req.password)
        await self._propose(upsert_command(req.username, credential, new_mock_secret()))

    async def _delete_credentials(self, user: str, mechanisms: list[str]) -> None:
        for m in mechanisms:
            try:
                await self._propose(DeleteScramCredential(user, m))
            except CommandRejected as e:
                if e.rejection.kind is not RejectKind.UNKNOWN_CREDENTIAL:  # gone meanwhile: what was asked for
                    raise

    # ---- ACLs ----------------------------------------------------------------------------------------------------

    async def create_acls(self, bindings: tuple[AclBinding, ...]) -> None:
        """Store the ACLs (one ``CreateAcls``: all or none; those stored already are kept once)."""
        await self._propose(CreateAcls(bindings))

    async def delete_acls(self, acl_filter: AclBindingFilter) -> tuple[AclBinding, ...]:
        """Remove the ACLs the filter selects on this node's image (read after a barrier: every ACL created before
        the request counts); those deleted meanwhile by someone else are skipped by the state machine."""
        matched = self.image.acls.acls(acl_filter)
        for start in range(0, len(matched), ACL_CHANGES_PER_REQUEST_MAX):
            await self._propose(DeleteAcls(matched[start : start + ACL_CHANGES_PER_REQUEST_MAX]))
        return matched


def cleaner_json(ps: PartitionStats) -> dict[str, Any] | None:
    """The leader's log cleaner state of a compacted partition (None for a partition that is not compacted)."""
    if ps.first_dirty_offset < 0:
        return None
    return {
        "dirty_ratio": round(ps.dirty_ratio, 4),
        "first_dirty_offset": ps.first_dirty_offset,
        "last_cleaned_ms": ps.last_cleaned_ms,
        "error": ps.cleaner_error or None,
    }


async def _list_offsets(host: str, port: int, topic: str, index: int, security: ClientSecurity) -> tuple[int, int]:
    """(log start, high watermark) of one partition, asked of its leader with Kafka ListOffsets v1."""
    client = await KafkaClient.connect(
        host, port, client_id="rafka-admin", response_bytes_max=OFFSETS_RESPONSE_BYTES_MAX, security=security
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
