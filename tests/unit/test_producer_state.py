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


# ---- checkpoints: a truncation's rollback gives the table a full rebuild gives ---------------------------------------


def test_checkpoints_are_taken_every_interval_and_restored_as_copies() -> None:
    t = ProducerStateTable(10, checkpoint_interval_batches=2, checkpoints_kept=2)
    _, headers = _chunk(
        (1, 0, 0, 2), (2, 0, 0, 1), (1, 0, 2, 1), (2, 0, 1, 2), (1, 0, 3, 1), (3, 0, 0, 1), (3, 0, 1, 1)
    )
    states = {}
    for h in headers:  # one batch at a time, as appends: offsets 0-1, 2, 3, 4-5, 6, 7, 8
        t.replay([h])
        t.checkpoint_if_due(h.last_offset + 1)
        states[h.last_offset + 1] = t.to_snapshot()
    # Due after 2 batches and at least as many as there are producers: at 3, 6 and (3 producers by then) 9.
    assert t.roll_back_to(9, 0) == 9 and t.to_snapshot() == states[9]
    assert t.roll_back_to(8, 0) == 6 and t.to_snapshot() == states[6]  # 9 is past the end, and dropped
    t.replay(headers[:2])  # the restored table is a copy: changing it leaves the checkpoint alone
    assert t.roll_back_to(7, 0) == 6 and t.to_snapshot() == states[6]
    assert t.roll_back_to(7, 7) is None  # below the log start: retention deleted batches after it
    assert t.roll_back_to(5, 0) is None  # below the oldest checkpoint kept (3 went when 9 came)
    t.clear()  # what the owner does then: a rebuild from the snapshots
    t.replay(headers[:1])
    t.checkpoint_if_due(2)  # one batch filed since: not due
    assert t.roll_back_to(2, 0) is None
    t.replay(headers[1:])
    t.checkpoint_if_due(9)
    assert t.roll_back_to(9, 0) == 9 and t.to_snapshot() == states[9]
    t.clear()
    assert t.roll_back_to(9, 0) is None and len(t) == 0  # clear() forgets the checkpoints too


def _rebuilt_from_disk(p: object) -> bytes:
    """The table a full rebuild gives (newest snapshot at or below the log end, then every batch after it)."""
    from rafka_shards.shard.partition import Partition
    from rafka_shards.storage.producer_snapshots import read_snapshot, snapshot_offsets

    assert isinstance(p, Partition)
    t = ProducerStateTable(_PRODUCERS_MAX)
    start, end = p.log.log_start_offset, p.log.log_end_offset
    offsets = [o for o in snapshot_offsets(p.directory) if o <= end]
    if offsets:
        t.load_snapshot(read_snapshot(p.directory, offsets[-1]))
        start = offsets[-1]
    t.replay(p.log.headers_from(start))
    return t.to_snapshot()


_PRODUCERS_MAX = 3  # fewer than the producers below: evictions are part of the state compared
_Batch = tuple[int, int, int]  # producer id (0: not idempotent), epoch, records
_Op = tuple[str, bool, list[_Batch], float]  # what, as leader, batches (append) or where to (truncate), in [0, 1]


class _Follower:
    """A replica (broker 0) of one partition that switches between leading and following, at a new epoch each time."""

    def __init__(self, directory: Path, checkpoints_kept: int = 2) -> None:
        from rafka_shards.shard.partition import Partition
        from rafka_shards.storage.config import LogConfig

        p = _open(directory, LogConfig(segment_bytes=400, retention_bytes=800, retention_ms=-1))
        assert isinstance(p, Partition)
        p.producers = ProducerStateTable(
            _PRODUCERS_MAX, checkpoint_interval_batches=2, checkpoints_kept=checkpoints_kept
        )
        self.p = p
        self.epoch = 0
        self.seq = 0
        self._role(leader=1)

    def _role(self, leader: int) -> None:
        from controller.image import PartitionImage

        self.epoch += 1
        self.p.assign(0, PartitionImage(0, (0, 1), (0, 1), leader, self.epoch, self.epoch), now_ms=0)

    def append(self, batches: list[_Batch], *, as_leader: bool) -> None:
        from rafka_shards.records.batch import assign_offsets

        buf = bytearray()
        for pid, epoch, n in batches:
            self.seq += n
            ids = {"producer_id": pid, "producer_epoch": epoch, "base_sequence": self.seq} if pid else {}
            buf += build_batch([Record(None, b"v", 1)] * n, **ids)  # type: ignore[arg-type]
        headers = validate_batches(buf, max_batch_bytes=10**6)
        if as_leader:
            self._role(leader=0)
            self.p.append(buf, headers, now_ms=0)
            self._role(leader=1)
        else:
            assign_offsets(buf, headers, self.p.log.log_end_offset, self.epoch, None)
            self.p.append_replica(buf, validate_batches(buf, max_batch_bytes=10**6), now_ms=0)

    def apply(self, op: _Op) -> None:
        what, as_leader, batches, where = op
        log = self.p.log
        if what == "append":
            self.append(batches, as_leader=as_leader)
        elif what == "truncate":
            self.p.truncate_to(log.log_start_offset + round(where * (log.log_end_offset - log.log_start_offset)))
        elif what == "retention":
            self.p.follower_high_watermark(log.log_end_offset)
            self.p.apply_retention(now_ms=0)
        else:
            self.p.truncate_fully_and_start_at(log.log_end_offset + 1 + round(where * 10), now_ms=0)


def _ops() -> object:
    from hypothesis import strategies as st

    batch = st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(1, 3))
    return st.lists(
        st.tuples(
            st.sampled_from(["append"] * 6 + ["truncate"] * 3 + ["retention", "restart"]),
            st.booleans(),
            st.lists(batch, min_size=1, max_size=4),
            st.floats(0, 1),
        ),
        max_size=30,
    )


def test_rollback_through_checkpoints_equals_a_full_rebuild() -> None:
    """After any mix of leader and follower appends, truncations (within the checkpoints kept and below the oldest),
    retention and truncate_fully_and_start_at, with several producers and epochs and evictions: the table equals
    the one rebuilt from the snapshots and the log."""
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_ops(), st.integers(1, 6))
    def run(ops: list[_Op], checkpoints_kept: int) -> None:
        with tempfile.TemporaryDirectory(prefix="rafka-producer-rollback-") as d:
            f = _Follower(Path(d), checkpoints_kept)
            try:
                for op in ops:
                    f.apply(op)
                    assert f.p.producers.to_snapshot() == _rebuilt_from_disk(f.p), op
            finally:
                f.p.close(delete=True)

    run()


def test_a_shallow_truncation_uses_a_checkpoint_and_a_deep_one_the_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rafka_shards.shard.partition import Partition

    rebuilds = []
    rebuild = Partition._rebuild_producers

    def counted(self: Partition) -> None:
        rebuilds.append(self.log.log_end_offset)
        rebuild(self)

    monkeypatch.setattr(Partition, "_rebuild_producers", counted)
    f = _Follower(tmp_path)
    rebuilds.clear()
    for i in range(12):  # 12 batches of 2 records: a checkpoint every 3 (the producers outnumber the interval)
        f.append([(1 + i % 3, 0, 2)], as_leader=i % 2 == 0)
    f.p.truncate_to(21)  # within the checkpoints kept (18 and 24): 18 restored, one batch replayed
    assert rebuilds == [] and f.p.producers.to_snapshot() == _rebuilt_from_disk(f.p)
    f.p.truncate_to(5)  # below the oldest kept: from the snapshots
    assert rebuilds == [4] and f.p.producers.to_snapshot() == _rebuilt_from_disk(f.p)
    f.p.close(delete=True)


def test_a_checkpoint_below_the_log_start_is_not_used(tmp_path: Path) -> None:
    """Retention deleted batches after it: the snapshot at the log start describes them, the checkpoint does not."""
    f = _Follower(tmp_path, checkpoints_kept=20)
    for i in range(24):
        f.append([(1 + i % 4, 0, 1)], as_leader=False)
    f.p.truncate_to(f.p.log.log_end_offset - 1)  # within the checkpoints
    f.apply(("retention", False, [], 0.0))
    start = f.p.log.log_start_offset
    assert start > 4
    f.p.truncate_to(start)  # the newest checkpoint at or below it is older than the log start
    assert f.p.log.log_end_offset == start and f.p.producers.to_snapshot() == _rebuilt_from_disk(f.p)
    f.p.close(delete=True)
