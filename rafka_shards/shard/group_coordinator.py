"""The group coordinator of one shard: the classic groups of the ``__consumer_offsets`` partitions it leads.

Runs in a shard process on its event loop; the thin asyncio shell around ``rafka_shards.groups.classic``. A group's
coordinator is the leader of partition ``partition_for(group_id)`` of ``__consumer_offsets`` (Kafka's design), so
groups spread over every shard of every node with no process of their own. This module:

- follows leadership: after every metadata image it loads the partitions this shard has come to lead (reading
  their log from the start, replaying group and offset records; requests meanwhile get
  COORDINATOR_LOAD_IN_PROGRESS) and drops those it no longer leads (waiting requests get NOT_COORDINATOR);
- writes: a commit, the leader's assignment and every other group change are appended to the partition as keyed
  records through the same path as a Produce with acks=all, and are acknowledged (or applied to the in-memory
  state) only once the high watermark passes them: fsynced on every in-sync replica. A crash before that loses
  nothing acknowledged; a new leader replays the log, which holds everything that was;
- runs the groups' timers (sessions, rebalance and initial delays) and expires the offsets of long-empty groups.

Crash story: everything a client was told is committed is in the partition's log on every in-sync replica,
fsynced; the in-memory groups are a cache of that log, rebuilt by whoever leads the partition next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.image import MetadataImage
from rafka_shards import event_loop
from rafka_shards.config import MIB, BrokerConfig
from rafka_shards.groups import consumer_records
from rafka_shards.groups import offsets_records as recs
from rafka_shards.groups.classic import (
    ClassicGroups,
    GroupDescription,
    GroupLimits,
    JoinRequest,
    JoinResult,
    Reply,
    StoreGroup,
    SyncResult,
)
from rafka_shards.groups.consumer import ConsumerGroupState, ConsumerLimits, HeartbeatRequest, HeartbeatResult
from rafka_shards.model import OFFSETS_TOPIC, ErrorCode, KafkaError, TopicPartition
from rafka_shards.records.batch import parse_header, validate_batches
from rafka_shards.records.builder import Record, build_batch, decode_batch
from rafka_shards.shard.manager import PartitionManager
from rafka_shards.shard.probe import Probe

log = logging.getLogger(__name__)

LOAD_READ_BYTES = 1 * MIB  # one read of a partition's log while loading it
OFFSETS_TOPIC_MESSAGE_MAX_BYTES = 64 * MIB  # a large group's metadata record (all members' subscriptions) fits

# Kafka's mapping of a failed write to the error a group client understands (GroupMetadataManager).
_WRITE_ERRORS: Mapping[ErrorCode, ErrorCode] = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.REQUEST_TIMED_OUT: ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.LEADER_NOT_AVAILABLE: ErrorCode.NOT_COORDINATOR,
    ErrorCode.NOT_LEADER_OR_FOLLOWER: ErrorCode.NOT_COORDINATOR,
    ErrorCode.FENCED_LEADER_EPOCH: ErrorCode.NOT_COORDINATOR,
    ErrorCode.MESSAGE_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
    ErrorCode.RECORD_LIST_TOO_LARGE: ErrorCode.UNKNOWN_SERVER_ERROR,
}


@dataclass(slots=True)
class _Led:
    """A partition of ``__consumer_offsets`` this shard leads: its groups once loaded."""

    partition: int
    leader_epoch: int
    groups: ClassicGroups | None = None  # None while loading
    loader: asyncio.Task[None] | None = None
    writes: set[asyncio.Task[None]] = field(default_factory=set)


def group_limits(config: BrokerConfig) -> GroupLimits:
    return GroupLimits(
        min_session_timeout_ms=config.group_min_session_timeout_ms,
        max_session_timeout_ms=config.group_max_session_timeout_ms,
        max_size=config.group_max_size,
        initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        member_metadata_max_bytes=config.group_member_metadata_max_bytes,
    )


class GroupCoordinator:
    def __init__(
        self,
        manager: PartitionManager,
        config: BrokerConfig,
        now_ms: Callable[[], int],
        probe: Probe,
        rng: random.Random | None = None,
    ) -> None:
        self._manager = manager
        self._probe = probe
        self._config = config
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._limits = group_limits(config)
        self._consumer_limits = ConsumerLimits(
            session_timeout_ms=config.group_consumer_session_timeout_ms,
            heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
            max_size=config.group_max_size,
        )
        self._led: dict[int, _Led] = {}
        self._waiters: dict[int, asyncio.Future[JoinResult | SyncResult]] = {}
        self._token = 0
        self._wake = asyncio.Event()
        self._creating: asyncio.Task[None] | None = None
        self._closed = False
        # (image, topic name -> id, topic name -> partition count) of the image the last KIP-848 heartbeat saw
        self._topic_maps: tuple[MetadataImage, dict[str, uuid.UUID], dict[str, int]] | None = None

    # ---- leadership --------------------------------------------------------------------------------------------

    def reconcile(self, image: MetadataImage) -> None:
        """After every image the manager reconciled: load what this shard now leads, drop what it does not."""
        if self._closed:
            return
        topic = image.topics.get(OFFSETS_TOPIC)
        led: dict[int, int] = {}
        if topic is not None:
            for pi in topic.partitions:
                p = self._manager.partitions.get(TopicPartition(OFFSETS_TOPIC, pi.partition))
                if p is not None and p.is_leader:
                    led[pi.partition] = p.leader_epoch
        for n in list(self._led):
            if led.get(n) != self._led[n].leader_epoch:
                self._unload(n)
        for n, epoch in led.items():
            if n not in self._led:
                entry = _Led(n, epoch)
                self._led[n] = entry
                entry.loader = asyncio.get_running_loop().create_task(self._load(entry), name=f"load-groups-{n}")
                entry.loader.add_done_callback(_report_load_failure)

    def _unload(self, n: int) -> None:
        entry = self._led.pop(n)
        if entry.loader is not None and not entry.loader.done():
            entry.loader.cancel()
        for task in entry.writes:
            task.cancel()
        if entry.groups is not None:
            entry.groups.close()
            self._deliver(entry)
            log.info("%s-%d: no longer its leader, %d group(s) dropped", OFFSETS_TOPIC, n, len(entry.groups.groups))

    async def _load(self, entry: _Led) -> None:
        """Replay the partition's log into a fresh ``ClassicGroups``; the latest record per key wins."""
        p = self._manager.partitions[TopicPartition(OFFSETS_TOPIC, entry.partition)]
        groups = ClassicGroups(self._limits, self._rng, self._consumer_limits)
        names = dict(self._manager.image.topics_by_id)
        now = self._now_ms()
        offset = p.log.log_start_offset
        records = 0
        while offset < p.log.log_end_offset:
            read = p.log.read(offset, LOAD_READ_BYTES, p.log.log_end_offset, min_one_batch=True)
            if not read.data:
                break
            data = bytes(read.data)
            pos = 0
            while pos < len(data):
                size = parse_header(data, pos).size
                for r in decode_batch(memoryview(data)[pos : pos + size]):
                    records += _replay(groups, r.key, r.value, names, now)
                pos += size
            offset = read.next_offset
            await asyncio.sleep(0)  # other requests run between reads
        groups.loaded(self._now_ms())
        entry.groups = groups
        log.log(
            logging.INFO if records else logging.DEBUG,  # 50 partitions of an unused topic would flood the log
            "%s-%d: loaded %d group(s) from %d record(s) (leader epoch %d)",
            OFFSETS_TOPIC,
            entry.partition,
            len(groups.groups),
            records,
            entry.leader_epoch,
        )
        self._wake.set()

    def close(self) -> None:
        """The shard stops: waiting joins and syncs are told to find another coordinator, at once."""
        self._closed = True
        for n in list(self._led):
            self._unload(n)
        if self._creating is not None:
            self._creating.cancel()
        self._wake.set()

    # ---- finding a group ---------------------------------------------------------------------------------------

    def coordinator_partition(self, group_id: str) -> int | None:
        """The ``__consumer_offsets`` partition of ``group_id``, None while the topic does not exist."""
        topic = self._manager.image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return None
        return recs.partition_for(group_id, len(topic.partitions))

    async def ensure_offsets_topic(self) -> None:
        """Create ``__consumer_offsets`` (once, whatever the number of callers) if it does not exist yet; raises
        KafkaError when the controller refuses."""
        if OFFSETS_TOPIC in self._manager.image.topics:
            return
        if self._creating is None or self._creating.done():
            self._creating = asyncio.get_running_loop().create_task(self._create_offsets_topic())
        await asyncio.shield(self._creating)

    async def _create_offsets_topic(self) -> None:
        image = self._manager.image
        nodes = {b.node_id if b.node_id is not None else -b.broker_id for b in image.brokers.values() if not b.fenced}
        replication_factor = max(1, min(self._config.offsets_topic_replication_factor, len(nodes)))
        configs = {
            "cleanup.policy": "compact",
            "segment.bytes": str(self._config.offsets_topic_segment_bytes),
            "max.message.bytes": str(OFFSETS_TOPIC_MESSAGE_MAX_BYTES),
        }
        try:
            await self._manager.create_topic(
                OFFSETS_TOPIC, self._config.offsets_topic_partitions, replication_factor, configs
            )
            log.info(
                "created %s: %d partitions, replication factor %d",
                OFFSETS_TOPIC,
                self._config.offsets_topic_partitions,
                replication_factor,
            )
        except KafkaError as e:
            if e.code is not ErrorCode.TOPIC_ALREADY_EXISTS:
                raise

    def _groups(self, group_id: str) -> tuple[_Led, ClassicGroups]:
        n = self.coordinator_partition(group_id)
        if n is None:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC} does not exist yet")
        entry = self._led.get(n)
        if entry is None or not self._manager.lease_valid():
            raise KafkaError(ErrorCode.NOT_COORDINATOR, f"broker {self._manager.broker_id} does not lead partition {n}")
        if entry.groups is None:
            raise KafkaError(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, f"{OFFSETS_TOPIC}-{n} is being loaded")
        return entry, entry.groups

    # ---- requests ----------------------------------------------------------------------------------------------

    async def join(self, req: JoinRequest) -> JoinResult:
        entry, groups = self._groups(req.group_id)
        token, fut = self._waiter()
        groups.join(req, token, self._now_ms())
        self._deliver(entry)
        result = await fut
        assert isinstance(result, JoinResult)
        return result

    async def sync(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        protocol: tuple[str | None, str | None],
        assignments: Mapping[str, bytes],
    ) -> SyncResult:
        entry, groups = self._groups(group_id)
        token, fut = self._waiter()
        groups.sync(group_id, member_id, instance_id, generation, protocol, assignments, token, self._now_ms())
        self._deliver(entry)
        result = await fut
        assert isinstance(result, SyncResult)
        return result

    def heartbeat(self, group_id: str, member_id: str, instance_id: str | None, generation: int) -> ErrorCode:
        entry, groups = self._groups(group_id)
        error = groups.heartbeat(group_id, member_id, instance_id, generation, self._now_ms())
        self._deliver(entry)
        return error

    async def consumer_heartbeat(self, req: HeartbeatRequest) -> HeartbeatResult:
        """ConsumerGroupHeartbeat (KIP-848). What changed in the group (epochs, members, assignments) is written
        as Kafka's records and the answer waits for them to be on every in-sync replica, so a new coordinator
        loads the group where the members left it."""
        entry, groups = self._groups(req.group_id)
        image = self._manager.image
        if self._topic_maps is None or self._topic_maps[0] is not image:
            # Built once per metadata image, not per heartbeat: the same partitions mapping also keeps the regular
            # expressions' matches (consumer.RegexMatches) until the image changes.
            topics = image.topics.values()
            ids = {t.name: t.topic_id for t in topics}
            self._topic_maps = (image, ids, {t.name: len(t.partitions) for t in topics})
        _, groups.topic_ids, partitions = self._topic_maps
        result, records = groups.consumer_heartbeat(req, partitions, self._now_ms())
        self._deliver(entry)
        if records:
            error = await self._write(entry, records)
            if error is not ErrorCode.NONE:
                return HeartbeatResult(error, f"the group's new state could not be written: {error.name}")
        return result

    def consumer_group(self, group_id: str) -> ConsumerGroupState | None:
        _, groups = self._groups(group_id)
        return groups.consumer_group(group_id)

    def leave(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        entry, groups = self._groups(group_id)
        result = groups.leave(group_id, members, self._now_ms())
        self._deliver(entry)
        return result

    async def commit(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        offsets: Mapping[tuple[str, int], recs.OffsetValue],
    ) -> ErrorCode:
        """Validate and write a commit; NONE once it is on every in-sync replica (then OffsetFetch returns it)."""
        entry, groups = self._groups(group_id)
        error = groups.validate_commit(group_id, member_id, instance_id, generation, self._now_ms())
        self._deliver(entry)
        if error is not ErrorCode.NONE or not offsets:
            return error
        records = tuple(
            (recs.encode_key(recs.OffsetKey(group_id, t, p)), recs.encode_offset_value(v))
            for (t, p), v in offsets.items()
        )
        started = time.monotonic()
        error = await self._write(entry, records)
        if error is ErrorCode.NONE and self._led.get(entry.partition) is entry:
            groups.offsets_committed(group_id, offsets)
            self._probe.group_committed(group_id, len(offsets), time.monotonic() - started)
        elif error in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE, ErrorCode.UNKNOWN_SERVER_ERROR):
            error = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
        return error

    def committed(
        self, group_id: str, partitions: Sequence[tuple[str, int]] | None
    ) -> dict[tuple[str, int], recs.OffsetValue]:
        _, groups = self._groups(group_id)
        return groups.committed(group_id, partitions)

    def describe(self, group_id: str) -> GroupDescription:
        _, groups = self._groups(group_id)
        return groups.describe(group_id)

    def list_groups(self) -> list[GroupDescription]:
        """Every group of the partitions this shard leads and has loaded."""
        return [
            entry.groups.describe(group_id)
            for entry in self._led.values()
            if entry.groups is not None
            for group_id in entry.groups.groups
        ]

    def loading(self) -> bool:
        return any(entry.groups is None for entry in self._led.values())

    async def delete(self, group_id: str) -> ErrorCode:
        entry, groups = self._groups(group_id)
        error, records = groups.delete(group_id)
        if error is not ErrorCode.NONE:
            return error
        return await self._write(entry, records)

    async def delete_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """OffsetDelete: the group's error and one per partition. Partitions of topics the group's consumers
        subscribe to are refused (GROUP_SUBSCRIBED_TO_TOPIC); a non-consumer group must be empty."""
        entry, groups = self._groups(group_id)
        group = groups.groups.get(group_id)
        if group is None:
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        subscribed = groups.subscribed_topics(group_id)
        if subscribed is None and group.members:
            return ErrorCode.NON_EMPTY_GROUP, {}
        errors = {
            tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC if tp[0] in (subscribed or ()) else ErrorCode.NONE
            for tp in partitions
        }
        deleted = [tp for tp, e in errors.items() if e is ErrorCode.NONE and tp in group.offsets]
        if deleted:
            error = await self._write(entry, groups.offset_tombstones(group_id, deleted))
            if error is not ErrorCode.NONE:
                return error, {}
            groups.offsets_committed(group_id, dict.fromkeys(deleted))
        return ErrorCode.NONE, errors

    # ---- effects, writes and timers ----------------------------------------------------------------------------

    def _waiter(self) -> tuple[int, asyncio.Future[JoinResult | SyncResult]]:
        self._token += 1
        fut: asyncio.Future[JoinResult | SyncResult] = asyncio.get_running_loop().create_future()
        self._waiters[self._token] = fut
        return self._token, fut

    def _deliver(self, entry: _Led) -> None:
        """Carry out what the groups asked for: answers to waiting requests, writes to the partition."""
        assert entry.groups is not None
        for group_id, count in entry.groups.rebalances.items():
            self._probe.group_rebalanced(group_id, count)
        entry.groups.rebalances.clear()
        for group_id, what in entry.groups.events:
            log.info("group %r: %s", group_id, what)
        entry.groups.events.clear()
        for effect in entry.groups.drain():
            if isinstance(effect, Reply):
                fut = self._waiters.pop(effect.token, None)
                if fut is not None and not fut.done():
                    fut.set_result(effect.result)
            else:
                self._spawn_store(entry, effect)
        self._wake.set()

    def _spawn_store(self, entry: _Led, store: StoreGroup) -> None:
        task = asyncio.get_running_loop().create_task(self._store(entry, store))
        entry.writes.add(task)
        task.add_done_callback(entry.writes.discard)

    async def _store(self, entry: _Led, store: StoreGroup) -> None:
        error = await self._write(entry, store.records)
        if error is not ErrorCode.NONE:
            log.warning("group %r: writing its state failed: %s", store.group_id, error.name)
        if store.generation >= 0 and self._led.get(entry.partition) is entry and entry.groups is not None:
            entry.groups.group_stored(store.group_id, store.generation, error, self._now_ms())
            self._deliver(entry)

    async def _write(self, entry: _Led, records: Sequence[tuple[bytes, bytes | None]]) -> ErrorCode:
        """Append ``records`` as one batch and wait until every in-sync replica has it (acks=all)."""
        try:
            p = self._manager.lookup(OFFSETS_TOPIC, entry.partition)
            if p.leader_epoch != entry.leader_epoch:
                raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "leadership moved")
            now = self._now_ms()
            buf = build_batch([Record(k, v, now) for k, v in records])
            headers = validate_batches(buf, max_batch_bytes=p.log.config.max_message_bytes)
            info = self._manager.append(p, bytearray(buf), headers)
            fut = p.wait_high_watermark(info.last_offset)
        except KafkaError as e:
            return _WRITE_ERRORS.get(e.code, e.code)
        try:
            await event_loop.within(fut, self._config.offsets_commit_timeout_ms / 1000)
        except TimeoutError:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        except KafkaError as e:
            return _WRITE_ERRORS.get(e.code, e.code)
        return ErrorCode.NONE

    async def run(self) -> None:
        """The groups' timers and offset expiry, until ``close``."""
        next_expiry = self._now_ms() + self._config.offsets_retention_check_interval_ms
        while not self._closed:
            now = self._now_ms()
            if now >= next_expiry:
                self._expire_offsets(now)
                next_expiry = now + self._config.offsets_retention_check_interval_ms
            deadlines = [next_expiry]
            for entry in list(self._led.values()):
                if entry.groups is None:
                    continue
                entry.groups.tick(now)
                self._deliver(entry)
                deadline = entry.groups.next_deadline_ms()
                if deadline is not None:
                    deadlines.append(deadline)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await event_loop.within(self._wake.wait(), max(0, min(deadlines) - self._now_ms()) / 1000)

    def _expire_offsets(self, now: int) -> None:
        retention_ms = self._config.offsets_retention_minutes * 60_000
        for entry in self._led.values():
            if entry.groups is not None:
                for store in entry.groups.expire_offsets(now, retention_ms):
                    self._spawn_store(entry, store)


def _report_load_failure(task: asyncio.Task[None]) -> None:
    """A load that failed leaves its partition's groups unserved (COORDINATOR_LOAD_IN_PROGRESS) until leadership
    moves again: say so loudly rather than lose the exception with the task."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s: loading groups failed; they stay unserved", task.get_name(), exc_info=task.exception())


def _replay(
    groups: ClassicGroups, key: bytes | None, value: bytes | None, names: Mapping[uuid.UUID, str], now_ms: int
) -> int:
    """Apply one record of the partition while loading; a record this broker cannot read is logged and skipped
    (a newer format written by a later version), as Kafka does."""
    if key is None:
        return 0
    try:
        if len(key) >= 2 and consumer_records.key_type(key) in consumer_records.CONSUMER_KEY_TYPES:
            rec = consumer_records.decode(key, value, names)
            if rec is not None:
                groups.load_consumer(rec, now_ms)
            return 1
        decoded = recs.decode_key(key)
        if isinstance(decoded, recs.OffsetKey):
            groups.load_offset(decoded, None if value is None else recs.decode_offset_value(value), now_ms)
        else:
            groups.load_group(decoded.group, None if value is None else recs.decode_group_value(value), now_ms)
    except recs.RecordFormatError as e:
        log.warning("%s: skipping a record it cannot read: %s", OFFSETS_TOPIC, e)
        return 0
    return 1
