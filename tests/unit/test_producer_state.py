"""Idempotent producer state: duplicates get their first offsets back, gaps and old epochs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BatchHeader, validate_batches
from rafka_shards.records.builder import Record, build_batch
from rafka_shards.shard.producer_state import ProducerStateTable


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

    from rafka_shards.config import Durability
    from rafka_shards.model import TopicPartition
    from rafka_shards.shard.partition import Partition
    from rafka_shards.shard.probe import PartitionProbe
    from rafka_shards.storage.config import LogConfig
    from rafka_shards.storage.log import PartitionLog

    log = PartitionLog.open(tmp_path, LogConfig(), 0)
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


def _chunk(*batches: tuple[int, int, int, int]) -> tuple[bytearray, list[BatchHeader]]:
    """Batches (producer id, epoch, base sequence, records) laid out at consecutive offsets from 0, as a follower
    fetches them: one chunk interleaving producers."""
    from rafka_shards.records.batch import assign_offsets

    buf = bytearray()
    for pid, epoch, seq, n in batches:
        buf += build_batch([Record(None, b"v", 1)] * n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    headers = validate_batches(buf, max_batch_bytes=10**6)
    assign_offsets(buf, headers, 0, 0, None)
    return buf, validate_batches(buf, max_batch_bytes=10**6)


def test_a_replicated_chunk_files_each_batch_under_its_own_producer() -> None:
    """The bug of issue 13: a follower filed every batch of a fetched chunk under the first batch's producer, so
    after fail-over a retry of producer B was judged against producer A's sequences."""
    _, headers = _chunk((1, 0, 0, 2), (2, 0, 0, 3), (1, 0, 2, 1), (3, 5, 7, 1))
    t = ProducerStateTable(10)
    t.replay(headers)
    assert [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in t.batches_of(1)] == [
        (0, 1, 0, 1),
        (2, 2, 5, 5),
    ]
    assert [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in t.batches_of(2)] == [(0, 2, 2, 4)]
    assert t.epoch_of(3) == 5
    dup = t.check(_batch(2, 0, 0, n=3))  # producer 2 retries its batch: the duplicate at producer 2's offsets
    assert dup is not None and (dup.first_offset, dup.last_offset) == (2, 4)
    assert t.check(_batch(2, 0, 3)) is None  # producer 2's next sequence is 3, not producer 1's 3
    with pytest.raises(KafkaError):
        t.check(_batch(1, 0, 4))  # producer 1 expects 3
    # update() (the leader's path: offsets from the append) gives the same table for the same batches.
    u = ProducerStateTable(10)
    u.update(headers, 0)
    assert u.to_snapshot() == t.to_snapshot()


def test_snapshots_round_trip_and_refuse_corruption() -> None:
    from rafka_shards.shard.producer_state import SnapshotError

    _, headers = _chunk((1, 0, 0, 2), (2, 3, 0, 3), (1, 0, 2, 1))
    t = ProducerStateTable(10)
    t.replay(headers)
    data = t.to_snapshot()
    u = ProducerStateTable(10)
    u.load_snapshot(data)
    assert u.to_snapshot() == data and u.epoch_of(2) == 3 and u.batches_of(1) == t.batches_of(1)
    for bad in (data[:-1], data[:3], b"XXXX" + data[4:], data[:-1] + bytes([data[-1] ^ 1])):
        with pytest.raises(SnapshotError):
            ProducerStateTable(10).load_snapshot(bad)


def _open(tmp_path: Path, config: object = None) -> object:
    import uuid

    from rafka_shards.config import Durability
    from rafka_shards.model import TopicPartition
    from rafka_shards.shard.partition import Partition
    from rafka_shards.shard.probe import PartitionProbe
    from rafka_shards.storage.config import LogConfig
    from rafka_shards.storage.log import PartitionLog

    tp = TopicPartition("t", 0)
    log = PartitionLog.open(tmp_path, config if isinstance(config, LogConfig) else LogConfig(), 0)
    return Partition(tp, uuid.UUID(int=1), tmp_path, log, 0, Durability.FLUSH, 100, PartitionProbe(tp))


def test_a_producer_last_seen_in_an_old_segment_is_known_after_a_crash(tmp_path: Path) -> None:
    """Snapshots at segment rolls: recovery scans only the segments after the recovery point, yet a producer whose
    last batch is in an older one is still checked after a crash (a retry is a duplicate, a gap is refused)."""
    from controller.image import PartitionImage
    from rafka_shards.shard.partition import Partition
    from rafka_shards.storage.config import LogConfig
    from rafka_shards.storage.producer_snapshots import snapshot_offsets

    config = LogConfig(segment_bytes=200)  # every batch of ~70 bytes; a roll every few batches
    p = _open(tmp_path, config)
    assert isinstance(p, Partition)
    p.assign(0, PartitionImage(0, (0,), (0,), 0, 0, 0), now_ms=0)
    for seq in (0, 2):
        p.append(*_batch_buf(9, 0, seq), now_ms=0)
    for seq in range(0, 40, 2):
        p.append(*_batch_buf(8, 0, seq), now_ms=0)
    p.log.flush_now()  # durable, recovery point moved past producer 9's segment; then "crash" (no close)
    assert len(p.log.segments) > 3 and snapshot_offsets(tmp_path)
    again = _open(tmp_path, config)
    assert isinstance(again, Partition)
    dup = again.producers.check(_batch(9, 0, 2))
    assert dup is not None and (dup.first_offset, dup.last_offset) == (2, 3)
    with pytest.raises(KafkaError) as e:
        again.producers.check(_batch(9, 0, 10))
    assert e.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert again.producers.check(_batch(8, 0, 40)) is None


def _batch_buf(pid: int, epoch: int, seq: int, n: int = 2) -> tuple[bytearray, list[BatchHeader]]:
    buf = bytearray(build_batch([Record(None, b"v", 1)] * n, producer_id=pid, producer_epoch=epoch, base_sequence=seq))
    return buf, validate_batches(buf, max_batch_bytes=10**6)


def test_snapshots_past_the_log_end_are_not_used(tmp_path: Path) -> None:
    """A snapshot written before a crash took the data it describes (or before a truncation) is deleted."""
    from rafka_shards.shard.partition import Partition
    from rafka_shards.storage.producer_snapshots import snapshot_offsets, write_snapshot

    t = ProducerStateTable(10)
    t.update(_batch(5, 0, 0), 0)
    write_snapshot(tmp_path, 100, t.to_snapshot())
    p = _open(tmp_path)
    assert isinstance(p, Partition)
    assert len(p.producers) == 0 and snapshot_offsets(tmp_path) == []


def test_truncation_rolls_back_producer_state(tmp_path: Path) -> None:
    from controller.image import PartitionImage
    from rafka_shards.shard.partition import Partition

    p = _open(tmp_path)
    assert isinstance(p, Partition)
    p.assign(1, PartitionImage(0, (0, 1), (0, 1), 0, 0, 0), now_ms=0)  # broker 1 follows broker 0
    buf, headers = _chunk((1, 0, 0, 2), (2, 0, 0, 1), (1, 0, 2, 2))
    p.append_replica(buf, headers, 0)
    assert [b.last_seq for b in p.producers.batches_of(1)] == [1, 3]
    p.truncate_to(3)  # the new leader has only the first two batches
    assert p.log.log_end_offset == 3
    assert [b.last_seq for b in p.producers.batches_of(1)] == [1]
    assert p.producers.check(_batch(1, 0, 2)) is None  # the dropped batch is not a duplicate: it is written again
    p.truncate_to(0)
    assert len(p.producers) == 0


def test_a_retry_rewritten_elsewhere_after_truncation_is_acknowledged_at_its_new_offsets(tmp_path: Path) -> None:
    """The misplaced-ack path: a follower copied producer 1's batch at offsets 3-4 from a leader that died before
    anyone else had it; it truncates to the new leader's log, where the producer's retry landed at 5-6 behind
    another producer's batch. Made leader later, it must answer a further retry with 5-6 (3-4 holds other data)."""
    from controller.image import PartitionImage
    from rafka_shards.records.batch import assign_offsets
    from rafka_shards.shard.partition import Partition

    p = _open(tmp_path)
    assert isinstance(p, Partition)
    p.assign(1, PartitionImage(0, (0, 1, 2), (0, 1, 2), 0, 0, 0), now_ms=0)
    buf, headers = _chunk((2, 0, 0, 3), (1, 0, 0, 2))  # producer 2 at 0-2, producer 1 at 3-4 (old leader only)
    p.append_replica(buf, headers, 0)
    p.assign(1, PartitionImage(0, (0, 1, 2), (0, 1, 2), 2, 1, 1), now_ms=0)  # broker 2 leads now
    p.truncate_to(3)  # where the logs agree
    more = bytearray()
    for pid, seq, n in ((3, 0, 2), (1, 0, 2)):  # producer 3 at 3-4, then producer 1's retry at 5-6
        more += build_batch([Record(None, b"w", 1)] * n, producer_id=pid, producer_epoch=0, base_sequence=seq)
    hs = validate_batches(more, max_batch_bytes=10**6)
    assign_offsets(more, hs, 3, 1, None)
    p.append_replica(more, validate_batches(more, max_batch_bytes=10**6), 0)
    p.assign(1, PartitionImage(0, (0, 1, 2), (0, 1, 2), 1, 2, 2), now_ms=0)  # this replica leads
    dup = p.producers.check(_batch(1, 0, 0))
    assert dup is not None and (dup.first_offset, dup.last_offset) == (5, 6)
