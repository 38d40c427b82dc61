"""One replica of a partition on this shard: its log, its leader epoch, its role, and who waits on it.

Runs in a shard process, on its event loop thread. Owns the partition's ``PartitionLog`` exclusively (no other
process opens the directory: see the lock in ``rafka_shards.storage.partition_dirs``).

Roles (from the metadata image, Kafka's rules): the leader takes produce and serves consumers; followers copy its
log by fetching (``replication``) and serve no client. The leader tracks each follower's fetch offset; the high
watermark (what consumers may read, what acks=all waits for) is the smallest of the leader's own safe offset and the
fetch offsets of the other in-sync replicas. The leader changes the ISR through the controller (AlterPartition):
a follower that has not caught up for ``replica_lag_time_max_ms`` leaves, one that reached the high watermark joins.

The durability rule:
- durability=fsync (default): the leader's safe offset is its fsynced offset, and a follower fsyncs what it copied
  before its next fetch reports it, so acks=all is answered once every in-sync replica has the batch on disk.
  Consumers only see that data, so a crash (of any minority) never takes back a record a consumer has read.
- durability=flush (Kafka's interval mode): the safe offset is the log end offset; fsync happens every
  flush_interval_ms on every replica; acks=all waits for the in-sync followers' copies, as in Kafka.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from controller.image import PartitionImage
from rafka_shards.config import Durability
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.records.batch import BatchHeader
from rafka_shards.shard.probe import PartitionProbe
from rafka_shards.shard.producer_state import ProducerStateTable, SnapshotError
from rafka_shards.storage.log import AppendInfo, PartitionLog
from rafka_shards.storage.producer_snapshots import delete_snapshots, read_snapshot, snapshot_offsets, write_snapshot

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FollowerState:
    """What the leader knows of one follower (Kafka's Replica): its log end offset as of its last fetch (durable
    there under durability=fsync) and when it last had everything the leader had."""

    caught_up_ms: int
    fetch_offset: int = -1  # unknown until it fetches from this leader
    last_fetch_ms: int = -1
    leader_end_at_last_fetch: int = -1


class Partition:
    __slots__ = (
        "_ack_waiters",
        "_closed",
        "_data_waiters",
        "_durable_waiters",
        "_replica_waiters",
        "adding",
        "broker_id",
        "directory",
        "durability",
        "epoch_start_offset",
        "followers",
        "isr",
        "isr_change_pending",
        "isr_retry_at_ms",
        "leader",
        "leader_epoch",
        "log",
        "needs_truncation",
        "partition_epoch",
        "pending_isr",
        "pending_isr_expires_ms",
        "probe",
        "producers",
        "replicas",
        "topic_id",
        "tp",
    )

    def __init__(
        self,
        tp: TopicPartition,
        topic_id: uuid.UUID,
        directory: Path,
        log_: PartitionLog,
        leader_epoch: int,
        durability: Durability,
        producers_max: int,
        probe: PartitionProbe,
    ) -> None:
        self.tp = tp
        self.probe = probe  # byte/batch counts, plain integers flushed to metrics by the shard
        self.topic_id = topic_id
        self.directory = directory
        self.log = log_
        self.leader_epoch = leader_epoch
        self.durability = durability
        self.producers = ProducerStateTable(producers_max)
        # From the newest snapshot at or below the recovered log end, plus the batches after it: a retry of any
        # producer's recent batch is recognised after a restart, whatever segment the producer was last seen in.
        self._rebuild_producers()
        # (last offset of an append, future resolved once it is durable); appends are in offset order, so a deque
        # drained from the left suffices. Bounded by in-flight produce requests (connections x in-flight limit).
        self._ack_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        # The same for fsync alone (a follower waits for its copy to be durable before it fetches on).
        self._durable_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        # Fetches long-polling this partition: consumers woken when the high watermark moves, followers when the log
        # grows; both when the partition goes away.
        self._data_waiters: set[asyncio.Future[None]] = set()
        self._replica_waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self.broker_id = -1
        self.leader = -1
        self.replicas: tuple[int, ...] = ()
        self.adding: tuple[int, ...] = ()  # new replicas of a reassignment in progress, still copying the log
        self.isr: tuple[int, ...] = ()
        self.partition_epoch = -1
        self.epoch_start_offset = 0  # where this replica's log stood when it became leader (its epoch starts there)
        self.followers: dict[int, FollowerState] = {}  # as leader: the other replicas
        self.isr_change_pending = False  # as leader: an AlterPartition is in flight
        # As leader: the replicas an AlterPartition in flight (or one whose fate is unknown) may add. The high
        # watermark counts them with the committed ISR (Kafka's maximal ISR): a joining follower must have every
        # record acknowledged meanwhile, since once the change commits it may be elected leader.
        self.pending_isr: tuple[int, ...] | None = None
        self.pending_isr_expires_ms = -1  # when an AlterPartition of unknown fate no longer can commit unseen
        self.isr_retry_at_ms = 0  # as leader: no new AlterPartition before this (the last one was refused)
        self.needs_truncation = False  # as follower: ask the leader where the logs agree before fetching

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id and self.broker_id >= 0

    def assign(self, broker_id: int, pi: PartitionImage, now_ms: int) -> None:
        """Take the role the metadata image gives this replica (at open and after every change of the partition)."""
        was_leader = self.is_leader
        old_isr = self.isr
        new_epoch = pi.leader_epoch != self.leader_epoch or pi.leader != self.leader
        if self.partition_epoch < 0 and len(pi.replicas) > 1:  # just opened: the log's recovered end is not agreed
            self.log.forget_high_watermark()
        self.broker_id = broker_id
        self.leader_epoch = pi.leader_epoch
        self.leader = pi.leader
        self.replicas = pi.replicas
        self.adding = pi.adding
        self.isr = pi.isr
        self.partition_epoch = pi.partition_epoch
        if self.is_leader:
            if not was_leader or new_epoch:
                # Kafka resets every follower's caught-up time when it becomes leader: each gets a full lag window.
                self.followers = {r: FollowerState(now_ms) for r in pi.replicas if r != broker_id}
                self.epoch_start_offset = self.log.log_end_offset
                self.isr_change_pending = False
                self._clear_pending_isr()
            else:
                if self.pending_isr is not None and pi.isr != old_isr:
                    # The partition epoch moved: ours committed or can no longer (it names the old epoch).
                    self._clear_pending_isr()
                old = self.followers
                self.followers = {r: old.get(r) or FollowerState(now_ms) for r in pi.replicas if r != broker_id}
                for r in old_isr:
                    if r not in pi.isr and r in self.followers:
                        # Taken out of the ISR (fenced, or by this leader): it rejoins only after fetching again.
                        self.followers[r].fetch_offset = -1
            self.needs_truncation = False
            self._advance_high_watermark(self._leader_high_watermark())
            return
        self.followers = {}
        self.isr_change_pending = False
        self._clear_pending_isr()
        if was_leader or new_epoch:
            self.needs_truncation = True
            # Acks not yet given can no longer be: the new leader decides what survives (the client retries there).
            self._fail_acks(
                KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp}: leadership moved to broker {pi.leader}")
            )

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    def check_leader_epoch(self, current_leader_epoch: int) -> None:
        """KIP-320 fencing: a client that names a leader epoch must name ours (-1 means it does not care)."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return
        if current_leader_epoch < self.leader_epoch:
            raise KafkaError(
                ErrorCode.FENCED_LEADER_EPOCH,
                f"{self.tp}: leader epoch {current_leader_epoch} is older than the current {self.leader_epoch}",
            )
        raise KafkaError(
            ErrorCode.UNKNOWN_LEADER_EPOCH,
            f"{self.tp}: leader epoch {current_leader_epoch} is newer than this broker's {self.leader_epoch}",
        )

    def check_offset(self, offset: int) -> None:
        start, end = self.log.log_start_offset, self.log.log_end_offset
        if not start <= offset <= end:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE, f"{self.tp}: offset {offset} is outside the log [{start}, {end}]"
            )

    def append(self, buf: bytearray, headers: list[BatchHeader], now_ms: int) -> AppendInfo:
        if self._closed or not self.is_leader:
            raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp} is not led by this shard")
        active = self.log.segments[-1]
        info = self.log.append(buf, headers, self.leader_epoch, now_ms)
        self._snapshot_if_rolled(active.base_offset)
        self.producers.update(headers, info.base_offset)
        self.producers.checkpoint_if_due(self.log.log_end_offset)
        self._wake(self._replica_waiters)
        if self.durability is Durability.FLUSH:
            self._advance_high_watermark(self._leader_high_watermark())
        return info

    def append_replica(self, buf: bytearray, headers: list[BatchHeader], now_ms: int) -> None:
        """A follower's copy of batches fetched from the leader (offsets and epochs as the leader gave them)."""
        if self._closed or self.is_leader:
            raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp} is not followed by this shard")
        active = self.log.segments[-1]
        self.log.append_replica(buf, headers, now_ms)
        self._snapshot_if_rolled(active.base_offset)
        self.producers.replay(headers)
        self.producers.checkpoint_if_due(self.log.log_end_offset)

    def follower_high_watermark(self, leader_high_watermark: int) -> None:
        """A follower's high watermark: the leader's, as far as this copy reaches."""
        self._advance_high_watermark(min(leader_high_watermark, self.log.log_end_offset))

    def truncate_to(self, offset: int) -> None:
        """A follower drops what its new leader does not have (KIP-101), then fetches from there."""
        assert not self.is_leader, self.tp
        if offset < self.log.log_end_offset:
            log.warning(
                "%s: truncating from %d to %d (diverged from the leader)", self.tp, self.log.log_end_offset, offset
            )
            self.log.truncate_to(offset)
            # Producer state of the dropped batches goes with them (a retry of one must be written again).
            self._roll_back_producers()
        self.needs_truncation = False

    # ---- idempotent producer state ---------------------------------------------------------------------------

    def _snapshot_if_rolled(self, active_base: int) -> None:
        """After an append: if it rolled a new segment, snapshot producer state as of that segment's base (the
        table does not hold the new batches yet), as Kafka does at every roll."""
        rolled = self.log.segments[-1].base_offset
        if rolled != active_base:
            try:
                write_snapshot(self.directory, rolled, self.producers.to_snapshot())
            except OSError as e:  # a full disk: the batches are in the log; recovery replays from an older snapshot
                log.warning("%s: producer state snapshot at %d not written: %s", self.tp, rolled, e)

    def _roll_back_producers(self) -> None:
        """After a truncation: the table as of the new log end, from the newest in-memory checkpoint at or below it
        and the batches after it (a fail-over usually drops only the last few), else as ``_rebuild_producers`` does.
        Either way the same table: a checkpoint is what the table was at that log end."""
        end = self.log.log_end_offset
        start = self.producers.roll_back_to(end, self.log.log_start_offset)
        if start is None:
            self._rebuild_producers()
            return
        self._delete_snapshots_past(end)
        self.producers.replay(self.log.headers_from(start))

    def _delete_snapshots_past(self, end: int) -> list[int]:
        """Delete the snapshots past ``end`` (written before a crash or a truncation took their data); the offsets
        of those left, oldest first."""
        offsets = snapshot_offsets(self.directory)
        delete_snapshots(self.directory, [o for o in offsets if o > end])
        return [o for o in offsets if o <= end]

    def _rebuild_producers(self) -> None:
        """The table from the newest valid snapshot at or below the log end and the batches after it; snapshots
        past the log end are deleted."""
        end = self.log.log_end_offset
        offsets = self._delete_snapshots_past(end)
        self.producers.clear()
        start = self.log.log_start_offset
        for offset in reversed(offsets):
            try:
                self.producers.load_snapshot(read_snapshot(self.directory, offset))
            except (SnapshotError, OSError) as e:
                log.warning("%s: ignoring producer snapshot at %d: %s", self.tp, offset, e)
                continue
            start = offset
            break
        self.producers.replay(self.log.headers_from(start))
        self.producers.checkpoint_if_due(end)

    def apply_retention(self, now_ms: int) -> list[Path]:
        """Remove segments retention no longer keeps (their files renamed aside, returned for the caller to free),
        and the producer snapshots older than the newest one at or below the new log start (that one still
        describes every producer as of a retained offset)."""
        deleted = self.log.apply_retention(now_ms)
        if deleted:
            start = self.log.log_start_offset
            offsets = snapshot_offsets(self.directory)
            base = max((o for o in offsets if o <= start), default=None)
            if base is not None:
                delete_snapshots(self.directory, [o for o in offsets if o < base])
        return deleted

    def truncate_fully_and_start_at(self, offset: int, now_ms: int) -> None:
        """A follower whose whole log lies below the leader's log start offset (the leader's retention deleted what
        this copy lacks): it drops everything and continues at ``offset`` (Kafka's truncateFullyAndStartAt)."""
        assert not self.is_leader, self.tp
        assert offset > self.log.log_end_offset, (offset, self.log.log_end_offset)
        log.warning(
            "%s: the leader's log starts at %d, past this copy's end %d: restarting the log there",
            self.tp,
            offset,
            self.log.log_end_offset,
        )
        self.log.truncate_fully_and_start_at(offset, now_ms)
        # Nothing of the old log is left, so none of its producer state either (Kafka clears it too).
        delete_snapshots(self.directory, snapshot_offsets(self.directory))
        self.producers.clear()
        self.needs_truncation = False

    def wait_high_watermark(self, last_offset: int) -> asyncio.Future[None]:
        """acks=all: a future that completes once the high watermark passes ``last_offset`` (every in-sync replica
        has it, fsynced under durability=fsync); fails if this replica stops leading first."""
        return _waiter(self._ack_waiters, self.log.high_watermark, last_offset)

    def wait_durable(self, last_offset: int) -> asyncio.Future[None]:
        """A future that completes once every offset up to ``last_offset`` is fsynced on this replica."""
        return _waiter(self._durable_waiters, self.log.durable_offset, last_offset)

    def on_flushed(self) -> None:
        """Called by the group-commit flusher after this partition's flush job completed."""
        if self._closed:
            return
        _release(self._durable_waiters, self.log.durable_offset)
        if self.is_leader:
            self._advance_high_watermark(self._leader_high_watermark())

    # ---- the leader's view of its followers ------------------------------------------------------------------

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The committed ISR and, while an AlterPartition is in flight, every replica it adds (Kafka's maximal ISR;
        a replica it removes still counts until the change commits)."""
        pending = self.pending_isr
        if pending is None:
            return self.isr
        return self.isr + tuple(r for r in pending if r not in self.isr)

    def _leader_high_watermark(self) -> int:
        local = self.log.durable_offset if self.durability is Durability.FSYNC else self.log.log_end_offset
        followers = self.followers
        return min([local, *(followers[r].fetch_offset for r in self.maximal_isr if r in followers)])

    def record_follower_fetch(self, replica: int, fetch_offset: int, now_ms: int) -> None:
        """A follower fetched from ``fetch_offset``: it holds everything before it. Kafka's caught-up rule: it is
        caught up now if it reached the log end, or as of its previous fetch if it reached what the log end was
        then."""
        state = self.followers.get(replica)
        if state is None:
            raise KafkaError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {replica} is not a follower of {self.tp} {self.replicas}"
            )
        end = self.log.log_end_offset
        if not self.log.log_start_offset <= fetch_offset <= end:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"{self.tp}: follower {replica} fetches from {fetch_offset}, the log is [{self.log.log_start_offset}, "
                f"{end}]",
            )
        if fetch_offset >= end:
            state.caught_up_ms = now_ms
        elif fetch_offset >= state.leader_end_at_last_fetch and state.last_fetch_ms >= 0:
            state.caught_up_ms = max(state.caught_up_ms, state.last_fetch_ms)
        state.fetch_offset = fetch_offset
        state.last_fetch_ms = now_ms
        state.leader_end_at_last_fetch = end
        self._advance_high_watermark(self._leader_high_watermark())

    def wanted_isr(
        self, now_ms: int, lag_max_ms: int, ineligible: frozenset[int] = frozenset()
    ) -> tuple[int, ...] | None:
        """The ISR this leader should ask for now, or None if it is right (or a change is in flight, or the last
        one was refused moments ago): followers that have not caught up within ``lag_max_ms`` leave; followers that
        reached the high watermark in this leader's epoch join, unless ``ineligible`` (fenced: KIP-841). In replica
        order, the leader always in it."""
        if not self.is_leader or self.isr_change_pending or self._closed:
            return None
        if self.pending_isr is not None and 0 <= self.pending_isr_expires_ms <= now_ms:
            self._clear_pending_isr()
            self._advance_high_watermark(self._leader_high_watermark())
        if now_ms < self.isr_retry_at_ms:
            return None
        hw = self.log.high_watermark
        wanted = []
        for r in self.replicas:
            state = self.followers.get(r)
            if r == self.broker_id:
                wanted.append(r)
            elif state is None:
                continue
            elif r in self.isr:
                if now_ms - state.caught_up_ms <= lag_max_ms:
                    wanted.append(r)
            elif (
                r not in ineligible
                and state.fetch_offset >= max(hw, self.epoch_start_offset)
                and now_ms - state.caught_up_ms <= lag_max_ms
            ):
                wanted.append(r)
        return tuple(wanted) if set(wanted) != set(self.isr) else None

    def begin_isr_change(self, isr: tuple[int, ...]) -> None:
        """An AlterPartition to ``isr`` is about to be proposed: count the replicas it adds from now on."""
        self.isr_change_pending = True
        self.pending_isr = tuple(dict.fromkeys((*(self.pending_isr or ()), *isr)))
        self.pending_isr_expires_ms = -1

    def end_isr_change(self, isr: tuple[int, ...], *, refused: bool, uncertain_until_ms: int = -1) -> None:
        """The AlterPartition to ``isr`` was answered: committed (the image shows it, or showed it already),
        ``refused`` by the controller (it never commits), or of unknown fate until ``uncertain_until_ms`` (the
        controller was unreachable or lost leadership: the command may still commit, so its replicas keep counting)."""
        self.isr_change_pending = False
        if refused:
            self._clear_pending_isr()
            if self.is_leader:
                self._advance_high_watermark(self._leader_high_watermark())
        elif uncertain_until_ms >= 0:
            self.pending_isr_expires_ms = uncertain_until_ms
        elif self.isr == isr or set(self.isr) == set(isr):
            self._clear_pending_isr()

    def _clear_pending_isr(self) -> None:
        self.pending_isr = None
        self.pending_isr_expires_ms = -1

    def _advance_high_watermark(self, offset: int) -> None:
        if offset > self.log.high_watermark:
            self.log.update_high_watermark(offset)
            _release(self._ack_waiters, offset)
            self._wake(self._data_waiters)

    def add_data_waiter(self, fut: asyncio.Future[None], *, replica: bool = False) -> None:
        if self._closed:
            if not fut.done():
                fut.set_result(None)
            return
        (self._replica_waiters if replica else self._data_waiters).add(fut)

    def remove_data_waiter(self, fut: asyncio.Future[None]) -> None:
        self._data_waiters.discard(fut)
        self._replica_waiters.discard(fut)

    @staticmethod
    def _wake(waiters: set[asyncio.Future[None]]) -> None:
        if not waiters:
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    def _fail_acks(self, error: KafkaError) -> None:
        for waiters in (self._ack_waiters, self._durable_waiters):
            while waiters:
                _, fut = waiters.popleft()
                if not fut.done():
                    fut.set_exception(error)

    def close(self, *, delete: bool) -> None:
        """Stop serving: fail pending acks, wake readers, close (or delete) the log."""
        if self._closed:
            return
        self._closed = True
        self._fail_acks(KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp} stopped being served by this shard"))
        self._wake(self._data_waiters)
        self._wake(self._replica_waiters)
        if delete:
            self.log.delete()
        else:
            end = self.log.log_end_offset
            self.log.close()  # fsyncs the data first: the snapshot never describes batches a crash could lose
            write_snapshot(self.directory, end, self.producers.to_snapshot())


def _waiter(
    waiters: collections.deque[tuple[int, asyncio.Future[None]]], reached: int, last_offset: int
) -> asyncio.Future[None]:
    """A future that completes once an offset that is ``reached`` now passes ``last_offset`` (``_release``)."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if reached > last_offset:
        fut.set_result(None)
    else:
        waiters.append((last_offset, fut))
    return fut


def _release(waiters: collections.deque[tuple[int, asyncio.Future[None]]], offset: int) -> None:
    """Complete the waiters (in offset order) for offsets below ``offset``."""
    while waiters and waiters[0][0] < offset:
        _, fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
