"""The chaos verifier's pure parts: the history checker finds each kind of anomaly in a hand-built history and
passes a clean one; the fault schedule is a function of its seed."""

from __future__ import annotations

import pytest

from bench.chaos.checker import (
    Ack,
    BatchSummary,
    Entry,
    FaultRecord,
    FinalPartition,
    Findings,
    HwSeen,
    ProduceError,
    Seen,
    check,
)
from bench.chaos.cli import UsageError, parse_seeds
from bench.chaos.clients import decode, encode
from bench.chaos.schedule import PROCESS_FAULTS, TAIL_S, WARMUP_S, FaultKind, generate, parse_kinds


def _ack(producer: str, seq: int, partition: int, offset: int, sent_s: float = 0.0, acked_s: float = 0.01) -> Ack:
    return Ack(producer, seq, partition, offset, sent_s, acked_s)


def _log(*records: tuple[str, int]) -> FinalPartition:
    return FinalPartition(len(records), 0, {o: Entry(p, s) for o, (p, s) in enumerate(records)})


def _clean() -> tuple[list[Ack], dict[int, FinalPartition]]:
    """Two producers, two partitions, every record acknowledged where it is."""
    final = {
        0: _log(("0.0", 0), ("1.0", 1), ("0.0", 2), ("1.0", 3)),
        1: _log(("1.0", 0), ("0.0", 1), ("1.0", 2)),
    }
    acks = [_ack(e.producer, e.seq, p, o) for p, fp in final.items() for o, e in fp.entries.items()]
    return acks, final


def _run(
    acks: list[Ack],
    final: dict[int, FinalPartition],
    seen: list[Seen] | None = None,
    hws: list[HwSeen] | None = None,
    replicas: dict[int, dict[str, list[BatchSummary]]] | None = None,
    errors: list[ProduceError] | None = None,
) -> Findings:
    return check(acks, errors or [], seen or [], hws or [], final, replicas or {}, [])


def _counts(f: Findings) -> dict[str, int]:
    names = ("lost", "misplaced", "duplicated", "reordered", "hw_regressions", "replica_diffs", "final_unread")
    return {n: getattr(f, n) for n in names if getattr(f, n)}


def test_a_clean_history_passes() -> None:
    acks, final = _clean()
    seen = [Seen(p, o, e.producer, e.seq, 1.0) for p, fp in final.items() for o, e in fp.entries.items()]
    hws = [HwSeen(0, 2, 1.0), HwSeen(0, 4, 2.0), HwSeen(1, 3, 2.0)]
    batches = [BatchSummary(0, 1, 111), BatchSummary(2, 3, 222)]
    f = _run(acks, final, seen, hws, {0: {"node1": batches, "node2": list(batches), "node3": list(batches)}})
    assert f.passed and _counts(f) == {}, f.examples
    assert f.acked == 7 and f.final_records == 7


def test_a_lost_record_is_found() -> None:
    acks, final = _clean()
    acks.append(_ack("0.0", 9, 1, 3))  # acknowledged at p1@3, beyond the final high watermark, and nowhere else
    f = _run(acks, final)
    assert f.lost == 1 and not f.passed
    assert "0.0#9 acknowledged at p1@3 is not in the log" in f.examples["lost"]


def test_a_misplaced_record_is_found_when_the_offset_holds_another() -> None:
    """Issue 13's first finding: the acknowledged offset holds another producer's record with the same seq."""
    acks, final = _clean()
    final[0] = _log(("0.0", 0), ("1.0", 1), ("0.0", 2), ("1.0", 3), ("1.0", 5))
    acks.append(_ack("1.0", 5, 0, 4))
    acks.append(_ack("0.0", 5, 0, 4))  # says p0@4 too: that offset holds 1.0#5, and 0.0#5 is nowhere
    f = _run(acks, final)
    assert f.misplaced == 1 and f.lost == 1
    assert f.examples["misplaced"] == ["0.0#5 acknowledged at p0@4, which holds 1.0#5"]


def test_a_misplaced_record_is_found_when_it_sits_at_another_offset() -> None:
    acks, final = _clean()
    acks[0] = _ack("0.0", 0, 0, 2)  # the record is at p0@0; its acknowledgement said p0@2
    f = _run(acks, final)
    assert _counts(f) == {"misplaced": 1}


def test_a_duplicate_is_found() -> None:
    acks, final = _clean()
    final[1] = _log(("1.0", 0), ("0.0", 1), ("1.0", 2), ("1.0", 2))
    f = _run(acks, final)
    assert _counts(f) == {"duplicated": 1}
    assert f.examples["duplicated"] == ["1.0#2 at p1@2, p1@3"]


def test_a_reorder_within_one_producer_and_partition_is_found() -> None:
    acks, final = _clean()
    final[0] = _log(("0.0", 2), ("1.0", 1), ("0.0", 0), ("1.0", 3))  # 0.0's seq 2 before its seq 0 in p0
    acks = [_ack(e.producer, e.seq, 0, o) for o, e in final[0].entries.items()] + [
        _ack(e.producer, e.seq, 1, o) for o, e in final[1].entries.items()
    ]
    f = _run(acks, final)
    assert _counts(f) == {"reordered": 1}
    assert f.examples["reordered"] == ["0.0#0 at p0@2 after 0.0#2 at p0@0"]


def test_different_producers_interleaving_is_not_a_reorder() -> None:
    acks, final = _clean()
    final[0] = _log(("1.0", 5), ("0.0", 11), ("1.0", 6), ("0.0", 12))
    acks = [_ack(e.producer, e.seq, 0, o) for o, e in final[0].entries.items()]
    assert _counts(_run(acks, final)) == {}


def test_a_record_read_that_later_vanished_is_a_high_watermark_regression() -> None:
    acks, final = _clean()
    seen = [Seen(1, 3, "0.0", 7, 1.0), Seen(1, 3, "0.0", 7, 1.5)]  # read twice: reported once
    seen.append(Seen(0, 1, "0.0", 8, 2.0))  # p0@1 now holds 1.0#1
    f = _run(acks, final, seen)
    assert _counts(f) == {"hw_regressions": 2}


def test_a_high_watermark_above_the_final_one_is_a_regression() -> None:
    acks, final = _clean()
    f = _run(acks, final, hws=[HwSeen(1, 3, 1.0), HwSeen(1, 5, 2.0), HwSeen(1, 3, 3.0)])
    assert _counts(f) == {"hw_regressions": 1}
    assert "high watermark 5 on p1" in f.examples["hw_regressions"][0]


def test_replicas_differing_below_the_high_watermark_are_found() -> None:
    acks, final = _clean()
    good = [BatchSummary(0, 1, 111), BatchSummary(2, 3, 222)]
    other_crc = [BatchSummary(0, 1, 111), BatchSummary(2, 3, 999)]
    short = [BatchSummary(0, 1, 111)]
    beyond = [*good, BatchSummary(4, 6, 333)]  # past the high watermark (4): not compared
    f = _run(acks, final, replicas={0: {"node1": good, "node2": other_crc, "node3": beyond}, 1: {"node1": short}})
    assert _counts(f) == {"replica_diffs": 2}
    assert f.examples["replica_diffs"][0].startswith("p0: node2 differs from node1 at offset 2")
    assert f.examples["replica_diffs"][1] == "p1: node1 ends at offset 2, below the high watermark 3"


def test_an_incomplete_final_read_fails_the_check() -> None:
    acks, final = _clean()
    final[1] = FinalPartition(3, 0, {0: Entry("1.0", 0), 2: Entry("1.0", 2)})
    f = _run(acks, final)
    assert f.final_unread == 1 and not f.passed


def test_fatal_errors_are_counted_per_producer_instance() -> None:
    acks, final = _clean()
    errors = [
        ProduceError("0.0", 10, 0, "OUT_OF_ORDER_SEQUENCE_NUMBER", True, 1.0),
        ProduceError("0.0", 11, 0, "OUT_OF_ORDER_SEQUENCE_NUMBER", True, 1.0),
        ProduceError("0.0", -1, -1, "OUT_OF_ORDER_SEQUENCE_NUMBER", True, 1.0),
        ProduceError("1.0", 12, 1, "_MSG_TIMED_OUT", False, 1.0),
    ]
    f = _run(acks, final, errors=errors)
    assert f.fatal_errors == 1 and f.errors == 4
    assert f.error_kinds == {"OUT_OF_ORDER_SEQUENCE_NUMBER": 3, "_MSG_TIMED_OUT": 1}


def test_unavailability_is_the_time_until_every_partition_acknowledged_a_message_sent_after_the_fault() -> None:
    acks = [
        _ack("0.0", 0, 0, 0, sent_s=9.0, acked_s=9.01),  # before the fault
        _ack("0.0", 1, 0, 1, sent_s=10.1, acked_s=10.2),  # p0 works 0.2 s after
        _ack("0.0", 2, 1, 0, sent_s=10.1, acked_s=13.5),  # p1 only 3.5 s after
        _ack("0.0", 3, 1, 1, sent_s=12.0, acked_s=13.6),
    ]
    final = {0: _log(("0.0", 0), ("0.0", 1)), 1: _log(("0.0", 2), ("0.0", 3))}
    faults = [
        FaultRecord(0, "kill-node", "node 1", 10.0, 11.0, 20.0),
        FaultRecord(1, "pause-node", "node 2", 20.0, 25.0, 30.0),
    ]
    f = check(acks, [], [], [], final, {}, faults)
    first, second = f.unavailability
    assert (first.seconds, first.recovered) == (3.5, True)
    assert (second.seconds, second.recovered) == (10.0, False)  # nothing acknowledged after it: censored
    assert f.unavailability_by_kind()["kill-node"] == {"faults": 1, "median_s": 3.5, "max_s": 3.5, "not_recovered": 0}


def test_values_round_trip() -> None:
    assert decode(encode("2.1", 345, 100)) == Entry("2.1", 345)
    assert len(encode("2.1", 345, 100)) == 100
    assert decode(b"not ours") == Entry("", -1)
    assert decode(None) == Entry("", -1)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    a = generate(7, 120.0, PROCESS_FAULTS, nodes=3, partitions=4)
    b = generate(7, 120.0, PROCESS_FAULTS, nodes=3, partitions=4)
    c = generate(8, 120.0, PROCESS_FAULTS, nodes=3, partitions=4)
    assert a == b and a.faults != c.faults
    assert len(a.faults) >= 5
    assert all(1 <= f.node <= 3 and 0 <= f.partition < 4 for f in a.faults)
    assert a.faults[0].planned_at_s == WARMUP_S
    last = a.faults[-1]
    assert last.planned_at_s + last.hold_s <= 120.0 - TAIL_S
    assert {f.kind for f in generate(1, 600.0, PROCESS_FAULTS, 3, 4).faults} == set(PROCESS_FAULTS)


def test_fault_kinds_parse_and_unknown_ones_are_refused() -> None:
    assert parse_kinds("kill-node, pause-node") == (FaultKind.KILL_NODE, FaultKind.PAUSE_NODE)
    assert parse_kinds("process") == PROCESS_FAULTS
    assert parse_kinds("all") == tuple(FaultKind)
    with pytest.raises(ValueError, match="kill-everything"):
        parse_kinds("kill-node,kill-everything")


def test_seed_lists_and_ranges_parse() -> None:
    assert parse_seeds(7, "") == [7]
    assert parse_seeds(7, "1-3,9") == [1, 2, 3, 9]
    for bad in ("3-x", "a", "5-1"):
        with pytest.raises(UsageError):
            parse_seeds(1, bad)
