"""The ``compaction`` workload kind (issue 15): how fast rafka_shards' log cleaner goes, how much it saves, and what
it costs the producers while it works.

One step, rafka_shards only (its admin API gives the cleaner's numbers; ``bench/__main__.py`` skips the peers):

1. Fill. The broker starts with compaction off (``--log-cleaner-threads 0``). The step's topics are created
   compacted (``cleanup.policy=compact``, ``min.cleanable.dirty.ratio`` 0.1, ``segment.bytes`` a sixteenth of the
   data and at most 64 MiB, so the fill leaves closed segments to clean whatever ``data_mb`` is), and the producers
   fill them flat out with ``data_mb`` MiB of values, each with one of ``keys`` keys drawn uniformly (1 GiB of
   1 KiB values over 100,000 keys: about 10 values a key, 9 of them for the cleaner to drop, spread over the log
   as random keys spread them, not in tidy runs a cleaner could skip wholesale).
2. Baseline. The broker restarts, still without a cleaner, and the producers send keyed messages at the step's
   fixed rate for ``duration_s`` (the first ``warmup_s`` not measured): the acknowledgement latency of each. The
   partitions' size then is "size before".
3. Cleaning. The broker restarts on the same data with one cleaner (``--log-cleaner-threads 1``); its first look
   for a log to clean waits ``STARTUP_LEAD_S + warmup_s`` from the shard's start (``--log-cleaner-backoff-ms``),
   about when the measured window opens. The same latency run goes on while the runner polls ``/v1/shards``
   (bounded by ``CLEAN_WAIT_MAX_S``) until the shards made one pass per partition. Cleaner MB/s is the bytes its
   passes read (the key map's read of the dirty section, then the rewrite's read of the log) over their seconds.
   The row's produce percentiles are over the messages sent while the passes ran: from when the runner first saw
   them done back by their length (so the interval is late by at most one poll and the swap); the whole window's
   p99 is in the note. "Size after" is read when the passes are seen done: it includes what the latency run
   appended meanwhile, in the active segment the cleaner never touches.

Both latency runs start on a freshly restarted broker over the same data (in the page cache: it was just written),
so they differ only in the cleaner. Two rows per step: "<rate> msg/s, cleaner off" and "<rate> msg/s, cleaner on".
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.clients import Load, Report
from bench.peers import Rafka
from bench.runner import (
    ACK_GRACE_S,
    STARTUP_LEAD_S,
    ClientGroup,
    ResourceSampler,
    StepRunner,
    create_topics,
    percentiles,
    topic_names,
)
from bench.workload import Step

MIB = 1 << 20
SEGMENT_BYTES_MAX = 64 * MIB
SEGMENT_BYTES_MIN = 64 * 1024
SEGMENTS_PER_FILL = 16  # the fill rolls this many segments: all but the active one are the cleaner's
MIN_CLEANABLE_DIRTY_RATIO = "0.1"
FILL_MAX_S = 900.0  # the fill's time bound (1 GiB takes 15-30 s on the 2-core machine)
CLEAN_WAIT_MAX_S = 900.0  # from the restart with the cleaner on: passes not done by then make the step an error
ADMIN_WAIT_MAX_S = 30.0  # a restarted broker answers the admin API's offsets by then
POLL_INTERVAL_S = 0.2
DURING_SAMPLES_MIN = 100  # fewer acks of messages sent during the passes: the row's percentiles are the window's
P99_RATIO_AIM = 1.5  # issue 15: produce p99 while cleaning at most 1.5x the baseline's
CLEANER_OFF = ("--log-cleaner-threads", "0")


@dataclass(frozen=True)
class CleanerTotals:
    """The cleaner totals of every shard of the node (``GET /v1/shards``), summed, since the shards started."""

    passes: int = 0
    failures: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def read_mb_s(self) -> float:
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0


def cleaner_totals(shards: Sequence[dict[str, Any]]) -> CleanerTotals:
    """Sum the ``cleaner`` object of each shard of a ``/v1/shards`` answer (a shard not answering has none)."""
    parts = [s["cleaner"] for s in shards if s.get("cleaner")]
    return CleanerTotals(
        passes=sum(int(c["passes"]) for c in parts),
        failures=sum(int(c["failures"]) for c in parts),
        bytes_read=sum(int(c["bytes_read"]) for c in parts),
        bytes_written=sum(int(c["bytes_written"]) for c in parts),
        seconds=sum(float(c["seconds"]) for c in parts),
    )


def segment_bytes(data_bytes: int) -> int:
    """``segment.bytes`` of the step's topics: a sixteenth of the fill, within 64 KiB..64 MiB."""
    return max(SEGMENT_BYTES_MIN, min(SEGMENT_BYTES_MAX, data_bytes // SEGMENTS_PER_FILL))


def topic_configs(data_bytes: int) -> dict[str, str]:
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(segment_bytes(data_bytes)),
        "min.cleanable.dirty.ratio": MIN_CLEANABLE_DIRTY_RATIO,
    }


def cleaner_on(warmup_s: float) -> tuple[str, ...]:
    """The broker flags of the cleaning run: one cleaner, first looking when the measured window opens."""
    backoff_ms = max(10, int((STARTUP_LEAD_S + warmup_s) * 1000))
    return ("--log-cleaner-threads", "1", "--log-cleaner-backoff-ms", str(backoff_ms))


def latencies_between(reports: Sequence[Report], start_ns: int, end_ns: int) -> array.array[int]:
    """The acknowledgement latencies (µs) of the messages sent in ``[start_ns, end_ns]`` (reports with send times)."""
    out: array.array[int] = array.array("Q")
    for r in reports:
        lat: array.array[int] = array.array("Q")
        lat.frombytes(r.latencies_us)
        sent: array.array[int] = array.array("Q")
        sent.frombytes(r.sent_ns)
        out.extend(us for us, t in zip(lat, sent, strict=True) if start_ns <= t <= end_ns)
    return out


def fill_loads(producers: list[Load], count: int, keys: int) -> list[Load]:
    """The step's producer loads turned into the fill: ``count`` keyed messages in all, flat out, all measured,
    bounded by ``FILL_MAX_S``."""
    n = len(producers)
    out = []
    for p in producers:
        end = p.start_ns + int(FILL_MAX_S * 1e9)
        share = count // n + (1 if p.client_index < count % n else 0)
        out.append(
            dataclasses.replace(
                p,
                rate=0.0,
                messages_max=max(1, share),
                warm_end_ns=p.start_ns,
                end_ns=end,
                deadline_ns=end + int(ACK_GRACE_S * 1e9),
                keys=keys,
            )
        )
    return out


def _wait_for(what: str, probe: Callable[[], Any], deadline: float) -> Any:
    """Poll ``probe`` until it returns something other than None (or the deadline: RuntimeError naming ``what``);
    a broker that does not answer yet counts as None."""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            value = probe()
            if value is not None:
                return value
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"compaction: {what} not seen by the deadline")


def log_bytes(broker: Rafka, topics: tuple[str, ...], partitions: int) -> int:
    """The bytes of the step's partitions' segments, from their leaders (``offsets.size_bytes``)."""

    def probe() -> int | None:
        total = 0
        for t in topics:
            for p in range(partitions):
                offsets = broker.admin_get(f"/v1/partitions/{t}/{p}")["offsets"]
                if offsets is None or "size_bytes" not in offsets:
                    return None  # no leader yet
                total += int(offsets["size_bytes"])
        return total

    return int(_wait_for("the partitions' sizes", probe, time.monotonic() + ADMIN_WAIT_MAX_S))


@dataclass(frozen=True)
class Cleaned:
    """What the runner saw of the cleaner's passes during the cleaning run."""

    totals: CleanerTotals
    seen_ns: int  # CLOCK_MONOTONIC when the runner first saw them done
    size_after: int


class CompactionStep:
    def __init__(self, runner: StepRunner, broker: Rafka, step: Step) -> None:
        self.sr = runner
        self.broker = broker
        self.step = step
        self.topics = topic_names(step)
        self.partitions = runner.partitions(step)
        w = runner.workload
        self.keys = int(runner.setting("keys"))
        self.count = max(1, int(runner.setting("data_mb")) * MIB // w.message_size)

    def run(self) -> list[dict[str, Any]]:
        """The fill, the baseline run and the cleaning run (module docstring); the step's two rows."""
        sr, broker, step = self.sr, self.broker, self.step
        broker.extra_args = CLEANER_OFF
        with sr.running(broker, step) as data_dir:
            create_topics(broker, self.topics, self.partitions, topic_configs(self.count * sr.workload.message_size))
            fill, fill_s = self._fill()
            self._restart(data_dir, CLEANER_OFF)
            baseline, base_cpu = self._latency_run(None)
            size_before = log_bytes(broker, self.topics, self.partitions)
            self._restart(data_dir, cleaner_on(float(sr.setting("warmup_s"))))
            cleaned: list[Cleaned | None] = []
            cleaning, clean_cpu = self._latency_run(cleaned)
        off = self._row("cleaner off", baseline, base_cpu)
        off.update(size_before_mb=round(size_before / 1e6, 1))
        fill_mb = sum(r.nbytes for r in fill) / 1e6
        acked = sum(r.acked for r in fill)
        off["note"] = _join(
            f"baseline, cleaner off: filled {acked:,} of {self.count:,} keyed messages "
            f"({fill_mb:,.0f} MB over {self.keys:,} keys) at {fill_mb / fill_s if fill_s else 0:,.1f} MB/s",
            off["note"],
        )
        if acked < self.count or any(r.errors for r in fill):
            off["errors"] = int(off["errors"]) + max(1, self.count - acked)
        on = self._row("cleaner on", cleaning, clean_cpu)
        self._cleaning_columns(on, off, cleaning, cleaned[0], size_before)
        return [off, on]

    def _restart(self, data_dir: Path, flags: tuple[str, ...]) -> None:
        self.broker.stop()
        self.broker.extra_args = flags
        self.broker.start(data_dir, shards=self.step.shards, fresh=False)

    def _fill(self) -> tuple[list[Report], float]:
        """Produce the step's keyed data flat out; the producers' reports and the seconds it took."""
        loads, _ = self.sr.loads(self.broker, self.step, self.topics, 0.0, 0)
        loads = fill_loads(loads, self.count, self.keys)
        self.sr.group = group = ClientGroup()
        try:
            began = time.monotonic()
            group.start(loads, [])
            sent = group.collect("producer", len(loads), began + STARTUP_LEAD_S + FILL_MAX_S + ACK_GRACE_S + 15)
        finally:
            group.close()
            self.sr.group = None
        firsts = [r.first_ns for r in sent if r.first_ns]
        lasts = [r.last_ns for r in sent if r.last_ns]
        seconds = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else 0.0
        return sent, seconds

    def _latency_run(self, cleaned: list[Cleaned | None] | None) -> tuple[list[Report], dict[str, float]]:
        """Keyed messages at the step's rate for ``duration_s``; with ``cleaned`` given, the cleaner's passes are
        watched meanwhile and what was seen is appended to it. The reports and the broker's CPU and memory."""
        sr, step = self.sr, self.step
        w = sr.workload
        loads, _ = sr.loads(self.broker, step, self.topics, step.rate / w.producers, 0)
        loads = [dataclasses.replace(p, keys=self.keys, send_times=True) for p in loads]
        sr.group = group = ClientGroup()
        try:
            with ResourceSampler(self.broker) as sampler:
                began = time.monotonic()
                group.start(loads, [])
                if cleaned is not None:
                    cleaned.append(self._watch_cleaner(began + CLEAN_WAIT_MAX_S))
                end_s = began + STARTUP_LEAD_S + float(sr.setting("duration_s"))
                sent = group.collect("producer", len(loads), end_s + ACK_GRACE_S + 15)
        finally:
            group.close()
            sr.group = None
        return sent, sampler.columns()

    def _watch_cleaner(self, deadline: float) -> Cleaned | None:
        """Poll until the shards made a pass per partition (or one failed); None at the deadline."""
        wanted = len(self.topics) * self.partitions

        def probe() -> CleanerTotals | None:
            totals = cleaner_totals(self.broker.admin_get("/v1/shards"))
            return totals if totals.passes >= wanted or totals.failures else None

        try:
            totals: CleanerTotals = _wait_for(f"{wanted} cleaner pass(es)", probe, deadline)
        except RuntimeError:
            return None
        seen_ns = time.monotonic_ns()
        return Cleaned(totals, seen_ns, log_bytes(self.broker, self.topics, self.partitions))

    def _row(self, what: str, sent: list[Report], resources: dict[str, float]) -> dict[str, Any]:
        row = self.sr.base_row(self.broker, self.step)
        row["step"] = f"{self.step.label}, {what}"
        row.update(self.sr.measures(sent, [], self.step.rate), **resources)
        return row

    def _cleaning_columns(
        self,
        on: dict[str, Any],
        off: dict[str, Any],
        sent: list[Report],
        cleaned: Cleaned | None,
        size_before: int,
    ) -> None:
        """The cleaner's numbers and the produce percentiles of the messages sent while it ran, into ``on``."""
        if cleaned is None:
            on["errors"] = int(on["errors"]) + 1
            on["note"] = _join(f"cleaner on: no pass seen done within {CLEAN_WAIT_MAX_S:.0f} s", on["note"])
            return
        t = cleaned.totals
        on.update(
            cleaner_read_mb_s=round(t.read_mb_s, 1),
            cleaner_s=round(t.seconds, 2),
            size_before_mb=round(size_before / 1e6, 1),
            size_after_mb=round(cleaned.size_after / 1e6, 1),
        )
        window_p99 = on["produce_p99_us"]
        during = latencies_between(sent, cleaned.seen_ns - int(t.seconds * 1e9), cleaned.seen_ns)
        where = f"over the {len(during):,} acks of messages sent during the pass(es)"
        if len(during) >= DURING_SAMPLES_MIN:
            on.update({f"produce_{k}_us": int(v) for k, v in percentiles(during).items()})
        else:
            where = f"over the whole window: only {len(during):,} acks were of messages sent during the pass(es)"
        base_p99 = off["produce_p99_us"]
        ratio = on["produce_p99_us"] / base_p99 if base_p99 and on["produce_p99_us"] != "" else None
        on["produce_p99_ratio"] = "" if ratio is None else round(ratio, 2)
        if t.failures:
            on["errors"] = int(on["errors"]) + t.failures
        on["note"] = _join(
            f"cleaner on: {t.passes} pass(es) read {t.bytes_read / 1e6:,.0f} MB in {t.seconds:.2f} s "
            f"({t.read_mb_s:,.1f} MB/s), wrote {t.bytes_written / 1e6:,.0f} MB, {t.failures} failed; "
            f"log {size_before / 1e6:,.0f} -> {cleaned.size_after / 1e6:,.0f} MB; "
            f"ack p99 {_ratio_text(ratio)} the baseline's (aim <= {P99_RATIO_AIM}x) {where}; "
            f"whole window p99 {window_p99} us",
            on["note"],
        )


def _ratio_text(ratio: float | None) -> str:
    return "not comparable with" if ratio is None else f"{ratio:.2f}x"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)[:500]


def run(runner: StepRunner, broker: Rafka, step: Step) -> list[dict[str, Any]]:
    """A compaction step against rafka_shards: its two rows (cleaner off, cleaner on)."""
    return CompactionStep(runner, broker, step).run()
