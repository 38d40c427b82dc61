"""One partition led by this shard: its log, its leader epoch, and who waits on it.

Runs in a shard process, on its event loop thread. Owns the partition's ``PartitionLog`` exclusively (no other
process opens the directory: see the lock in ``manager``). The durability rule lives here:

- durability=fsync (default): the high watermark is the fsynced offset. acks=all waits until ``durable_offset`` passes
  the batch; acks=1 returns after the write. Consumers only see fsynced data, so a crash never takes back a record a
  consumer has read.
- durability=flush (Kafka's interval mode): the high watermark is the log end offset; fsync happens every
  flush_interval_ms; acks=all returns after the write, as with a single-replica Kafka topic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from pathlib import Path

from rafka_shards.broker.producer_state import ProducerStateTable
from rafka_shards.config import Durability
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.probe import PartitionProbe
from rafka_shards.records.batch import BatchHeader
from rafka_shards.storage.log import AppendInfo, PartitionLog

log = logging.getLogger(__name__)


class Partition:
    __slots__ = (
        "_ack_waiters",
        "_closed",
        "_data_waiters",
        "directory",
        "durability",
        "leader_epoch",
        "log",
        "probe",
        "producers",
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
        # Producer state is not snapshotted; rebuild it from the batches recovery scanned (at least the active
        # segment), so a retry of a recent batch is still recognised after a restart.
        for h in log_.take_recovered_headers():
            self.producers.update((h,), h.base_offset)
        # (last offset of an append, future resolved once it is durable); appends are in offset order, so a deque
        # drained from the left suffices. Bounded by in-flight produce requests (connections x in-flight limit).
        self._ack_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        # Fetches long-polling this partition: woken when the high watermark moves or the partition goes away.
        self._data_waiters: set[asyncio.Future[None]] = set()
        self._closed = False

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
        if self._closed:
            raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp} is no longer served by this shard")
        info = self.log.append(buf, headers, self.leader_epoch, now_ms)
        if self.durability is Durability.FLUSH:
            self._advance_high_watermark(self.log.log_end_offset)
        return info

    def wait_durable(self, last_offset: int) -> asyncio.Future[None]:
        """A future that completes once every offset up to ``last_offset`` is fsynced."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.log.durable_offset > last_offset:
            fut.set_result(None)
        else:
            self._ack_waiters.append((last_offset, fut))
        return fut

    def on_flushed(self) -> None:
        """Called by the group-commit flusher after this partition's flush job completed."""
        if self._closed:
            return
        durable = self.log.durable_offset
        waiters = self._ack_waiters
        while waiters and waiters[0][0] < durable:
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self.durability is Durability.FSYNC:
            self._advance_high_watermark(durable)

    def _advance_high_watermark(self, offset: int) -> None:
        if offset > self.log.high_watermark:
            self.log.update_high_watermark(offset)
            self._wake_readers()

    def add_data_waiter(self, fut: asyncio.Future[None]) -> None:
        if self._closed:
            if not fut.done():
                fut.set_result(None)
            return
        self._data_waiters.add(fut)

    def remove_data_waiter(self, fut: asyncio.Future[None]) -> None:
        self._data_waiters.discard(fut)

    def _wake_readers(self) -> None:
        if not self._data_waiters:
            return
        for fut in self._data_waiters:
            if not fut.done():
                fut.set_result(None)
        self._data_waiters.clear()

    def close(self, *, delete: bool) -> None:
        """Stop serving: fail pending acks, wake readers, close (or delete) the log."""
        if self._closed:
            return
        self._closed = True
        error = KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"{self.tp} stopped being served by this shard")
        while self._ack_waiters:
            _, fut = self._ack_waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
        self._wake_readers()
        if delete:
            self.log.delete()
        else:
            self.log.close()
