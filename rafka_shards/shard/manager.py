"""The shard's partitions and its view of cluster metadata (Kafka's ReplicaManager + metadata publisher, one shard).

Runs in a shard process on its event loop. Reads metadata only through the image its controller link applied and
changes it only by proposing typed commands; after every new image it reconciles: opens the logs of the replicas the
image gives this shard's broker (as leader or follower), closes those it no longer holds, deletes the data of
deleted topics. Several shards share ``data_dir/kafka``; each opens only the partitions with a replica on its broker
id. The directory layout (naming, topic-id marker, lock, stray removal) is ``rafka_shards.storage.partition_dirs``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from controller import topics
from controller.commands import (
    AllocateProducerIds,
    Command,
    RegisterBroker,
)
from controller.image import MetadataImage, PartitionImage, TopicImage
from controller.state_machine import CommandRejected, RejectKind
from rafka_shards.config import BrokerConfig
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition, topic_name_error
from rafka_shards.records.batch import BatchHeader
from rafka_shards.security.audit import (
    NULL_SINK,
    Actor,
    AuditEvent,
    AuditSink,
    describe_command,
    describe_topic_request,
    mutation,
)
from rafka_shards.shard.flusher import GroupCommitFlusher
from rafka_shards.shard.lease import BrokerLease
from rafka_shards.shard.limits import PRODUCER_ID_BLOCK_SIZE
from rafka_shards.shard.partition import Partition
from rafka_shards.shard.probe import Probe
from rafka_shards.shard.replication import Replication
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.free_space import FreeSpaceGuard
from rafka_shards.storage.log import AppendInfo, PartitionLog
from rafka_shards.storage.partition_dirs import (
    PartitionLocked,
    claim_partition_dir,
    kafka_dir,
    release_partition_dir,
)

log = logging.getLogger(__name__)

# A registration that meets a Raft leadership change is retried this long, with this backoff.
REGISTER_RETRY_MS = 120_000
REGISTER_BACKOFF_MIN_S = 0.1
REGISTER_BACKOFF_MAX_S = 2.0

REJECTION_CODES: Mapping[RejectKind, ErrorCode] = {
    RejectKind.INVALID_TOPIC: ErrorCode.INVALID_TOPIC_EXCEPTION,
    RejectKind.TOPIC_ALREADY_EXISTS: ErrorCode.TOPIC_ALREADY_EXISTS,
    RejectKind.UNKNOWN_TOPIC: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    RejectKind.INVALID_PARTITIONS: ErrorCode.INVALID_PARTITIONS,
    RejectKind.INVALID_REPLICATION_FACTOR: ErrorCode.INVALID_REPLICATION_FACTOR,
    RejectKind.INVALID_REPLICA_ASSIGNMENT: ErrorCode.INVALID_REPLICA_ASSIGNMENT,
    RejectKind.INVALID_CONFIG: ErrorCode.INVALID_CONFIG,
    RejectKind.UNKNOWN_BROKER: ErrorCode.INVALID_REPLICA_ASSIGNMENT,
    RejectKind.STALE_LEADER_EPOCH: ErrorCode.FENCED_LEADER_EPOCH,
    RejectKind.INVALID_REQUEST: ErrorCode.INVALID_REQUEST,
    RejectKind.CONFLICT: ErrorCode.INVALID_REQUEST,
    RejectKind.UNACCEPTABLE_CREDENTIAL: ErrorCode.UNACCEPTABLE_CREDENTIAL,
    RejectKind.UNSUPPORTED_SASL_MECHANISM: ErrorCode.UNSUPPORTED_SASL_MECHANISM,
    RejectKind.UNKNOWN_CREDENTIAL: ErrorCode.RESOURCE_NOT_FOUND,
    RejectKind.CONTROLLER_UNAVAILABLE: ErrorCode.NOT_CONTROLLER,
}


class MetadataProposer(Protocol):
    """How a shard changes metadata: the controller link (``rafka_shards.shard.controller_link``)."""

    async def propose(self, cmd: Command) -> int:
        """The command's offset once committed and applied here; raises CommandRejected."""
        ...

    async def propose_topic(self, proposal: topics.TopicProposal) -> int:
        """A topic request planned and committed by the Raft leader: its last command's offset once applied here
        (the leader's applied offset for ``validate_only``); raises TopicRejected or CommandRejected."""
        ...


def log_config_defaults(config: BrokerConfig) -> LogConfig:
    return LogConfig(
        segment_bytes=config.log_segment_bytes,
        segment_ms=config.log_segment_ms,
        retention_ms=config.log_retention_ms,
        retention_bytes=config.log_retention_bytes,
        max_message_bytes=config.message_max_bytes,
    )


class PartitionManager:
    def __init__(
        self,
        config: BrokerConfig,
        image: MetadataImage,
        flusher: GroupCommitFlusher,
        now_ms: Callable[[], int],
        probe: Probe,
        monotonic_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.monotonic_ms = monotonic_ms
        self.lease = BrokerLease(config.broker_session_timeout_ms, monotonic_ms)  # serve partitions only while valid
        self.incarnation = ""
        self.broker_id = config.broker_id
        self.flusher = flusher
        self.now_ms = now_ms
        self.probe = probe
        self.log_defaults = log_config_defaults(config)
        self.partitions: dict[TopicPartition, Partition] = {}
        self._image = image
        self._proposer: MetadataProposer | None = None
        self._locks: dict[TopicPartition, int] = {}
        self._kafka_dir = kafka_dir(config.data_dir)
        self._kafka_dir.mkdir(parents=True, exist_ok=True)
        self.free_space = FreeSpaceGuard(self._kafka_dir, config.storage_min_free_bytes)
        self._producer_ids = (0, 0)  # [next, end) of this shard's current block
        self._producer_ids_lock = asyncio.Lock()
        self.replication = Replication(self, config, flusher)
        self.audit_sink: AuditSink = NULL_SINK  # the shard's audit log, when audit_enabled

    def audit(self, event: AuditEvent) -> None:
        """Record an audit event in this shard's audit log (``rafka_shards.security.audit``): what the authorization
        code calls on every denial (``AuthorizationDenial``), and what ``propose`` calls for every change. Never
        blocks, never raises; does nothing when the audit log is off."""
        self.audit_sink.audit(event)

    def attach(self, proposer: MetadataProposer) -> None:
        self._proposer = proposer

    @property
    def image(self) -> MetadataImage:
        """The image this shard has reconciled with: a topic is visible to requests only once its partitions are
        open here."""
        return self._image

    # ---- metadata changes ------------------------------------------------------------------------------------

    async def propose(self, cmd: Command, *, actor: Actor | None = None) -> MetadataImage:
        """Have the controller commit ``cmd``; returns once this shard has applied and reconciled it.

        A requester that goes away meanwhile does not matter: the command reaches this shard as a record like any
        other, and reconciliation runs when it arrives, not when the requester resumes.

        Every proposal is audited (a ``MutationEvent`` with its result) as made by ``actor``, by default the
        request being handled (``security.audit.current_actor``, set by the connection around each request); the
        broker itself (source internal) outside a request.
        """
        assert self._proposer is not None, "no controller link"
        return await self._audited(describe_command(cmd), self._proposer.propose(cmd), actor)

    async def _audited(self, what: dict[str, object], committing: Awaitable[int], actor: Actor | None) -> MetadataImage:
        try:
            image = await self._applied(committing)
        except KafkaError as e:
            self.audit(mutation([what], success=False, error=e.code.name, actor=actor))
            raise
        except (Exception, asyncio.CancelledError) as e:  # recorded, then raised as it was
            self.audit(mutation([what], success=False, error=type(e).__name__, actor=actor))
            raise
        self.audit(mutation([what], success=True, actor=actor))
        return image

    async def _applied(self, committing: Awaitable[int]) -> MetadataImage:
        """The image once what ``committing`` proposes is applied here; its rejection as a KafkaError."""
        try:
            offset = await committing
        except CommandRejected as e:
            raise KafkaError(REJECTION_CODES[e.rejection.kind], e.rejection.message) from None
        assert self._image.offset >= offset, (self._image.offset, offset)
        return self._image

    async def allocate_producer_id(self) -> int:
        """A producer id no other shard or incarnation hands out: blocks of ids come from the metadata log."""
        async with self._producer_ids_lock:
            next_id, end = self._producer_ids
            if next_id >= end:
                await self.propose(AllocateProducerIds(self.broker_id, PRODUCER_ID_BLOCK_SIZE))
                next_id, end = self._image.producer_id_blocks[self.broker_id]
            self._producer_ids = (next_id + 1, end)
            return next_id

    async def register(self) -> None:
        """Register a new incarnation of this broker; that starts its lease (the controller starts counting later).

        Raft leadership may move while the registration commits (an election during a slow fsync on a busy
        machine): the proposal is then retried, as a new incarnation, for up to ``REGISTER_RETRY_MS``."""
        ep = self.config.advertise_endpoint
        started_ms = self.monotonic_ms()
        backoff_s = REGISTER_BACKOFF_MIN_S
        while True:
            self.incarnation = str(uuid.uuid4())
            sent_ms = self.monotonic_ms()
            try:
                await self.propose(
                    RegisterBroker(
                        broker_id=self.broker_id,
                        host=ep.host,
                        port=ep.port,
                        rack=self.config.rack or None,
                        incarnation=self.incarnation,
                        node_id=self.config.node_id,
                        listeners=tuple(
                            (li.name, li.advertised.host, li.advertised.port) for li in self.config.listener_specs()
                        ),
                    )
                )
            except KafkaError as e:
                if e.code is not ErrorCode.NOT_CONTROLLER or self.monotonic_ms() - started_ms > REGISTER_RETRY_MS:
                    raise
                log.info("broker %d: registration not committed (%s); retrying", self.broker_id, e.message)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, REGISTER_BACKOFF_MAX_S)
                continue
            break
        self.lease.renewed(sent_ms)

    @property
    def broker_epoch(self) -> int:
        """This incarnation's broker epoch (the offset of its RegisterBroker record; -1 before it registered)."""
        reg = self._image.brokers.get(self.broker_id)
        return reg.epoch if reg is not None and reg.incarnation == self.incarnation else -1

    def replica_refusal(self, replica: int, replica_epoch: int) -> KafkaError | None:
        """Why a replica request (Fetch, OffsetForLeaderEpoch) from broker ``replica`` naming broker epoch
        ``replica_epoch`` (-1: not given, before Fetch v15) is refused: only registered, unfenced brokers of the
        current epoch replicate (a fenced or earlier incarnation must not count towards the ISR or high watermark).
        Whether it replicates the partition is checked per partition (``Partition.record_follower_fetch``)."""
        reg = self._image.brokers.get(replica)
        if reg is None or reg.fenced:
            state = "not registered" if reg is None else "fenced"
            return KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"replica broker {replica} is {state}")
        if replica_epoch >= 0 and replica_epoch != reg.epoch:
            return KafkaError(
                ErrorCode.STALE_BROKER_EPOCH,
                f"replica broker {replica} fetches at broker epoch {replica_epoch}, registered at {reg.epoch}",
            )
        return None

    def lease_valid(self) -> bool:
        return self.lease.valid()

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        assignments: tuple[tuple[int, ...], ...] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicImage | None:
        """Create a topic (None when ``validate_only``), its replicas placed by the Raft leader on its newest image
        (``controller.topics``); raises KafkaError with the precise code."""
        request = topics.NewTopic(name, partitions, replication_factor, configs, assignments)
        image = await self._propose_topic(request, validate_only=validate_only)
        return None if validate_only else image.topics[name]

    async def create_partitions(
        self, name: str, count: int, assignments: tuple[tuple[int, ...], ...] | None, *, validate_only: bool
    ) -> None:
        """Grow ``name`` to ``count`` partitions, the new ones placed by the Raft leader unless ``assignments`` gives
        them; raises KafkaError with the precise code."""
        await self._propose_topic(topics.NewPartitions(name, count, assignments), validate_only=validate_only)

    async def delete_topic(self, name: str) -> None:
        await self._propose_topic(topics.RemoveTopic(name))

    async def alter_topic_configs(self, name: str, set_configs: Mapping[str, str], delete: tuple[str, ...]) -> None:
        changes = topics.TopicChanges(None, None, dict(set_configs), delete)
        await self._propose_topic(topics.AlterTopic(name, changes))

    async def _propose_topic(self, request: topics.TopicRequest, *, validate_only: bool = False) -> MetadataImage:
        """Have the Raft leader plan and commit ``request``; returns once this shard has applied and reconciled it."""
        assert self._proposer is not None, "no controller link"
        proposal = topics.TopicProposal(request, uuid.uuid4(), validate_only)
        if validate_only:  # nothing changes: not audited
            return await self._applied(self._proposer.propose_topic(proposal))
        return await self._audited(describe_topic_request(proposal), self._proposer.propose_topic(proposal), None)

    async def auto_create(self, name: str) -> TopicImage | None:
        """Create ``name`` with the defaults if auto creation is on; None when it is off."""
        if not self.config.auto_create_topics:
            return None
        existing = self.image.topics.get(name)
        if existing is not None:
            return existing
        try:
            await self.create_topic(name, self.config.default_partitions, self.config.default_replication_factor, {})
            return self.image.topics[name]
        except KafkaError as e:
            if e.code is ErrorCode.TOPIC_ALREADY_EXISTS:  # created concurrently by another request
                return self.image.topics[name]
            raise

    # ---- serving ---------------------------------------------------------------------------------------------

    def append(self, p: Partition, buf: bytearray, headers: list[BatchHeader]) -> AppendInfo:
        """Write validated batches to ``p`` (page cache) and queue the partition for the next group commit.

        A retry of an idempotent producer's recent batch is not written again: it gets its first offsets back.
        """
        duplicate = p.producers.check(headers)
        if duplicate is not None:
            return AppendInfo(
                base_offset=duplicate.first_offset,
                last_offset=duplicate.last_offset,
                log_append_time_ms=-1,
                log_start_offset=p.log.log_start_offset,
            )
        info = p.append(buf, headers, self.now_ms())
        self.flusher.mark_dirty(p)
        counts = p.probe
        counts.bytes_in += len(buf)
        counts.batches_in += len(headers)
        counts.records_in += info.last_offset - info.base_offset + 1
        return info

    def lookup(self, topic: str, partition: int) -> Partition:
        """The partition this shard leads, or a KafkaError with the precise reason it cannot serve it.

        A broker whose lease lapsed serves nothing: the controller may have fenced it and given its partitions new
        leaders that this shard's image does not show yet (after a pause, or cut off from the controller)."""
        p = self.partitions.get(TopicPartition(topic, partition))
        if p is not None and p.is_leader:
            if not self.lease_valid():
                raise KafkaError(
                    ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    f"broker {self.broker_id}'s lease with the controller lapsed: "
                    f"it may no longer lead {topic}-{partition}",
                )
            return p
        raise KafkaError(*self.unavailable_reason(topic, partition))

    def unavailable_reason(self, topic: str, partition: int) -> tuple[ErrorCode, str]:
        err = topic_name_error(topic)
        if err is not None:
            return ErrorCode.INVALID_TOPIC_EXCEPTION, err
        t = self.image.topics.get(topic)
        if t is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic!r} does not exist"
        if not 0 <= partition < len(t.partitions):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic!r} has no partition {partition}"
        leader = t.partitions[partition].leader
        if leader < 0:
            return ErrorCode.LEADER_NOT_AVAILABLE, f"{topic}-{partition} has no leader"
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{topic}-{partition} is led by broker {leader}, not {self.broker_id}"

    # ---- reconciliation --------------------------------------------------------------------------------------

    def reconcile(self, image: MetadataImage) -> None:
        """Open, update and close partition logs so that this shard holds exactly the replicas the image gives its
        broker, each in the role (leader or follower) the image says; then start or stop the fetchers."""
        self._image = image
        wanted: dict[TopicPartition, tuple[TopicImage, PartitionImage]] = {}
        for topic in image.topics.values():
            for p in topic.partitions:
                if self.broker_id in p.replicas:
                    wanted[TopicPartition(topic.name, p.partition)] = (topic, p)
        for tp in list(self.partitions):
            if tp not in wanted or wanted[tp][0].topic_id != self.partitions[tp].topic_id:
                # The topic is gone or this replica was moved away: its copy is of no use here any more (the
                # node holds at most one replica of a partition, so no other shard of it needs the directory).
                self._close_partition(tp, delete=True)
        now = self.now_ms()
        for tp, (topic, pi) in wanted.items():
            existing = self.partitions.get(tp)
            log_config = self._log_config(topic)
            if existing is None:
                try:
                    existing = self._open_partition(tp, topic.topic_id, pi.leader_epoch, log_config, now)
                except PartitionLocked as e:
                    log.error("%s; not serving it", e)
                    continue
                except OSError as e:  # a full or failing disk: the shard serves its other partitions
                    log.error("%s: cannot open its log (%s); not serving it until the next metadata update", tp, e)
                    continue
            elif existing.log.config != log_config:
                existing.log.update_config(log_config)
            if (existing.leader, existing.leader_epoch, existing.partition_epoch) != (
                pi.leader,
                pi.leader_epoch,
                pi.partition_epoch,
            ) or existing.replicas != pi.replicas:
                was_leader = existing.is_leader
                if pi.leader == self.broker_id and existing.isr and existing.isr != pi.isr:
                    self.probe.isr_changed(existing.isr, pi.isr)  # an ISR this shard knew, now led here, changed
                existing.assign(self.broker_id, pi, self.monotonic_ms())
                if existing.is_leader != was_leader:
                    log.info(
                        "%s: %s (leader epoch %d, ISR %s)",
                        tp,
                        "leading" if existing.is_leader else f"following broker {pi.leader}",
                        pi.leader_epoch,
                        list(pi.isr),
                    )
        self.replication.reconcile(self.partitions)

    def _log_config(self, topic: TopicImage) -> LogConfig:
        try:
            return LogConfig.from_topic_configs(topic.configs, self.log_defaults)
        except ValueError as e:  # validated before it entered the metadata log: a bug if it happens
            raise AssertionError(f"topic {topic.name}: invalid configs in the metadata image: {e}") from e

    def _open_partition(
        self, tp: TopicPartition, topic_id: uuid.UUID, epoch: int, log_config: LogConfig, now_ms: int
    ) -> Partition:
        directory, lock_fd = claim_partition_dir(self._kafka_dir, tp, topic_id)
        plog = PartitionLog.open(directory, log_config, now_ms)
        durability = self.config.durability
        self.partitions[tp] = Partition(
            tp,
            topic_id,
            directory,
            plog,
            epoch,
            durability,
            self.config.producers_per_partition_max,
            self.probe.partition(tp),
        )
        self._locks[tp] = lock_fd
        log.info(
            "opened %s (topic id %s, leader epoch %d): log start %d, end %d",
            tp,
            topic_id,
            epoch,
            plog.log_start_offset,
            plog.log_end_offset,
        )
        return self.partitions[tp]

    def _close_partition(self, tp: TopicPartition, *, delete: bool) -> None:
        p = self.partitions.pop(tp)
        p.close(delete=delete)
        self.probe.forget_partition(tp)
        release_partition_dir(p.directory, self._locks.pop(tp), delete=delete)
        log.info("%s %s", "deleted" if delete else "closed", tp)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def apply_retention(self) -> list[Path]:
        """Retention over every partition: the files it renamed aside, for the caller to free off the loop."""
        now = self.now_ms()
        return [path for p in self.partitions.values() for path in p.apply_retention(now)]

    def close(self) -> None:
        for tp in list(self.partitions):
            self._close_partition(tp, delete=False)
