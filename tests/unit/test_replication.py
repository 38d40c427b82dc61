"""Partition replication rules on real logs with a fake clock: the leader's high watermark and ISR decisions, a
follower's copy and truncation (KIP-101), and the acks=all wait."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from controller.image import PartitionImage
from rafka_shards.config import Durability
from rafka_shards.model import ErrorCode, KafkaError, TopicPartition
from rafka_shards.records.batch import validate_batches
from rafka_shards.records.builder import Record, build_batch
from rafka_shards.shard.follower import truncation_offset as _truncation_offset
from rafka_shards.shard.partition import Partition
from rafka_shards.shard.probe import PartitionProbe
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import PartitionLog

TP = TopicPartition("t", 0)
LAG_MAX_MS = 10_000


def _partition(directory: Path, durability: Durability = Durability.FLUSH) -> Partition:
    directory.mkdir(parents=True, exist_ok=True)
    log = PartitionLog.open(directory, LogConfig(), 0)
    return Partition(TP, uuid.uuid4(), directory, log, 0, durability, 100, PartitionProbe(TP))


def _image(leader: int, isr: tuple[int, ...], epoch: int = 0, partition_epoch: int = 0) -> PartitionImage:
    return PartitionImage(0, (0, 1, 2), isr, leader, epoch, partition_epoch)


def _batch(values: list[bytes]) -> tuple[bytearray, list]:  # type: ignore[type-arg]
    buf = bytearray(build_batch([Record(None, v, 1000) for v in values]))
    return buf, validate_batches(buf, max_batch_bytes=10**7)


def _copy(leader: Partition, follower: Partition) -> None:
    """What a follower's fetch does: everything from its log end, with the leader's offsets and epochs."""
    start = follower.log.log_end_offset
    r = leader.log.read(start, 10**7, leader.log.log_end_offset, min_one_batch=True)
    if r.data:
        buf = bytearray(r.data)
        follower.append_replica(buf, validate_batches(buf, max_batch_bytes=10**7), 0)


def test_the_high_watermark_is_the_smallest_offset_every_in_sync_replica_has(tmp_path: Path) -> None:
    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1, 2)), now_ms=0)
        info = p.append(*_batch([b"a", b"b", b"c"]), now_ms=0)
        acked = p.wait_high_watermark(info.last_offset)
        assert p.high_watermark == 0  # the followers have not fetched yet
        p.record_follower_fetch(1, 3, now_ms=10)
        assert p.high_watermark == 0 and not acked.done()
        p.record_follower_fetch(2, 2, now_ms=10)
        assert p.high_watermark == 2
        await asyncio.sleep(0)
        assert not acked.done()
        p.record_follower_fetch(2, 3, now_ms=20)
        await asyncio.sleep(0)
        assert p.high_watermark == 3 and acked.done() and acked.exception() is None
        with pytest.raises(KafkaError) as e:
            p.record_follower_fetch(1, 9, now_ms=30)  # ahead of the leader: it must truncate first
        assert e.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
        with pytest.raises(KafkaError):
            p.record_follower_fetch(7, 0, now_ms=30)  # not a replica

    asyncio.run(run())


def test_under_fsync_the_leaders_own_unsynced_data_holds_the_high_watermark_back(tmp_path: Path) -> None:
    async def run() -> None:
        p = _partition(tmp_path / "leader", Durability.FSYNC)
        p.assign(0, _image(0, (0, 1)), now_ms=0)
        p.append(*_batch([b"a", b"b"]), now_ms=0)
        p.record_follower_fetch(1, 2, now_ms=5)
        assert p.high_watermark == 0
        p.log.flush_now()
        p.on_flushed()
        assert p.high_watermark == 2

    asyncio.run(run())


def test_a_follower_that_stops_catching_up_leaves_the_isr_and_rejoins_at_the_high_watermark(tmp_path: Path) -> None:
    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1, 2)), now_ms=0)
        p.append(*_batch([b"a"]), now_ms=0)
        p.record_follower_fetch(1, 1, now_ms=100)
        p.record_follower_fetch(2, 0, now_ms=100)  # behind, and never fetches again
        assert p.wanted_isr(LAG_MAX_MS, LAG_MAX_MS) is None  # a whole lag window since the leader took over
        for now in range(1000, 12_000, 1000):
            p.record_follower_fetch(1, 1, now_ms=now)
        assert p.wanted_isr(10_001, LAG_MAX_MS) == (0, 1)
        p.assign(0, _image(0, (0, 1), partition_epoch=1), now_ms=10_001)  # the controller applied it
        assert p.high_watermark == 1  # no longer held back by broker 2
        p.append(*_batch([b"b"]), now_ms=0)
        p.record_follower_fetch(2, 1, now_ms=10_100)  # back, below the high watermark (2 after broker 1 fetches)
        p.record_follower_fetch(1, 2, now_ms=10_100)
        assert p.high_watermark == 2 and p.wanted_isr(10_100, LAG_MAX_MS) is None
        p.record_follower_fetch(2, 2, now_ms=10_200)
        assert p.wanted_isr(10_200, LAG_MAX_MS) == (0, 1, 2)
        p.isr_change_pending = True
        assert p.wanted_isr(10_200, LAG_MAX_MS) is None  # one change in flight at a time

    asyncio.run(run())


def test_a_caught_up_follower_stays_in_sync_while_the_leader_keeps_writing(tmp_path: Path) -> None:
    """Kafka's rule: reaching what the log end was at the previous fetch counts as caught up as of that fetch."""

    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1)), now_ms=0)
        end = 0
        for now in range(0, 30_000, 500):
            p.record_follower_fetch(1, end, now_ms=now)  # always one batch behind the log end
            end = p.append(*_batch([b"x"]), now_ms=now).last_offset + 1
            assert p.wanted_isr(now, LAG_MAX_MS) is None, now

    asyncio.run(run())


def test_losing_leadership_fails_the_acks_still_waiting(tmp_path: Path) -> None:
    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1)), now_ms=0)
        acked = p.wait_high_watermark(p.append(*_batch([b"a"]), now_ms=0).last_offset)
        p.assign(0, _image(1, (1,), epoch=1, partition_epoch=1), now_ms=5)
        await asyncio.sleep(0)
        assert isinstance(acked.exception(), KafkaError) and p.needs_truncation and not p.is_leader
        with pytest.raises(KafkaError):
            p.append(*_batch([b"b"]), now_ms=0)

    asyncio.run(run())


def test_a_follower_copies_the_leaders_batches_and_truncates_what_diverged(tmp_path: Path) -> None:
    async def run() -> None:
        old = _partition(tmp_path / "old")  # led epoch 0, wrote two batches nobody else has
        old.assign(0, _image(0, (0, 1)), now_ms=0)
        new = _partition(tmp_path / "new")
        new.assign(1, _image(0, (0, 1)), now_ms=0)
        old.append(*_batch([b"a", b"b"]), now_ms=0)
        _copy(old, new)
        old.append(*_batch([b"lost-1"]), now_ms=0)
        old.append(*_batch([b"lost-2"]), now_ms=0)
        assert (old.log.log_end_offset, new.log.log_end_offset) == (4, 2)
        # Epoch 1: the follower leads and writes; the old leader follows and must drop offsets 2..3.
        new.assign(1, _image(1, (1, 0), epoch=1, partition_epoch=1), now_ms=0)
        old.assign(0, _image(1, (1, 0), epoch=1, partition_epoch=1), now_ms=0)
        new.append(*_batch([b"c"]), now_ms=0)
        epoch, end = new.log.end_offset_for_epoch(old.log.last_epoch)
        assert (epoch, end) == (0, 2)
        old.truncate_to(_truncation_offset(old, 0, epoch, end))
        assert old.log.log_end_offset == 2 and not old.needs_truncation
        _copy(new, old)
        assert old.log.log_end_offset == 3 and old.log.last_epoch == 1
        read = bytes(old.log.read(0, 10**6, 3, min_one_batch=True).data)
        assert b"lost" not in read and b"c" in read
        with pytest.raises(KafkaError):  # a gap is refused, never written
            buf, headers = _batch([b"z"])
            old.append_replica(buf, headers, 0)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("asked", "leader_epoch", "leader_end", "expected"),
    [
        (3, 3, 8, 8),  # the leader knows our epoch: keep up to where it ends there
        (3, 3, 20, 10),  # ... never beyond our own end
        (3, 1, 4, 4),  # it knows only epoch 1, which ends at 4 there and at 5 here
        (3, 1, 6, 5),  # ... and at 6 there: keep up to 5 (where epoch 1 ends here)
        (3, -1, -1, 0),  # it knows none of our epochs: keep nothing
        (-1, -1, -1, 10),  # our log is empty of epochs: nothing to drop
    ],
)
def test_truncation_offset(tmp_path: Path, asked: int, leader_epoch: int, leader_end: int, expected: int) -> None:
    p = _partition(tmp_path / "p")
    p.assign(0, _image(0, (0,)), now_ms=0)
    for epoch, count in ((1, 5), (3, 5)):  # epoch 1 covers offsets 0..4, epoch 3 covers 5..9
        p.leader_epoch = epoch
        p.append(*_batch([b"x"] * count), now_ms=0)
    assert p.log.log_end_offset == 10
    assert _truncation_offset(p, asked, leader_epoch, leader_end) == expected


def test_a_reopened_replica_of_a_replicated_partition_does_not_trust_its_log_end(tmp_path: Path) -> None:
    """After a restart the log's end may hold records no other replica has: consumers must not see them until the
    followers have them too (a single replica's log end is its high watermark, as before)."""

    async def run() -> None:
        for replicas, expected in (((0, 1), 0), ((0,), 2)):
            directory = tmp_path / str(len(replicas))
            p = _partition(directory)
            p.assign(0, PartitionImage(0, replicas, replicas, 0, 0, 0), now_ms=0)
            p.append(*_batch([b"a", b"b"]), now_ms=0)
            p.log.close()
            reopened = _partition(directory)
            reopened.assign(0, PartitionImage(0, replicas, replicas, 0, 0, 0), now_ms=0)
            assert reopened.high_watermark == expected
            if len(replicas) > 1:
                reopened.record_follower_fetch(1, 2, now_ms=1)
                assert reopened.high_watermark == 2

    asyncio.run(run())


def test_a_follower_taken_out_of_the_isr_must_fetch_again_and_a_fenced_one_never_rejoins(tmp_path: Path) -> None:
    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1, 2)), now_ms=0)
        p.append(*_batch([b"a"]), now_ms=0)
        p.record_follower_fetch(1, 1, now_ms=10)
        p.record_follower_fetch(2, 1, now_ms=10)
        p.assign(0, _image(0, (0, 1), partition_epoch=1), now_ms=20)  # the controller fenced broker 2
        assert p.wanted_isr(30, LAG_MAX_MS) is None  # its fetch before the fencing does not count
        p.record_follower_fetch(2, 1, now_ms=40)
        assert p.wanted_isr(50, LAG_MAX_MS, ineligible=frozenset({2})) is None  # still fenced: KIP-841
        assert p.wanted_isr(50, LAG_MAX_MS) == (0, 1, 2)  # unfenced, caught up
        p.isr_retry_at_ms = 1000
        assert p.wanted_isr(60, LAG_MAX_MS) is None  # the last change was refused a moment ago

    asyncio.run(run())


def test_while_an_isr_expansion_is_in_flight_the_high_watermark_waits_for_the_joining_follower(tmp_path: Path) -> None:
    """Kafka's maximal ISR: once the leader asks to add a follower, records are acknowledged only when it has them
    too, since the controller may commit the change and later elect it."""

    async def run() -> None:
        p = _partition(tmp_path / "leader")
        p.assign(0, _image(0, (0, 1)), now_ms=0)
        p.append(*_batch([b"a"]), now_ms=0)
        p.record_follower_fetch(1, 1, now_ms=10)
        p.record_follower_fetch(2, 1, now_ms=10)
        assert p.high_watermark == 1
        wanted = p.wanted_isr(10, LAG_MAX_MS)
        assert wanted == (0, 1, 2)
        p.begin_isr_change(wanted)
        p.append(*_batch([b"b", b"c"]), now_ms=20)
        p.record_follower_fetch(1, 3, now_ms=30)
        assert p.high_watermark == 1  # broker 2 (joining) has not fetched past 1
        p.end_isr_change(wanted, refused=False, uncertain_until_ms=5_000)  # answer lost: may still commit
        p.record_follower_fetch(1, 3, now_ms=40)
        assert p.high_watermark == 1
        assert p.wanted_isr(5_000, LAG_MAX_MS) is None and p.high_watermark == 3  # it cannot commit unseen now
        p.begin_isr_change((0, 1, 2))
        p.append(*_batch([b"d"]), now_ms=5_000)
        p.record_follower_fetch(1, 4, now_ms=5_010)
        assert p.high_watermark == 3
        p.end_isr_change((0, 1, 2), refused=True)  # the controller said no: it never commits
        assert p.high_watermark == 4
        p.begin_isr_change((0, 1, 2))
        p.record_follower_fetch(2, 4, now_ms=5_020)
        p.assign(0, _image(0, (0, 1, 2), partition_epoch=1), now_ms=5_030)  # committed
        p.end_isr_change((0, 1, 2), refused=False)
        assert p.pending_isr is None and p.maximal_isr == (0, 1, 2)

    asyncio.run(run())


def _fetch_response(*parts: tuple[uuid.UUID, int, ErrorCode, int, int, bytes | None]) -> object:
    """A Fetch v15 response: per partition (topic id, index, error, high watermark, log start, records)."""
    from datetime import timedelta

    from kio.schema.errors import ErrorCode as KioErrorCode
    from kio.schema.fetch.v15 import response as r
    from kio.static.primitive import i32, i32Timedelta, i64

    return r.FetchResponse(
        throttle_time=i32Timedelta.parse(timedelta(0)),
        error_code=KioErrorCode.none,
        responses=tuple(
            r.FetchableTopicResponse(
                topic_id=topic_id,
                partitions=(
                    r.PartitionData(
                        partition_index=i32(index),
                        error_code=KioErrorCode(int(code)),
                        high_watermark=i64(hw),
                        log_start_offset=i64(start),
                        aborted_transactions=(),
                        records=records,
                    ),
                ),
            )
            for topic_id, index, code, hw, start, records in parts
        ),
    )


def test_a_fetch_response_is_applied_partition_by_partition(tmp_path: Path) -> None:
    """``follower.apply_fetch``, the fetcher's policy without its socket: good batches are appended with the
    leader's offsets and reported for fsync, a partition whose batches are corrupt is refetched without keeping the
    others from being written, a copy below the leader's log start starts over there, and one ahead of the leader is
    marked to find where they agree."""
    from rafka_shards.shard import follower as f

    good, corrupt, behind, ahead = (_partition(tmp_path / name) for name in ("good", "corrupt", "behind", "ahead"))
    tps = {p: TopicPartition(name, 0) for p, name in ((good, "g"), (corrupt, "c"), (behind, "b"), (ahead, "a"))}
    for p in tps:
        p.assign(1, _image(0, (0, 1)), now_ms=0)
    ahead.append_replica(*_batch([b"x", b"y"]), now_ms=0)
    followed = [(tp, p) for p, tp in tps.items()]
    replica = f.Replica(broker_id=1, broker_epoch=7, fetch_max_bytes=1 << 20, fetch_wait_max_ms=500)
    request, sent = f.fetch_request(replica, followed)
    assert int(request.replica_state.replica_epoch) == 7
    assert {tp: offset for tp, (_, _, offset) in sent.sent.items()} == {
        tps[good]: 0,
        tps[corrupt]: 0,
        tps[behind]: 0,
        tps[ahead]: 2,
    }
    records, _ = _batch([b"a", b"b", b"c"])
    broken = bytearray(records)
    broken[-1] ^= 0xFF  # the CRC no longer matches
    response = _fetch_response(
        (good.topic_id, 0, ErrorCode.NONE, 3, 0, bytes(records)),
        (corrupt.topic_id, 0, ErrorCode.NONE, 3, 0, bytes(broken)),
        (behind.topic_id, 0, ErrorCode.OFFSET_OUT_OF_RANGE, 50, 40, None),
        (ahead.topic_id, 0, ErrorCode.OFFSET_OUT_OF_RANGE, 1, 0, None),
    )
    out = f.Fetched()
    f.apply_fetch(response, sent, lambda tp, p, epoch: True, 0, out)  # type: ignore[arg-type]
    assert out.appended == [(good, 2)] and good.log.log_end_offset == 3
    assert out.errors == [(tps[corrupt], ErrorCode.CORRUPT_MESSAGE)] and corrupt.log.log_end_offset == 0
    assert behind.log.log_start_offset == behind.log.log_end_offset == 40
    assert ahead.needs_truncation and ahead.log.log_end_offset == 2
    assert out.retry
    moved_on = f.Fetched()
    f.apply_fetch(response, sent, lambda tp, p, epoch: False, 0, moved_on)  # type: ignore[arg-type]
    assert moved_on == f.Fetched()  # answers for partitions no longer followed at that epoch are dropped


def test_new_replicas_of_a_reassignment_copy_at_the_recovery_rate_and_in_sync_followers_are_not_throttled(
    tmp_path: Path,
) -> None:
    """``follower.RecoveryThrottle`` (a token bucket with a one-second burst, driven by a fake clock) and how the
    fetcher splits what it follows: only partitions this broker is being added to are capped."""
    from dataclasses import replace

    from rafka_shards.shard import follower as f

    throttle = f.RecoveryThrottle(1000, now_ms=0)
    assert throttle.available(0) == 1000 and throttle.wait_ms(0) == 0
    throttle.charge(1500, now_ms=0)  # one fetch may overdraw by a batch
    assert throttle.available(0) == 0 and throttle.wait_ms(0) == 501  # paid back at 1 byte/ms first
    assert throttle.available(400) == 0 and throttle.available(600) == 100
    assert throttle.available(10_000) == 1000  # the burst is capped at one second of rate

    moving, settled = _partition(tmp_path / "moving"), _partition(tmp_path / "settled")
    moving.assign(1, replace(_image(0, (0,)), replicas=(0, 1), adding=(1,)), now_ms=0)
    settled.assign(1, _image(0, (0, 1)), now_ms=0)
    followed = [(TopicPartition("m", 0), moving), (TopicPartition("s", 0), settled)]
    in_sync, recovering = f.split_recovering(1, followed)
    assert in_sync == followed[1:] and recovering == followed[:1]
    replica = f.Replica(broker_id=1, broker_epoch=7, fetch_max_bytes=1 << 20, fetch_wait_max_ms=500)
    request, _ = f.fetch_request(replica, followed, {TopicPartition("m", 0): 4096})
    caps = {int(p.partition): int(p.partition_max_bytes) for t in request.topics for p in t.partitions}
    by_topic = {t.topic_id: int(t.partitions[0].partition_max_bytes) for t in request.topics}
    assert by_topic == {moving.topic_id: 4096, settled.topic_id: 1 << 20}, caps
