"""The history checker of a chaos run (sans-IO: it takes parsed histories and returns findings; no files, no clock).

Runs in the bench's orchestrating process after the run. Inputs: every acknowledgement and error of the producers,
what the consumers read while the faults ran (records and the high watermarks they were shown), the final log of
every partition read to its high watermark after healing, each replica's batches as read from its segment files,
and the faults with their injection times. Checks, in Jepsen's terms for a Kafka-like log:

- **lost**: an acknowledged (producer, seq) is nowhere in the final log;
- **misplaced**: the offset an acknowledgement named holds another record (or none);
- **duplicated**: one (producer, seq) at two offsets (idempotence should make that impossible);
- **reordered**: one producer's records in one partition out of sequence order;
- **hw_regressions**: a consumer read a record at an offset that later holds another or none, or was shown a high
  watermark above the final one (data below an exposed high watermark must never vanish);
- **replica_diffs**: replicas whose batches (base offset, last offset, CRC) differ below the final high watermark;
- **unavailability per fault**: from the injection until produce worked again on every partition, i.e. until, on
  each partition, some message sent after the injection was acknowledged.

Examples of each finding are kept up to ``EXAMPLES_MAX`` so that a broken run's report stays readable.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EXAMPLES_MAX = 20


@dataclass(frozen=True, slots=True)
class Ack:
    producer: str  # "<index>.<incarnation>": a producer process's producer instance
    seq: int
    partition: int
    offset: int
    sent_s: float  # CLOCK_MONOTONIC (one machine: every process shares it)
    acked_s: float


@dataclass(frozen=True, slots=True)
class ProduceError:
    producer: str
    seq: int
    partition: int
    error: str
    fatal: bool
    at_s: float


@dataclass(frozen=True, slots=True)
class Seen:
    """A record a consumer read during the run."""

    partition: int
    offset: int
    producer: str
    seq: int
    at_s: float


@dataclass(frozen=True, slots=True)
class HwSeen:
    """A high watermark a consumer was shown (in a fetch response) during the run."""

    partition: int
    high_watermark: int
    at_s: float


@dataclass(frozen=True, slots=True)
class Entry:
    """What the final log holds at one offset; producer "" for a record that is not the workload's."""

    producer: str
    seq: int


@dataclass(frozen=True, slots=True)
class FinalPartition:
    high_watermark: int
    log_start_offset: int
    entries: Mapping[int, Entry]  # offset -> record, every offset in [log_start_offset, high_watermark) if complete


@dataclass(frozen=True, slots=True)
class BatchSummary:
    base_offset: int
    last_offset: int
    crc: int


@dataclass(frozen=True, slots=True)
class FaultRecord:
    index: int
    kind: str
    target: str  # what it hit, in words (node 2, shard broker 201, ...)
    injected_s: float
    healed_s: float
    next_s: float  # when the next fault was injected (or the load ended): unavailability is censored there


@dataclass(frozen=True, slots=True)
class Unavailability:
    index: int
    kind: str
    target: str
    seconds: float  # censored at next_s - injected_s when produce did not work again before then
    recovered: bool


@dataclass
class Findings:
    acked: int = 0
    errors: int = 0
    fatal_errors: int = 0  # producer instances ended by a fatal error (the client cannot go on)
    error_kinds: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    misplaced: int = 0
    duplicated: int = 0
    reordered: int = 0
    hw_regressions: int = 0
    replica_diffs: int = 0
    final_unread: int = 0  # offsets below a high watermark the final read did not get: the check is incomplete
    final_records: int = 0
    unavailability: list[Unavailability] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, check: str, text: str) -> None:
        keep_example(self.examples, check, text)

    @property
    def passed(self) -> bool:
        return not (
            self.lost
            or self.misplaced
            or self.duplicated
            or self.reordered
            or self.hw_regressions
            or self.replica_diffs
            or self.final_unread
        )

    def unavailability_by_kind(self) -> dict[str, dict[str, Any]]:
        """Per fault kind: count, median and max seconds, and how many did not recover before the next fault."""
        by: dict[str, list[Unavailability]] = {}
        for u in self.unavailability:
            by.setdefault(u.kind, []).append(u)
        return {
            kind: {
                "faults": len(us),
                "median_s": round(statistics.median(u.seconds for u in us), 2),
                "max_s": round(max(u.seconds for u in us), 2),
                "not_recovered": sum(not u.recovered for u in us),
            }
            for kind, us in sorted(by.items())
        }


def keep_example(examples: dict[str, list[str]], check: str, text: str) -> None:
    """Up to ``EXAMPLES_MAX`` examples per check, so that a broken run's report stays readable."""
    kept = examples.setdefault(check, [])
    if len(kept) < EXAMPLES_MAX:
        kept.append(text)


def _where(partition: int, offset: int) -> str:
    return f"p{partition}@{offset}"


def _show(entry: Entry | None) -> str:
    return "nothing" if entry is None else f"{entry.producer}#{entry.seq}"


def check(
    acks: Sequence[Ack],
    errors: Sequence[ProduceError],
    seen: Iterable[Seen],
    hw_seen: Iterable[HwSeen],
    final: Mapping[int, FinalPartition],
    replicas: Mapping[int, Mapping[str, Sequence[BatchSummary]]],
    faults: Sequence[FaultRecord],
) -> Findings:
    f = Findings(acked=len(acks), errors=len(errors))
    for e in errors:
        f.error_kinds[e.error] = f.error_kinds.get(e.error, 0) + 1
    fatal = {e.producer: e for e in errors if e.fatal}
    f.fatal_errors = len(fatal)
    for e in fatal.values():
        f.example("fatal_errors", f"producer {e.producer} ended by {e.error}")
    # Where each (producer, seq) is in the final log, in log order per partition.
    located: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for partition, fp in sorted(final.items()):
        for offset in range(fp.log_start_offset, fp.high_watermark):
            entry = fp.entries.get(offset)
            if entry is None:
                f.final_unread += 1
                f.example("final_unread", f"{_where(partition, offset)} below the high watermark was not read")
                continue
            f.final_records += 1
            if entry.producer:
                located.setdefault((entry.producer, entry.seq), []).append((partition, offset))
    _check_acks(f, acks, final, located)
    _check_duplicates(f, located)
    _check_order(f, final)
    _check_reads(f, seen, hw_seen, final)
    _check_replicas(f, replicas, final)
    f.unavailability = unavailability(acks, faults, set(final))
    return f


def _check_acks(
    f: Findings,
    acks: Sequence[Ack],
    final: Mapping[int, FinalPartition],
    located: Mapping[tuple[str, int], list[tuple[int, int]]],
) -> None:
    for a in acks:
        fp = final.get(a.partition)
        held = fp.entries.get(a.offset) if fp is not None and a.offset < fp.high_watermark else None
        where = located.get((a.producer, a.seq))
        name = f"{a.producer}#{a.seq}"
        if held is None or (held.producer, held.seq) != (a.producer, a.seq):
            f.misplaced += 1
            f.example("misplaced", f"{name} acknowledged at {_where(a.partition, a.offset)}, which holds {_show(held)}")
        if not where:
            f.lost += 1
            f.example("lost", f"{name} acknowledged at {_where(a.partition, a.offset)} is not in the log")


def _check_duplicates(f: Findings, located: Mapping[tuple[str, int], list[tuple[int, int]]]) -> None:
    for (producer, seq), places in located.items():
        if len(places) > 1:
            f.duplicated += len(places) - 1
            f.example("duplicated", f"{producer}#{seq} at {', '.join(_where(p, o) for p, o in places)}")


def _check_order(f: Findings, final: Mapping[int, FinalPartition]) -> None:
    for partition, fp in sorted(final.items()):
        last: dict[str, tuple[int, int]] = {}  # producer -> (seq, offset) of its latest record so far
        for offset in sorted(fp.entries):
            entry = fp.entries[offset]
            if not entry.producer:
                continue
            before = last.get(entry.producer)
            if before is not None and entry.seq < before[0]:
                f.reordered += 1
                f.example(
                    "reordered",
                    f"{entry.producer}#{entry.seq} at {_where(partition, offset)} after "
                    f"{entry.producer}#{before[0]} at {_where(partition, before[1])}",
                )
            if before is None or entry.seq > before[0]:
                last[entry.producer] = (entry.seq, offset)


def _check_reads(
    f: Findings, seen: Iterable[Seen], hw_seen: Iterable[HwSeen], final: Mapping[int, FinalPartition]
) -> None:
    reported: set[tuple[int, int]] = set()  # one finding per offset, however often consumers re-read it
    for s in seen:
        fp = final.get(s.partition)
        held = fp.entries.get(s.offset) if fp is not None and s.offset < fp.high_watermark else None
        if (held is None or (held.producer, held.seq) != (s.producer, s.seq)) and (s.partition, s.offset) not in (
            reported
        ):
            reported.add((s.partition, s.offset))
            f.hw_regressions += 1
            f.example(
                "hw_regressions",
                f"a consumer read {s.producer}#{s.seq} at {_where(s.partition, s.offset)}; it now holds {_show(held)}",
            )
    highest: dict[int, HwSeen] = {}
    for h in hw_seen:
        if h.partition not in highest or h.high_watermark > highest[h.partition].high_watermark:
            highest[h.partition] = h
    for partition, h in sorted(highest.items()):
        fp = final.get(partition)
        end = fp.high_watermark if fp is not None else 0
        if h.high_watermark > end:
            f.hw_regressions += 1
            f.example(
                "hw_regressions",
                f"a consumer was shown high watermark {h.high_watermark} on p{partition}; the final one is {end}",
            )


def _check_replicas(
    f: Findings, replicas: Mapping[int, Mapping[str, Sequence[BatchSummary]]], final: Mapping[int, FinalPartition]
) -> None:
    """Every replica must hold the same batches below the final high watermark, and reach it."""
    for partition, by_replica in sorted(replicas.items()):
        fp = final.get(partition)
        if fp is None or not by_replica:
            continue
        hw = fp.high_watermark
        cut = {name: [b for b in batches if b.base_offset < hw] for name, batches in sorted(by_replica.items())}
        reference_name, reference = next(iter(cut.items()))
        for name, batches in cut.items():
            end = batches[-1].last_offset + 1 if batches else 0
            if end < hw:
                f.replica_diffs += 1
                f.example("replica_diffs", f"p{partition}: {name} ends at offset {end}, below the high watermark {hw}")
            elif name != reference_name and batches != reference:
                f.replica_diffs += 1
                f.example(
                    "replica_diffs",
                    f"p{partition}: {name} differs from {reference_name} {_first_difference(reference, batches)}",
                )


def _first_difference(a: Sequence[BatchSummary], b: Sequence[BatchSummary]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"at offset {min(x.base_offset, y.base_offset)}: {x} against {y}"
    return f"in length: {len(a)} batches against {len(b)}"


def unavailability(acks: Sequence[Ack], faults: Sequence[FaultRecord], partitions: set[int]) -> list[Unavailability]:
    """Per fault: seconds from its injection until every partition acknowledged a message sent after it."""
    by_partition: dict[int, list[Ack]] = {}
    for a in acks:
        by_partition.setdefault(a.partition, []).append(a)
    for values in by_partition.values():
        values.sort(key=lambda a: a.sent_s)
    out: list[Unavailability] = []
    for fault in faults:
        worst = 0.0
        recovered = True
        for partition in sorted(partitions):
            first = min(
                (a.acked_s for a in by_partition.get(partition, ()) if fault.injected_s <= a.sent_s),
                default=None,
            )
            if first is None or first > fault.next_s:
                recovered = False
                worst = max(worst, fault.next_s - fault.injected_s)
            else:
                worst = max(worst, first - fault.injected_s)
        out.append(Unavailability(fault.index, fault.kind, fault.target, round(worst, 3), recovered))
    return out
