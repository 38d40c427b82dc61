"""Idempotent producers (KIP-98): per partition, each producer's epoch and its last batches' sequence numbers.

Runs in a shard process; a pure core (no I/O, no clock). The leader checks every batch that carries a producer id
before appending it: a retry of one of the producer's last ``BATCHES_REMEMBERED`` batches is a duplicate and gets the
offsets it was first written at (the client is told "ok" again, nothing is appended); a gap in the sequence is
OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH. Header fields only: no record is read.

Every replica, leader or follower, builds the same table from its own log, batch by batch: each batch is filed under
its own producer id and epoch at its own offsets (a follower's fetched chunk interleaves many producers). So a
follower that becomes leader judges a producer's retry against that producer's history, as the old leader would
have (Kafka's ProducerStateManager).

The table survives restarts and truncations through snapshots (Kafka's ``<offset>.snapshot`` files: the state of
every producer as of that offset), taken at segment rolls and at close (``rafka_shards.storage.producer_snapshots``
stores them). A replica rebuilds its table from the newest snapshot at or below its log end plus the batch headers
after it; a follower that truncates does the same from the newest snapshot at or below the truncation point, so
state of batches it dropped is gone with them. Since snapshots are rare (a young segment may hold all of the log), the
table also keeps a few in-memory checkpoints (a copy of itself as of a log end offset, every
``PRODUCER_CHECKPOINT_INTERVAL_BATCHES`` batches or more): a truncation restores the newest one at or below the new log
end and replays only the batches after it, and uses the snapshots only when none is old enough.
"""

from __future__ import annotations

import collections
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import crc32c

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BatchHeader
from rafka_shards.shard.limits import (
    BATCHES_REMEMBERED,
    PRODUCER_CHECKPOINT_INTERVAL_BATCHES,
    PRODUCER_CHECKPOINTS_KEPT,
)

SEQUENCE_MODULUS = 2**31
NO_PRODUCER_ID = -1


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


class _Producer:
    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: collections.deque[BatchMetadata] = collections.deque(maxlen=BATCHES_REMEMBERED)

    def copy(self) -> _Producer:
        p = _Producer(self.epoch)
        p.batches.extend(self.batches)  # BatchMetadata is frozen: shared, not copied
        return p


_Producers = collections.OrderedDict[int, _Producer]


def _copy(producers: _Producers) -> _Producers:
    return collections.OrderedDict((pid, p.copy()) for pid, p in producers.items())


@dataclass(frozen=True, slots=True)
class Duplicate:
    first_offset: int
    last_offset: int


class ProducerStateTable:
    """Producers of one partition, least recently used first; bounded by ``producers_max``. Plus checkpoints of
    itself, for truncations: the owner tells it the log end after each append (``checkpoint_if_due``) and after a
    truncation asks for the newest one below the new end (``roll_back_to``)."""

    def __init__(
        self,
        producers_max: int,
        checkpoint_interval_batches: int = PRODUCER_CHECKPOINT_INTERVAL_BATCHES,
        checkpoints_kept: int = PRODUCER_CHECKPOINTS_KEPT,
    ) -> None:
        assert producers_max > 0 and checkpoint_interval_batches > 0 and checkpoints_kept > 0
        self._producers_max = producers_max
        self._producers: _Producers = collections.OrderedDict()
        self._checkpoint_interval_batches = checkpoint_interval_batches
        # (log end offset, the table as of there), oldest first; offsets increase.
        self._checkpoints: collections.deque[tuple[int, _Producers]] = collections.deque(maxlen=checkpoints_kept)
        self._batches_since_checkpoint = 0

    def __len__(self) -> int:
        return len(self._producers)

    def epoch_of(self, producer_id: int) -> int | None:
        p = self._producers.get(producer_id)
        return None if p is None else p.epoch

    def batches_of(self, producer_id: int) -> tuple[BatchMetadata, ...]:
        p = self._producers.get(producer_id)
        return () if p is None else tuple(p.batches)

    def last_offsets(self) -> dict[int, int]:
        """producer id -> the last offset of its newest batch: the batches log compaction must keep (even emptied)
        so a restarted or new leader still knows each producer's sequence."""
        return {pid: p.batches[-1].last_offset for pid, p in self._producers.items() if p.batches}

    def check(self, headers: Sequence[BatchHeader]) -> Duplicate | None:
        """Before appending: the duplicate these batches are (all of them), or None; KafkaError if out of order."""
        idempotent = [h for h in headers if h.producer_id != NO_PRODUCER_ID]
        if not idempotent:
            return None
        if len(idempotent) != len(headers) or len({(h.producer_id, h.producer_epoch) for h in headers}) != 1:
            raise KafkaError(ErrorCode.INVALID_RECORD, "batches of one request mix producers or epochs")
        first = headers[0]
        p = self._producers.get(first.producer_id)
        if p is None:
            return None
        if first.producer_epoch < p.epoch:
            raise KafkaError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer {first.producer_id} epoch {first.producer_epoch} is older than {p.epoch}",
            )
        if first.producer_epoch > p.epoch:
            if first.base_sequence != 0:
                raise KafkaError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"producer {first.producer_id} new epoch {first.producer_epoch} must start at sequence 0, "
                    f"got {first.base_sequence}",
                )
            return None
        for cached in p.batches:
            if cached.first_seq == first.base_sequence:
                last = headers[-1]
                if cached.last_seq == _last_seq(last):
                    return Duplicate(cached.first_offset, cached.last_offset)
        expected = (p.batches[-1].last_seq + 1) % SEQUENCE_MODULUS if p.batches else None
        if expected is not None and first.base_sequence != expected:
            raise KafkaError(
                ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"producer {first.producer_id}: expected sequence {expected}, got {first.base_sequence}",
            )
        for prev, h in itertools.pairwise(headers):
            if h.base_sequence != (_last_seq(prev) + 1) % SEQUENCE_MODULUS:
                raise KafkaError(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap between batches of a request")
        return None

    def update(self, headers: Iterable[BatchHeader], first_offset: int) -> None:
        """After appending ``headers`` at consecutive offsets from ``first_offset``: remember each batch under its
        own producer id and epoch, at its own offsets (a leader's request holds one producer, a follower's fetched
        chunk or a recovery scan many)."""
        offset = first_offset
        for h in headers:
            self._batches_since_checkpoint += 1
            count = h.last_offset_delta + 1
            if h.producer_id != NO_PRODUCER_ID:
                self._remember(h, offset, offset + count - 1)
            offset += count

    def replay(self, headers: Iterable[BatchHeader]) -> None:
        """Batches read back from the log (recovery, truncation): each at the offsets its header gives."""
        for h in headers:
            self._batches_since_checkpoint += 1
            if h.producer_id != NO_PRODUCER_ID:
                self._remember(h, h.base_offset, h.last_offset)

    def _remember(self, h: BatchHeader, first_offset: int, last_offset: int) -> None:
        producer_id, epoch = h.producer_id, h.producer_epoch
        batch = BatchMetadata(h.base_sequence, _last_seq(h), first_offset, last_offset)
        p = self._producers.get(producer_id)
        if p is None or epoch > p.epoch:
            p = _Producer(epoch)
            self._producers[producer_id] = p
        elif epoch < p.epoch:
            # Only a leader's checked appends and copies of them reach here, so an older epoch cannot follow a newer
            # one in a log; keep the newer state rather than go back.
            return
        self._producers.move_to_end(producer_id)
        p.batches.append(batch)
        while len(self._producers) > self._producers_max:
            self._producers.popitem(last=False)

    def clear(self) -> None:
        """Forget every producer, and every checkpoint (they described a log that is gone)."""
        self._producers.clear()
        self._checkpoints.clear()
        self._batches_since_checkpoint = 0

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def checkpoint_if_due(self, end_offset: int) -> None:
        """The table now holds every batch of the log below ``end_offset`` (its log end): keep a copy as of there if
        ``checkpoint_interval_batches`` batches, and at least as many as there are producers, came since the last
        one (so copying costs at most one producer per batch filed)."""
        due = max(self._checkpoint_interval_batches, len(self._producers))
        if self._batches_since_checkpoint < due:
            return
        assert not self._checkpoints or self._checkpoints[-1][0] < end_offset, (self._checkpoints[-1][0], end_offset)
        self._checkpoints.append((end_offset, _copy(self._producers)))
        self._batches_since_checkpoint = 0

    def roll_back_to(self, end_offset: int, log_start_offset: int) -> int | None:
        """A truncation left the log as ``[log_start_offset, end_offset)``: drop the checkpoints past its end, restore
        the newest one within it and return its offset (the owner then replays the batches from there), or None if
        no checkpoint lies within it (the table is unchanged: the owner rebuilds it from a snapshot)."""
        while self._checkpoints and self._checkpoints[-1][0] > end_offset:
            self._checkpoints.pop()
        if not self._checkpoints or self._checkpoints[-1][0] < log_start_offset:
            return None  # one below the log start misses the batches retention deleted after it
        offset, producers = self._checkpoints[-1]
        self._producers = _copy(producers)  # the checkpoint stays as it is, for a later truncation
        self._batches_since_checkpoint = 0
        return offset

    # ---- snapshots ---------------------------------------------------------------------------------------------

    def to_snapshot(self) -> bytes:
        """Every producer's state, least recently used first (``load_snapshot`` restores the order too)."""
        body = bytearray(_COUNT.pack(len(self._producers)))
        for pid, p in self._producers.items():
            body += _PRODUCER.pack(pid, p.epoch, len(p.batches))
            for b in p.batches:
                body += _BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset)
        return _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc32c.crc32c(body)) + bytes(body)

    def load_snapshot(self, data: bytes) -> None:
        """Replace the table with a snapshot's state (and drop the checkpoints); ``SnapshotError`` if it is not a
        valid snapshot (the table is unchanged then)."""
        producers = decode_snapshot(data)
        self.clear()
        for pid, epoch, batches in producers[-self._producers_max :]:
            p = _Producer(epoch)
            p.batches.extend(batches)
            self._producers[pid] = p


class SnapshotError(ValueError):
    """Bytes that are not a producer-state snapshot of a known version (torn, corrupt or foreign)."""


SNAPSHOT_MAGIC = b"RPS1"
SNAPSHOT_VERSION = 1
_HEADER = struct.Struct(">4sHI")  # magic, version, crc32c of the rest
_COUNT = struct.Struct(">I")
_PRODUCER = struct.Struct(">qhB")  # producer id, epoch, batches that follow
_BATCH = struct.Struct(">iiqq")  # first and last sequence, first and last offset


def decode_snapshot(data: bytes) -> list[tuple[int, int, list[BatchMetadata]]]:
    if len(data) < _HEADER.size + _COUNT.size:
        raise SnapshotError(f"snapshot of {len(data)} bytes is too short")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        raise SnapshotError(f"not a producer snapshot of version {SNAPSHOT_VERSION}: {magic!r} v{version}")
    body = memoryview(data)[_HEADER.size :]
    if crc32c.crc32c(body) != crc:
        raise SnapshotError("snapshot checksum mismatch")
    try:
        (count,) = _COUNT.unpack_from(body)
        pos = _COUNT.size
        out: list[tuple[int, int, list[BatchMetadata]]] = []
        for _ in range(count):
            pid, epoch, n = _PRODUCER.unpack_from(body, pos)
            pos += _PRODUCER.size
            if n > BATCHES_REMEMBERED:
                raise SnapshotError(f"producer {pid} has {n} batches, at most {BATCHES_REMEMBERED} are kept")
            batches = []
            for _ in range(n):
                batches.append(BatchMetadata(*_BATCH.unpack_from(body, pos)))
                pos += _BATCH.size
            out.append((pid, epoch, batches))
    except struct.error as e:
        raise SnapshotError(f"truncated snapshot: {e}") from None
    if pos != len(body):
        raise SnapshotError(f"{len(body) - pos} trailing bytes in snapshot")
    return out


def _last_seq(h: BatchHeader) -> int:
    return (h.base_sequence + h.last_offset_delta) % SEQUENCE_MODULUS
