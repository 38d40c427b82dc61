"""Idempotent producer state: duplicates get their first offsets back, gaps and old epochs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from rafka_shards.broker.producer_state import ProducerStateTable
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BatchHeader, validate_batches
from rafka_shards.records.builder import Record, build_batch


def _batch(pid: int, epoch: int, seq: int, n: int = 2) -> list[BatchHeader]:
    b = build_batch([Record(None, b"v", 1)] * n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    return validate_batches(b, max_batch_bytes=10**6)


def test_sequence_flow_and_duplicates() -> None:
    t = ProducerStateTable(10)
    assert t.check(_batch(7, 0, 0)) is None
    t.update(_batch(7, 0, 0), first_offset=100)
    assert t.check(_batch(7, 0, 2)) is None
    t.update(_batch(7, 0, 2), first_offset=102)
    dup = t.check(_batch(7, 0, 0))
    assert dup is not None and (dup.first_offset, dup.last_offset) == (100, 101)
    with pytest.raises(KafkaError) as e:
        t.check(_batch(7, 0, 9))
    assert e.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_epochs() -> None:
    t = ProducerStateTable(10)
    t.update(_batch(1, 3, 0), first_offset=0)
    with pytest.raises(KafkaError) as e:
        t.check(_batch(1, 2, 2))
    assert e.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    with pytest.raises(KafkaError) as e:
        t.check(_batch(1, 4, 5))
    assert e.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert t.check(_batch(1, 4, 0)) is None


def test_non_idempotent_batches_and_bound() -> None:
    t = ProducerStateTable(2)
    plain = validate_batches(build_batch([Record(None, b"v", 1)]), max_batch_bytes=10**6)
    assert t.check(plain) is None
    t.update(plain, 0)
    assert len(t) == 0
    for pid in range(5):
        t.update(_batch(pid, 0, 0), pid * 10)
    assert len(t) == 2  # least recently used producers are dropped
    assert t.check(_batch(0, 0, 7)) is None  # forgotten producer: accepted at any sequence, as documented


def test_state_is_rebuilt_from_recovered_batches(tmp_path: Path) -> None:
    import uuid

    from rafka_shards.broker.partition import Partition
    from rafka_shards.config import Durability
    from rafka_shards.model import TopicPartition
    from rafka_shards.probe import PartitionProbe
    from rafka_shards.storage.config import LogConfig
    from rafka_shards.storage.log import PartitionLog

    log = PartitionLog.open(tmp_path, LogConfig(), 0)
    log.take_recovered_headers()
    for seq in (0, 2, 4):
        buf = bytearray(build_batch([Record(None, b"v", 1)] * 2, producer_id=9, producer_epoch=0, base_sequence=seq))
        log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, 0)
    log.close()
    reopened = PartitionLog.open(tmp_path, LogConfig(), 0)
    tp = TopicPartition("t", 0)
    p = Partition(tp, uuid.uuid4(), tmp_path, reopened, 0, Durability.FSYNC, 100, PartitionProbe(tp))
    dup = p.producers.check(_batch(9, 0, 2))
    assert dup is not None and (dup.first_offset, dup.last_offset) == (2, 3)
    with pytest.raises(KafkaError) as e:
        p.producers.check(_batch(9, 0, 10))
    assert e.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
