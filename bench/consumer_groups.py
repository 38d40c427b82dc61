"""The ``groups`` workload kind (issue 16): what consumer groups cost, measured against manual assignment.

One producer process sends ``rates[0]`` msg/s (10,000) to a topic of ``partitions`` (16) partitions; every message
carries its send time (CLOCK_MONOTONIC). Two runs, each with ``consumers`` (4) consumer processes:

1. **manual assignment**: each consumer ``assign()``s its share of the partitions; no coordinator is involved. The
   row's end-to-end percentiles are the baseline.
2. **group**: the consumers ``subscribe()`` to the topic in one group and commit (asynchronously, as applications
   at this rate do: the consumer keeps reading) every 100 messages and every second (whichever comes first), timing
   each commit from the call to librdkafka's commit callback. After a steady window of ``duration_s`` (its
   end-to-end and commit percentiles are this row's), one consumer is SIGKILLed (the **kill** row: seconds from the
   kill until every partition has been read again after its last reassignment; it includes the session timeout,
   ``SESSION_TIMEOUT_MS``), then a new consumer joins (the **join** row: seconds from its ``subscribe()`` until every
   partition has been read again after its last reassignment; the initial rebalance delay does not apply, the group
   is not empty). Aims (issue 16): join under 1 s plus the clients' own delays; commit p99 under 20 ms with fsync.

Rows carry ``commit_p50_us``/``commit_p99_us`` and ``rebalance_s``. rafka_shards only (the peers have no Kafka group
protocol, or none measured here); ``--bootstrap`` brokers run it too. Every loop is bounded by its deadline.
"""

from __future__ import annotations

import array
import collections
import multiprocessing as mp
import os
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from bench.runner import StepRunner, create_topics, percentiles, topic_names
from bench.workload import Step

HEADER = struct.Struct(">QQ")
SESSION_TIMEOUT_MS = 6000  # the smallest the broker allows by default (group.min.session.timeout.ms)
HEARTBEAT_INTERVAL_MS = 1000
COMMIT_EVERY_MESSAGES = 100
COMMIT_EVERY_S = 1.0
SETTLE_S = 20.0  # the longest the run waits after the kill and after the join (a rebalance not done by then fails)
# Once the group is Stable again with every partition held, the run goes on this long before the next event, so that
# every partition is read after its new assignment (at 10,000 msg/s over 16 partitions one arrives every few ms).
AFTER_STABLE_S = 3.0
GRACE_S = 15.0


@dataclass
class Seen:
    """What one consumer process reports (through a queue, at its end)."""

    index: int
    latencies: bytes = b""  # array('Q'): (send ns, latency us) pairs
    commits_us: bytes = b""  # array('Q')
    # (assigned at ns, partition, first read after that assignment at ns or 0)
    assignments: list[tuple[int, int, int]] = field(default_factory=list)
    subscribed_ns: int = 0
    errors: int = 0


def _produce(
    bootstrap: str, topic: str, partitions: int, rate: int, size: int, linger_ms: int, span: tuple[int, int], stop: Any
) -> None:
    from confluent_kafka import Producer

    start_ns, end_ns = span
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms})
    payload = bytearray(max(size, HEADER.size))
    n = 0
    while True:
        now = time.monotonic_ns()
        if now >= end_ns or (n % 1000 == 0 and stop.is_set()):
            break
        due = start_ns + n * 1_000_000_000 // rate
        if due > now:
            time.sleep(min(0.001, (due - now) / 1e9))
            continue
        HEADER.pack_into(payload, 0, now, n)
        producer.produce(topic, bytes(payload), partition=n % partitions)
        producer.poll(0)
        n += 1
    producer.flush(30)


def _consume(
    index: int, bootstrap: str, topic: str, group: str, parts: list[int] | None, end_ns: int, q: Any, stop: Any
) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    seen = Seen(index)
    lat: array.array[int] = array.array("Q")
    commits: array.array[int] = array.array("Q")
    first_read: dict[int, int] = {}  # partition -> index into seen.assignments of its current assignment

    def assigned(_: Any, tps: list[Any]) -> None:
        now = time.monotonic_ns()
        for tp in tps:
            first_read[tp.partition] = len(seen.assignments)
            seen.assignments.append((now, tp.partition, 0))

    def revoked(_: Any, tps: list[Any]) -> None:
        for tp in tps:
            first_read.pop(tp.partition, None)

    issued: collections.deque[int] = collections.deque()  # send times of commits in flight, oldest first

    def committed(err: Any, _tps: Any) -> None:
        if issued:
            began = issued.popleft()
            if err is None:
                commits.append((time.monotonic_ns() - began) // 1000)

    conf = {
        "on_commit": committed,
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "fetch.wait.max.ms": 10,
    }
    consumer = Consumer(conf)
    seen.subscribed_ns = time.monotonic_ns()
    if parts is None:
        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked)
    else:
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])  # from the beginning
    since_commit, last_commit = 0, time.monotonic()
    while time.monotonic_ns() < end_ns and not stop.is_set():
        for m in consumer.consume(1000, 0.05):
            if m.error() is not None:
                continue
            now = time.monotonic_ns()
            value, partition = m.value(), m.partition()
            if value is None or partition is None:
                continue
            sent_ns, _ = HEADER.unpack_from(value)
            lat.extend((sent_ns, (now - sent_ns) // 1000))
            slot = first_read.get(partition)
            if slot is not None and seen.assignments[slot][2] == 0:
                at, p, _ = seen.assignments[slot]
                seen.assignments[slot] = (at, p, now)
            since_commit += 1
        if parts is None and (
            since_commit >= COMMIT_EVERY_MESSAGES or time.monotonic() - last_commit >= COMMIT_EVERY_S
        ):
            try:
                consumer.commit(asynchronous=True)  # what an application at this rate does: it keeps reading
                issued.append(time.monotonic_ns())
            except KafkaException:
                pass  # nothing to commit yet, or a rebalance took the partitions: not an error here
            since_commit, last_commit = 0, time.monotonic()
    consumer.close()
    seen.latencies, seen.commits_us = lat.tobytes(), commits.tobytes()
    q.put(seen)


@dataclass(frozen=True)
class _Run:
    seen: list[Seen]
    killed_ns: int
    joined: Seen | None


class GroupsStep:
    def __init__(self, runner: StepRunner, broker: Any, step: Step) -> None:
        self.sr = runner
        self.broker = broker
        self.step = step
        self.topic = topic_names(step)[0]
        self.partitions = runner.partitions(step)
        self.consumers = max(2, runner.workload.consumers)
        self.window_s = float(runner.setting("duration_s"))
        self.ctx = mp.get_context("spawn")
        self.stop = self.ctx.Event()  # set: every consumer of the current run closes and reports

    def run(self) -> list[dict[str, Any]]:
        with self.sr.running(self.broker, self.step):
            create_topics(self.broker, (self.topic,), self.partitions)
            manual = self._manual()
            group = self._group()
        return [manual, *group]

    def _spawn_consumer(self, index: int, group: str, parts: list[int] | None, end_ns: int, q: Any) -> Any:
        args = (index, self.broker.address, self.topic, group, parts, end_ns, q, self.stop)
        proc = self.ctx.Process(target=_consume, args=args, daemon=True)
        proc.start()
        return proc

    def _producer(self, start_ns: int, end_ns: int) -> Any:
        w = self.sr.workload
        args = (
            self.broker.address,
            self.topic,
            self.partitions,
            self.step.rate,
            w.message_size,
            w.linger_ms,
            (start_ns, end_ns),
            self.stop,
        )
        proc = self.ctx.Process(target=_produce, args=args, daemon=True)
        proc.start()
        return proc

    def _collect(self, q: Any, count: int, deadline: float) -> list[Seen]:
        out: list[Seen] = []
        while len(out) < count and time.monotonic() < deadline:
            try:
                out.append(q.get(timeout=max(0.1, deadline - time.monotonic())))
            except Exception:  # noqa: BLE001  (queue.Empty: the deadline passed)
                break
        return out

    def _manual(self) -> dict[str, Any]:
        q = self.ctx.Queue()
        start = time.monotonic_ns() + 3_000_000_000
        end = start + int(self.window_s * 1e9)
        shares = [list(range(i, self.partitions, self.consumers)) for i in range(self.consumers)]
        procs = [self._spawn_consumer(i, "manual", s, end + 2_000_000_000, q) for i, s in enumerate(shares)]
        producer = self._producer(start, end)
        seen = self._collect(q, len(procs), time.monotonic() + self.window_s + GRACE_S + 5)
        producer.join(GRACE_S)
        _reap([*procs, producer])
        row = self._row("manual assignment", seen, start, end)
        if len(seen) < len(procs):
            row["errors"] = int(row["errors"]) + len(procs) - len(seen)
        return row

    def _group(self) -> list[dict[str, Any]]:
        q = self.ctx.Queue()
        self.stop.clear()
        total_s = self.window_s + 3 * SETTLE_S + 10
        end = time.monotonic_ns() + int(total_s * 1e9)
        procs = [self._spawn_consumer(i, "bench-group", None, end, q) for i in range(self.consumers)]
        producer = self._producer(time.monotonic_ns(), end)
        self._wait_stable("bench-group", time.monotonic() + SETTLE_S)
        steady_start = time.monotonic_ns()
        time.sleep(self.window_s)
        steady_end = time.monotonic_ns()
        killed_ns = time.monotonic_ns()
        os.kill(procs[0].pid, signal.SIGKILL)
        self._settle("bench-group", self.consumers - 1)
        joiner = self._spawn_consumer(self.consumers, "bench-group", None, end, q)
        self._settle("bench-group", self.consumers)
        self.stop.set()
        seen = self._collect(q, self.consumers, time.monotonic() + SETTLE_S + GRACE_S + 5)
        producer.join(GRACE_S)
        _reap([*procs, joiner, producer])
        run = _Run(seen, killed_ns, next((s for s in seen if s.index == self.consumers), None))
        steady = self._row("group, steady", seen, steady_start, steady_end)
        return [steady, self._rebalance_row("group, member killed", run, killed_ns, steady_end), self._join_row(run)]

    def _settle(self, group: str, members: int) -> None:
        """After a member left or joined: until the group is Stable again with ``members`` members holding every
        partition, then ``AFTER_STABLE_S`` more, all within ``SETTLE_S`` (a rebalance not done by then is reported
        by its row, from what the consumers saw)."""
        deadline = time.monotonic() + SETTLE_S
        if self._stable(group, members, deadline):
            time.sleep(min(AFTER_STABLE_S, max(0.0, deadline - time.monotonic())))

    def _wait_stable(self, group: str, deadline: float) -> None:
        """Until the group is Stable with every consumer holding partitions (RuntimeError at the deadline)."""
        if not self._stable(group, self.consumers, deadline):
            raise RuntimeError(f"the group of {self.consumers} consumers was not stable within {SETTLE_S:.0f} s")

    def _stable(self, group: str, members: int, deadline: float) -> bool:
        """Whether, by ``deadline``, the group is Stable with ``members`` members holding every partition."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.broker.address})
        while time.monotonic() < deadline:
            try:
                d = admin.describe_consumer_groups([group])[group].result(timeout=10)
            except Exception:  # noqa: BLE001  (librdkafka raises KafkaException while the group forms)
                time.sleep(0.2)
                continue
            held = sum(len(m.assignment.topic_partitions) for m in d.members)
            if d.state.name == "STABLE" and len(d.members) == members and held == self.partitions:
                return True
            time.sleep(0.2)
        return False

    def _row(self, what: str, seen: list[Seen], start_ns: int, end_ns: int) -> dict[str, Any]:
        row = self.sr.base_row(self.broker, self.step)
        row["step"] = f"{self.step.label}, {what}"
        lat: array.array[int] = array.array("Q")
        commits: array.array[int] = array.array("Q")
        for s in seen:
            pairs: array.array[int] = array.array("Q")
            pairs.frombytes(s.latencies)
            lat.extend(pairs[i + 1] for i in range(0, len(pairs), 2) if start_ns <= pairs[i] < end_ns)
            commits.frombytes(s.commits_us)
        for name, value in percentiles(lat).items():
            row[f"e2e_{name}_us"] = "" if value != value else int(value)
        if commits:
            c = percentiles(commits)
            row.update(commit_p50_us=int(c["p50"]), commit_p99_us=int(c["p99"]))
        row["messages_consumed"] = len(lat)
        row["window_s"] = round((end_ns - start_ns) / 1e9, 2)
        row["errors"] = sum(s.errors for s in seen)
        return row

    def _rebalance_row(self, what: str, run: _Run, event_ns: int, _steady_end: int) -> dict[str, Any]:
        row = self.sr.base_row(self.broker, self.step)
        row["step"] = f"{self.step.label}, {what}"
        done = _settled(run.seen, event_ns, self.partitions)
        row["rebalance_s"] = "" if done is None else round((done - event_ns) / 1e9, 3)
        row["errors"] = 0 if done is not None else 1
        row["note"] = f"session.timeout.ms={SESSION_TIMEOUT_MS}, heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"
        return row

    def _join_row(self, run: _Run) -> dict[str, Any]:
        if run.joined is None:
            row = self.sr.base_row(self.broker, self.step)
            row.update(
                step=f"{self.step.label}, group, member joined", errors=1, note="the joining consumer did not report"
            )
            return row
        return self._rebalance_row("group, member joined", run, run.joined.subscribed_ns, 0)


def _settled(seen: list[Seen], event_ns: int, partitions: int) -> int | None:
    """When every partition had been read after its last assignment made after ``event_ns`` (None: one never was)."""
    last: dict[int, tuple[int, int]] = {}  # partition -> (assigned at, first read)
    for s in seen:
        for at, p, read in s.assignments:
            if at >= event_ns and (p not in last or at > last[p][0]):
                last[p] = (at, read)
    if len(last) < partitions or any(read == 0 for _, read in last.values()):
        return None
    return max(read for _, read in last.values())


def _reap(procs: list[Any]) -> None:
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def run(runner: StepRunner, broker: Any, step: Step) -> list[dict[str, Any]]:
    """A groups step: the manual-assignment row and the group's steady, kill and join rows."""
    return GroupsStep(runner, broker, step).run()
