"""Idempotent producers (KIP-98): per partition, each producer's epoch and its last batches' sequence numbers.

Runs in a shard process; a pure core (no I/O, no clock). The broker checks every batch that carries a producer id
before appending it: a retry of one of the producer's last ``BATCHES_REMEMBERED`` batches is a duplicate and gets the
offsets it was first written at (the client is told "ok" again, nothing is appended); a gap in the sequence is
OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH. Header fields only: no record is read.

State lives in memory and is rebuilt at start-up from the batch headers that log recovery scans (every segment after
the recovery point, at least the active one), so a retry of a recent batch is recognised across a restart. A
producer the table does not know (new, evicted, or last seen in an older segment) is accepted at any sequence, as
Kafka accepts a producer whose state has expired; Kafka's producer-state snapshots would close that remaining gap.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BatchHeader

BATCHES_REMEMBERED = 5  # Kafka's limit too: max.in.flight.requests.per.connection <= 5 for idempotent producers
SEQUENCE_MODULUS = 2**31
NO_PRODUCER_ID = -1


@dataclass(frozen=True, slots=True)
class _Batch:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


class _Producer:
    __slots__ = ("batches", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: collections.deque[_Batch] = collections.deque(maxlen=BATCHES_REMEMBERED)


@dataclass(frozen=True, slots=True)
class Duplicate:
    first_offset: int
    last_offset: int


class ProducerStateTable:
    """Producers of one partition, least recently used first; bounded by ``producers_max``."""

    def __init__(self, producers_max: int) -> None:
        assert producers_max > 0
        self._producers_max = producers_max
        self._producers: collections.OrderedDict[int, _Producer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._producers)

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

    def update(self, headers: Sequence[BatchHeader], first_offset: int) -> None:
        """After appending ``headers`` at consecutive offsets from ``first_offset``: remember them."""
        if not headers or headers[0].producer_id == NO_PRODUCER_ID:
            return
        pid, epoch = headers[0].producer_id, headers[0].producer_epoch
        p = self._producers.get(pid)
        if p is None or epoch > p.epoch:
            p = _Producer(epoch)
            self._producers[pid] = p
        self._producers.move_to_end(pid)
        offset = first_offset
        for h in headers:
            count = h.last_offset_delta + 1
            p.batches.append(_Batch(h.base_sequence, _last_seq(h), offset, offset + count - 1))
            offset += count
        while len(self._producers) > self._producers_max:
            self._producers.popitem(last=False)


def _last_seq(h: BatchHeader) -> int:
    return (h.base_sequence + h.last_offset_delta) % SEQUENCE_MODULUS
