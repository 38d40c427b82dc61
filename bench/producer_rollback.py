"""``python -m bench.producer_rollback [--batches N] [--producers P] [--drop D]``: how long a follower's
``Partition.truncate_to`` takes to roll producer state back (the fail-over stall the chaos verifier found).

Runs in this process, on a temporary directory: builds one partition's log of ``N`` small idempotent batches from
``P`` producers (one young segment, no snapshot past offset 0, as after a shard restart), makes the replica a
follower and times ``truncate_to(end - D)`` a few times (each truncation drops ``D`` offsets; the dropped batches are
appended again between runs). Prints the median and the worst, in milliseconds, of the whole call and of its
producer-state part (the whole less the log's own truncation: cutting the file and re-indexing the segment).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from controller.image import PartitionImage
from rafka_shards.config import Durability
from rafka_shards.model import TopicPartition
from rafka_shards.records.batch import BatchHeader, assign_offsets, validate_batches
from rafka_shards.records.builder import Record, build_batch
from rafka_shards.shard.partition import Partition
from rafka_shards.shard.probe import PartitionProbe
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import PartitionLog

BATCH_BYTES_MAX = 10**6


class _TimedLog(PartitionLog):
    """A partition log that adds up the time its truncations take."""

    truncate_s = 0.0

    def truncate_to(self, offset: int) -> None:
        t0 = time.perf_counter()
        super().truncate_to(offset)
        self.truncate_s += time.perf_counter() - t0


def _chunk(batches: list[tuple[int, int]], base_offset: int) -> tuple[bytearray, list[BatchHeader]]:
    """(producer id, base sequence) batches of one record each, at consecutive offsets from ``base_offset``."""
    buf = bytearray()
    for pid, seq in batches:
        buf += build_batch([Record(None, b"v", 0)], producer_id=pid, producer_epoch=0, base_sequence=seq)
    assign_offsets(buf, validate_batches(buf, max_batch_bytes=BATCH_BYTES_MAX), base_offset, 0, None)
    return buf, validate_batches(buf, max_batch_bytes=BATCH_BYTES_MAX)


def measure(directory: Path, batches: int, producers: int, drop: int, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds of each ``truncate_to``, whole and producer-state part."""
    tp = TopicPartition("t", 0)
    log_ = _TimedLog.open(directory, LogConfig(), 0)
    assert isinstance(log_, _TimedLog)
    p = Partition(tp, uuid.UUID(int=1), directory, log_, 0, Durability.FLUSH, 10_000, PartitionProbe(tp))
    p.assign(1, PartitionImage(0, (0, 1), (0, 1), 0, 0, 0), now_ms=0)  # broker 1 follows broker 0
    seqs = [0] * producers
    plan = []
    for i in range(batches):
        pid = i % producers
        plan.append((pid, seqs[pid]))
        seqs[pid] += 1
    for start in range(0, batches, 500):  # fetched chunks of 500 batches
        p.append_replica(*_chunk(plan[start : start + 500], start), now_ms=0)
    times, producer_times = [], []
    for _ in range(runs):
        end = p.log.log_end_offset
        log_.truncate_s = 0.0
        t0 = time.perf_counter()
        p.truncate_to(end - drop)
        elapsed = time.perf_counter() - t0
        times.append(elapsed * 1000)
        producer_times.append((elapsed - log_.truncate_s) * 1000)
        p.append_replica(*_chunk(plan[end - drop : end], end - drop), now_ms=0)
    p.close(delete=True)
    return times, producer_times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_rollback", description=__doc__)
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--drop", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("rafka_shards.shard.partition").setLevel(logging.ERROR)  # one warning per truncation
    with tempfile.TemporaryDirectory(prefix="rafka-rollback-") as tmp:
        times, producer_times = measure(Path(tmp), args.batches, args.producers, args.drop, args.runs)
    print(f"truncate_to(end - {args.drop}), {args.batches} batches from {args.producers} producers, {args.runs} runs:")
    for what, ms in (("whole call", times), ("producer state", producer_times)):
        print(f"  {what}: median {statistics.median(ms):.2f} ms, worst {max(ms):.2f} ms")


if __name__ == "__main__":
    main()
